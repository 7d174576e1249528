"""How much TF32 (and, for comparison, bf16 autocast) changes RND's intrinsic reward, emulated on the CPU.

On CUDA the learner allows TF32 (learner/agent.py): matmul and convolution inputs are rounded to a 10-bit
mantissa, products are accumulated and stored in fp32. Emulated here by rounding both inputs of every conv2d
and linear call. Frames: Montezuma under a sticky random policy; the predictor is trained on a 'seen' set
until its error has fallen 30-fold (late training, where the reward is a small difference of two outputs),
and the per-frame error under fp32 and under TF32 is compared on seen and unseen frames: the relative change
and the rank agreement (Spearman), i.e. whether TF32 reorders which frames look novel. bf16 autocast, which
the learner does not use for RND, is emulated the same way (inputs and outputs of each layer in bf16).

  python scripts/profile/tf32_rnd.py                  # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from actors.env import AtariEnv
from common.rl.networks import RNDModel

_CONV, _LINEAR = F.conv2d, F.linear


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> the nearest value with 10 explicit mantissa bits (TF32), still stored as fp32."""
    i = x.contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    return x.bfloat16().float()


def emulate(mode: str) -> None:
    """Route every conv2d / linear (nn.Conv2d and nn.Linear call these) through rounded numbers: 'tf32' rounds
    the inputs, 'bf16' the inputs and the output (autocast's), 'fp32' restores the plain functions."""
    if mode == "tf32":
        F.conv2d = lambda x, w, b=None, *a, **k: _CONV(tf32_round(x), tf32_round(w), b, *a, **k)
        F.linear = lambda x, w, b=None: _LINEAR(tf32_round(x), tf32_round(w), b)
    elif mode == "bf16":
        F.conv2d = lambda x, w, b=None, *a, **k: bf16_round(
            _CONV(bf16_round(x), bf16_round(w), None if b is None else bf16_round(b), *a, **k)
        )
        F.linear = lambda x, w, b=None: bf16_round(
            _LINEAR(bf16_round(x), bf16_round(w), None if b is None else bf16_round(b))
        )
    else:
        F.conv2d, F.linear = _CONV, _LINEAR


def montezuma_frames(n: int, seed: int) -> torch.Tensor:
    """n newest frames [n, 84, 84] (float) of one env under a sticky random policy."""
    env, rng, out, a = AtariEnv(seed=seed), np.random.default_rng(seed), [], 0
    env.reset()
    while len(out) < n:
        if rng.random() < 0.1:
            a = int(rng.integers(18))
        _, terminated, truncated = env.advance(a)
        out.append(env.stack[-1].copy())
        if terminated or truncated:
            env.reset()
    return torch.from_numpy(np.stack(out)).float()


def errors(model: RNDModel, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-frame predictor error [N] with every layer's numbers rounded as ``mode`` says."""
    emulate(mode)
    try:
        with torch.no_grad():
            return torch.cat([model(x[i : i + 500]) for i in range(0, len(x), 500)])
    finally:
        emulate("fp32")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = torch.stack([a.argsort().argsort().float(), b.argsort().argsort().float()])
    return float(torch.corrcoef(ranks)[0, 1])


def report(tag: str, model: RNDModel, sets: dict[str, torch.Tensor]) -> None:
    for name, x in sets.items():
        exact = errors(model, x, "fp32")
        print(f"{tag:>10} {name:>6}: error mean {exact.mean():.3e}", flush=True)
        for mode in ("tf32", "bf16"):
            rounded = errors(model, x, mode)
            rel = (rounded - exact).abs() / exact
            print(
                f"{'':>18}{mode}: |{mode} - fp32| / fp32 median {rel.median():.2e}, p99 {rel.quantile(0.99):.2e}, "
                f"max {rel.max():.2e}; Spearman {spearman(exact, rounded):.5f}",
                flush=True,
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="predictor training steps (minibatches of 256)")
    args = p.parse_args()
    torch.manual_seed(0)
    seen, unseen = montezuma_frames(3000, seed=1), montezuma_frames(1000, seed=2)
    mean, std = seen.mean(0), seen.std(0) + 1e-8

    def norm(f: torch.Tensor) -> torch.Tensor:  # the learner's whitening (paper 2.4)
        return ((f - mean) / std).clamp(-5, 5).unsqueeze(1)

    sets = {"seen": norm(seen), "unseen": norm(unseen)}
    model = RNDModel()
    opt = torch.optim.Adam(model.predictor.parameters(), lr=1e-4)
    report("untrained", model, sets)
    for step in range(1, args.steps + 1):
        loss = model(sets["seen"][torch.randint(0, len(seen), (256,))]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (args.steps // 5, args.steps):
            report(f"step {step}", model, sets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
