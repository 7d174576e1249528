"""The policy step on one thread at batches 4, 8, 16: eager (with sampling), channels_last, and a frozen
TorchScript copy (forward only), in 12 alternating 0.3 s rounds; also the time to freeze a copy.

  python scripts/profile/infer_variants.py
"""

import time

import numpy as np
import torch

from actors.rollout import sample_actions
from bench import policy_step_inputs
from common.config import load_config
from common.rl.networks import PolicyNet

torch.set_num_threads(1)


def rate(fn, obs, secs=2.0):
    fn(obs)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < secs:
        fn(obs)
        n += obs.shape[0]
    return n / (time.perf_counter() - t0)


def frozen(net, obs):
    with torch.no_grad():
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, torch.from_numpy(obs)).eval()))


def measure(K):
    net, obs = policy_step_inputs(load_config(None), K)  # the paper's shapes, as bench.py's policy step
    g = torch.Generator().manual_seed(0)

    def base(o):
        return sample_actions(net, o, g)

    net_cl = PolicyNet(18).eval().to(memory_format=torch.channels_last)

    def cl(o):
        with torch.inference_mode():
            x = torch.from_numpy(o).contiguous(memory_format=torch.channels_last)
            return net_cl(x)

    tr = frozen(net, obs)

    def jt(o):
        with torch.inference_mode():
            return tr(torch.from_numpy(o))

    t0 = time.perf_counter()
    frozen(net, obs)
    tfreeze = time.perf_counter() - t0
    res = {"base": [], "cl": [], "jit": []}
    for _ in range(12):
        for name, f in (("base", base), ("cl", cl), ("jit", jt)):
            res[name].append(rate(f, obs, 0.3))
    jit_ratio = np.median(np.array(res["jit"]) / np.array(res["base"]))
    print(
        K,
        {k: round(float(np.median(v))) for k, v in res.items()},
        f"jit/base per-round median {jit_ratio:.2f}",
        f"freeze s {tfreeze:.3f}",
        flush=True,
    )


for K in (4, 8, 16):
    measure(K)
