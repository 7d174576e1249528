"""The policy step on one thread at batches 4, 8, 16: eager (with sampling), channels_last, and a frozen
TorchScript copy (forward only), in 12 alternating 0.3 s rounds; also the time to freeze a copy.

  python scripts/profile/infer_variants.py
"""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import torch, numpy as np
torch.set_num_threads(1)
from bench import policy_step_inputs
from common.config import load_config
from common.networks import PolicyNet
from actors.rollout import sample_actions
def rate(fn, obs, secs=2.0):
    fn(obs); n=0; t0=time.perf_counter()
    while time.perf_counter()-t0 < secs:
        fn(obs); n += obs.shape[0]
    return n/(time.perf_counter()-t0)
for K in (4, 8, 16):
    net, obs = policy_step_inputs(load_config(None), K)  # the paper's shapes, as bench.py's policy step
    g = torch.Generator().manual_seed(0)
    base = lambda o: sample_actions(net, o, g)
    net_cl = PolicyNet(18).eval().to(memory_format=torch.channels_last)
    def cl(o):
        with torch.inference_mode():
            x = torch.from_numpy(o).contiguous(memory_format=torch.channels_last)
            return net_cl(x)
    with torch.no_grad():
        tr = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, torch.from_numpy(obs)).eval()))
    def jt(o):
        with torch.inference_mode():
            return tr(torch.from_numpy(o))
    t0=time.perf_counter()
    with torch.no_grad():
        tr2 = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, torch.from_numpy(obs)).eval()))
    tfreeze = time.perf_counter()-t0
    res = {"base": [], "cl": [], "jit": []}
    for _ in range(12):
        for name, f in (("base", base), ("cl", cl), ("jit", jt)):
            res[name].append(rate(f, obs, 0.3))
    print(K, {k: round(float(np.median(v))) for k, v in res.items()}, "jit/base per-round median %.2f" % np.median(np.array(res["jit"])/np.array(res["base"])), "freeze s %.3f" % tfreeze, flush=True)
