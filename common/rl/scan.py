"""The first-order linear recurrence along time, as a parallel scan. Pure: tensors in, tensors out.

GAE, V-trace and RND's reward filter each run x_s = a_s + b_s x_{s+1} (or its forward twin) along
T steps. A Python loop over T launches a few kernels per step: on a GPU about 2,000 tiny launches per
update. The scan composes the affine maps f_s(x) = a_s + b_s x pairwise instead (Hillis and Steele
1986): after step k each (A_s, B_s) is the composition of 2^k consecutive maps, so ceil(log2 T) steps
of whole-tensor operations give every x_s. The result is the loop's up to float reassociation. It
multiplies and adds only (no logs or divisions), so b_s = 0 at an episode's end cuts the chain exactly.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def affine_scan(
    a: torch.Tensor, b: torch.Tensor, init: torch.Tensor | None = None, reverse: bool = True
) -> torch.Tensor:
    """x along dim 0 of a, b [T, ...] (same shape and dtype).

    reverse=True:  x_s = a_s + b_s x_{s+1}, x_T = init (the value after the last step).
    reverse=False: x_t = a_t + b_t x_{t-1}, x_{-1} = init (the value before the first step).
    ``init`` [...] broadcasts against a[0]; None means zero. Returns x [T, ...].
    """
    if a.shape != b.shape:
        raise ValueError(f"affine_scan: a {tuple(a.shape)} and b {tuple(b.shape)} differ")
    big_a, big_b = a, b
    steps, d = a.shape[0], 1
    while d < steps:
        need_b = init is not None or 2 * d < steps  # B_s is read again by a later step or by init
        if reverse:  # (A_s, B_s) <- f_s..f_{s+d-1} composed with f_{s+d}..: (A_s + B_s A_{s+d}, B_s B_{s+d})
            new_a = torch.cat([torch.addcmul(big_a[:-d], big_b[:-d], big_a[d:]), big_a[-d:]])
            new_b = torch.cat([big_b[:-d] * big_b[d:], big_b[-d:]]) if need_b else big_b
        else:
            new_a = torch.cat([big_a[:d], torch.addcmul(big_a[d:], big_b[d:], big_a[:-d])])
            new_b = torch.cat([big_b[:d], big_b[d:] * big_b[:-d]]) if need_b else big_b
        big_a, big_b, d = new_a, new_b, 2 * d
    if init is None:
        return big_a if big_a is not a else a.clone()
    return torch.addcmul(big_a, big_b, init)
