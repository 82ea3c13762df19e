"""The bare torch PGD step loop the perf scripts time poisonlab against (pgd.py, scale.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.attacks.geometry import SampleRNG


def plain_pgd_chunk(model: nn.Module, xc: torch.Tensor, yc: torch.Tensor, ids: torch.Tensor,
                    *, eps: float, steps: int, stepsize: float, seed: int,
                    bounds: tuple[float, float]) -> torch.Tensor:
    """Linf PGD on one chunk ``xc`` (samples ``ids`` of the set), as a bare loop.

    Each sample's uniform random start in the ball is drawn like poisonlab's, from its own
    stream (``SampleRNG(seed, ids)``, stream 0), so the two agree exactly; then ``steps``
    times: forward, summed cross-entropy, ``torch.autograd.grad`` with respect to the input
    only, a signed step, projection onto the ball by clamping, clamping to the bounds.
    Returns the chunk's x_adv (detached).
    """
    lo, hi = bounds
    delta = (SampleRNG(seed, ids).rand(xc.shape[1:], stream=0) * 2 - 1) * eps
    x_adv = (xc + delta).clamp(lo, hi)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), yc, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            step = x_adv + stepsize * grad.sign()
            x_adv = (xc + (step - xc).clamp(-eps, eps)).clamp(lo, hi)
    return x_adv.detach()
