"""Whether training RND's predictor under bf16 autocast changes the intrinsic reward more than the order of
its minibatches does. The reward itself would stay an fp32 pass; the question is whether bf16 gradients
leave a predictor whose fp32 error ranks and scales the frames as the fp32-trained one's does.

Three predictors from one initialisation train on the same Montezuma frames (a sticky random policy, the
learner's whitening): ``fp32`` and ``bf16`` on one minibatch order, ``fp32_reordered`` on another. Each
is evaluated in fp32 on seen and unseen frames at checkpoints along training; the line for ``bf16``
against ``fp32`` is set beside the one for ``fp32_reordered`` against ``fp32``, the change that the data
order alone makes. Per frame: |a - b| / b (median, p99), Spearman's rank correlation, and the ratio of the
mean errors (the reward's scale, which the running std divides out only slowly).

  python3 scripts/profile/rnd_bf16_training.py --steps 1500     # about 8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
from tf32_rnd import montezuma_frames, spearman  # the frames and the rank correlation of the TF32 check

from common.rl.networks import RNDModel

ARMS = {"fp32": (None, 0), "bf16": (torch.bfloat16, 0), "fp32_reordered": (None, 1)}  # (autocast, order)


def fp32_errors(model: RNDModel, x: torch.Tensor) -> torch.Tensor:
    """Per-frame predictor error [N], in fp32 as the learner's intrinsic pass computes it."""
    with torch.no_grad():
        return torch.cat([model(x[i : i + 500]) for i in range(0, len(x), 500)])


def train_step(model: RNDModel, opt: torch.optim.Optimizer, x: torch.Tensor, dtype: torch.dtype | None) -> None:
    """One predictor step on minibatch ``x`` [M, 1, H, W] as the learner takes it (``RNDModel.forward`` with
    ``predictor_dtype``): the predictor under ``dtype`` autocast if given, the target and the error in fp32."""
    loss = model(x, dtype).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def compare(name: str, a: torch.Tensor, ref: torch.Tensor) -> str:
    rel = (a - ref).abs() / ref
    return (
        f"{name:>14}: |d| / fp32 median {rel.median():.2e}, p99 {rel.quantile(0.99):.2e}; "
        f"Spearman {spearman(ref, a):.5f}; mean ratio {float(a.mean() / ref.mean()):.4f}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="predictor training steps (minibatches of 256)")
    p.add_argument("--reports", type=int, default=3, help="evaluations, evenly spaced over training")
    args = p.parse_args()
    torch.manual_seed(0)
    seen, unseen = montezuma_frames(3000, seed=1), montezuma_frames(1000, seed=2)
    mean, std = seen.mean(0), seen.std(0) + 1e-8
    sets = {n: ((f - mean) / std).clamp(-5, 5).unsqueeze(1) for n, f in (("seen", seen), ("unseen", unseen))}
    start = RNDModel()
    models = {a: copy.deepcopy(start) for a in ARMS}
    opts = {a: torch.optim.Adam(m.predictor.parameters(), lr=1e-4) for a, m in models.items()}
    orders = [torch.Generator().manual_seed(k) for k in (10, 11)]
    at = {args.steps * (k + 1) // args.reports for k in range(args.reports)}
    for step in range(1, args.steps + 1):
        picks = [torch.randint(0, len(seen), (256,), generator=g) for g in orders]
        for arm, (dtype, order) in ARMS.items():
            train_step(models[arm], opts[arm], sets["seen"][picks[order]], dtype)
        if step in at:
            for name, x in sets.items():
                err = {arm: fp32_errors(m, x) for arm, m in models.items()}
                print(f"step {step} {name}: fp32 error mean {err['fp32'].mean():.3e}", flush=True)
                for arm in ("bf16", "fp32_reordered"):
                    print("  " + compare(arm, err[arm], err["fp32"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
