"""The policy forward on one thread at a batch of 9: eager vs torch.compile, in 10 alternating rounds,
and the compile time.

  python scripts/profile/compile_infer.py
"""

import time

import numpy as np
import torch

from bench import policy_step_inputs
from common.config import load_config
from common.rl.networks import PolicyNet

torch.set_num_threads(1)
K = 9
net, obs = policy_step_inputs(load_config(None), K)  # the paper's shapes, as bench.py's policy step
obs = torch.from_numpy(obs)
t0 = time.perf_counter()
cnet = torch.compile(net)
with torch.inference_mode():
    cnet(obs)
print("compile s", time.perf_counter() - t0, flush=True)


def rate(f, secs=0.4):
    with torch.inference_mode():
        f(obs)
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < secs:
            f(obs)
            n += K
    return n / (time.perf_counter() - t0)


res = {"eager": [], "compiled": []}
for _ in range(10):
    res["eager"].append(rate(net))
    res["compiled"].append(rate(cnet))
print(
    {k: round(float(np.median(v))) for k, v in res.items()},
    "ratio",
    np.median(np.array(res["compiled"]) / np.array(res["eager"])),
)
# weights update: does it recompile?
net.load_state_dict(PolicyNet(18).state_dict())
t0 = time.perf_counter()
with torch.inference_mode():
    cnet(obs)
print("after load_state_dict s", time.perf_counter() - t0)
