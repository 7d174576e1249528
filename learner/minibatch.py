"""What one update draws and checks, as pure functions: the minibatch plan with each minibatch's RND
predictor subset, the forward filter's column groups, and the line that names a non-finite loss. No
processes, sockets or networks here."""

from __future__ import annotations

from typing import NamedTuple

import torch


def predictor_count(m: int, proportion: float) -> int:
    """How many of a minibatch's ``m`` samples train the RND predictor: round(proportion * m), at least one.

    The release draws a Bernoulli(proportion) mask per sample (proportion_of_exp_used_for_predictor_update,
    paper 2.2) and averages the error over the kept ones. A fixed count drawn without replacement has the
    same expected loss and gradient (the mean error over a uniform subset), and a fixed shape: no host sync
    to count the mask, no new shape for cuDNN's autotuner or torch.compile every minibatch, and the same
    parameters used on every learner rank each step."""
    return m if proportion >= 1.0 else max(1, round(proportion * m))


class MinibatchPlan(NamedTuple):
    """Every optimizer step of an update, drawn up front: ``samples[j]`` long [M_j], flat batch positions
    (t * B + b) of step j's minibatch; ``predictor[j]`` long [k_j], positions within that minibatch whose
    next frames train the predictor."""

    samples: list[torch.Tensor]
    predictor: list[torch.Tensor]


def plan_minibatches(n: int, num_mb: int, epochs: int, proportion: float, gen: torch.Generator) -> MinibatchPlan:
    """``epochs`` random permutations of the ``n`` samples, each split into ``num_mb`` minibatches, and for
    each minibatch its predictor subset (``predictor_count`` positions without replacement), drawn from
    ``gen`` in that order."""
    samples, predictor = [], []
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).tensor_split(num_mb):
            samples.append(idx)
            k = predictor_count(idx.shape[0], proportion)
            predictor.append(torch.randperm(idx.shape[0], generator=gen)[:k] if k < idx.shape[0] else torch.arange(k))
    return MinibatchPlan(samples, predictor)


def filter_groups(streams: list[int], sizes: list[int]) -> list[tuple[int, int]]:
    """Column ranges [lo, hi) of a batch, in arrival order, each holding whole segments of ``sizes`` and
    no stream twice: the intrinsic reward's forward filter can run over one range at once and still
    advance each stream in time order (a stream's later segment is in a later range)."""
    groups: list[tuple[int, int]] = []
    lo, col, seen = 0, 0, set[int]()
    for k in sizes:
        seg = streams[col : col + k]
        if seen.intersection(seg):
            groups.append((lo, col))
            lo, seen = col, set()
        seen.update(seg)
        col += k
    if col > lo:
        groups.append((lo, col))
    return groups


LOSS_NAMES = ("policy_loss", "value_loss", "entropy", "rnd_loss")


def non_finite_message(losses: torch.Tensor, grad_norms: torch.Tensor) -> str:
    """The one line of NonFiniteLoss: the first step whose loss or gradient norm is not finite, from the
    update's per-step records ``losses`` [steps, 1 + len(LOSS_NAMES)] (the total first) and ``grad_norms``
    [steps]."""
    bad = ~(torch.isfinite(losses).all(1) & torch.isfinite(grad_norms))
    j = int(bad.nonzero()[0, 0]) if bool(bad.any()) else 0
    row = losses[j].tolist()
    parts = ", ".join(f"{k} {v:.4g}" for k, v in zip(LOSS_NAMES, row[1:], strict=True))
    return f"non-finite loss {row[0]:.4g} ({parts}; grad_norm {float(grad_norms[j]):.4g})"
