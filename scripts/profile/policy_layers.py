"""The actor's policy forward on one thread at a batch of 9, layer by layer (3 rounds, us per call), then
the full forward's logits (what actors used before commit 21a160f) against PolicyNet.logits (the policy
path alone), in 10 alternating rounds (medians, us per batch).

  python scripts/profile/policy_layers.py
"""

import time

import numpy as np
import torch

from bench import policy_step_inputs
from common.config import load_config

torch.set_num_threads(1)
K = 9
net, obs = policy_step_inputs(load_config(None), K)  # the paper's shapes, as bench.py's policy step
obs = torch.from_numpy(obs)


def us(f, secs=0.4):
    f()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        f()
        n += 1
    return (time.perf_counter() - t0) / n * 1e6


with torch.inference_mode():
    c, fc1 = net.trunk[0], net.trunk[1]
    x = obs.float() * (1 / 255)
    h1 = c[1](c[0](x))
    h2 = c[3](c[2](h1))
    f = c[6](c[5](c[4](h2)))
    z = net.trunk[2:](fc1(f))
    for _ in range(3):
        r = {
            "scale": us(lambda: obs.float().mul_(1 / 255)),
            "conv1": us(lambda: c[0](x)),
            "conv2": us(lambda: c[2](h1)),
            "conv3": us(lambda: c[4](h2)),
            "fc1": us(lambda: fc1(f)),
            "all heads": us(lambda: net.heads(z)),
            "full forward": us(lambda: net(obs)),
        }
        print(" | ".join(f"{k} {v:.0f}" for k, v in r.items()), flush=True)
    assert torch.equal(net(obs).logits, net.logits(obs))
    full, alone = [], []
    for _ in range(10):
        full.append(us(lambda: net(obs).logits))
        alone.append(us(lambda: net.logits(obs)))
    print(
        f"forward().logits {np.median(full):.0f} | logits() {np.median(alone):.0f} | "
        f"ratio (per-round median) {np.median(np.array(alone) / np.array(full)):.3f}"
    )
