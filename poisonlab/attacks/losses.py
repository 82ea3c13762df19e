"""The attack losses (cross-entropy, margin, DLR) and the success criterion.

``LOSSES[name](logits, y, target)`` returns per-sample losses that an attack ascends;
:func:`is_success` says which adversarial predictions count as fooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

# --------------------------------------------------------------------------- losses

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _others_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    mask = F.one_hot(cls, logits.shape[1]).bool()
    return logits.masked_fill(mask, -math.inf).amax(dim=1)


def _margin_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """Carlini-Wagner logit margin (their f6 without the confidence cap)."""
    if target is None:
        return _others_max(logits, y) - logits.gather(1, y[:, None])[:, 0]
    return logits.gather(1, target[:, None])[:, 0] - _others_max(logits, target)


def _dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020, "Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks"), to maximise.

    Untargeted: ``(max_{i != y} z_i - z_y) / (z_(1) - z_(3))``; targeted:
    ``(z_t - z_y) / (z_(1) - (z_(3) + z_(4)) / 2)``, with ``z_(k)`` the k-th largest logit.
    Invariant to shifting and rescaling the logits, so a saturated softmax or a
    temperature cannot hide the gradient. Needs at least 3 classes (4 when targeted).
    """
    need = 3 if target is None else 4
    if logits.shape[1] < need:
        raise ConfigError(
            f"loss='dlr' is not allowed for a model with {logits.shape[1]} classes: the "
            f"{'targeted ' if target is not None else ''}DLR loss needs at least {need}; "
            "use 'margin'"
        )
    z = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        return (_others_max(logits, y) - z_y) / (z[:, 0] - z[:, 2] + 1e-12)
    z_t = logits.gather(1, target[:, None])[:, 0]
    return (z_t - z_y) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12)


#: Per-sample attack objectives to maximise: (logits, y, target or None) -> (n,).
LOSSES: dict[str, LossFn] = {"ce": _ce_loss, "margin": _margin_loss, "dlr": _dlr_loss}


def is_success(
    pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """Untargeted: prediction differs from ``y``; targeted: prediction equals ``target``."""
    return pred != y if target is None else pred == target
