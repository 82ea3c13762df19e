"""Label-side defenses: flip-augmented training, label smoothing, the confidence penalty.

The maths lives in small pure functions (``smoothed_targets``, ``soft_cross_entropy``,
``entropy``, ``disturb_labels``); the classes only hold validated parameters and call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .._validation import check_scalar
from .base import Defense


def smoothed_targets(y: torch.Tensor, n_classes: int, eps: float) -> torch.Tensor:
    """Label-smoothed targets ``(1 - eps) * onehot(y) + eps / K`` (Szegedy et al. 2016).

    Returns a float tensor of shape (n, K) whose rows sum to 1; the true class gets
    ``1 - eps + eps / K``.

    >>> smoothed_targets(torch.tensor([0]), 4, 0.2)
    tensor([[0.8500, 0.0500, 0.0500, 0.0500]])
    """
    onehot = F.one_hot(y, n_classes).to(torch.float32)
    return (1.0 - eps) * onehot + eps / n_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k * log softmax(logits)_k``."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row, shape (n,)."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def disturb_labels(
    y: torch.Tensor, n_classes: int, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """DisturbLabel (Xie et al. 2016): redraw each label uniformly over all K classes
    with probability ``alpha``.

    A redrawn label keeps its class with probability 1/K, so the expected fraction of
    labels that change is ``alpha * (K - 1) / K``. Returns ``(y_new, redrawn)`` where
    ``redrawn`` is the bool mask of labels that were redrawn (changed or not).
    """
    n = y.shape[0]
    redrawn = torch.rand(n, generator=generator) < alpha
    fresh = torch.randint(0, n_classes, (n,), generator=generator)
    return torch.where(redrawn.to(y.device), fresh.to(y.device), y), redrawn


@dataclass(frozen=True)
class NoDefense(Defense):
    """Plain cross-entropy training (the baseline every defense is compared with)."""

    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "plain cross-entropy training (the baseline)"


@dataclass(frozen=True)
class FlipAugment(Defense):
    """Flip-augmented training, DisturbLabel-style (Xie et al. 2016).

    Each batch, each label is redrawn uniformly over all K classes with probability
    ``alpha`` (a regulariser: random label noise added on purpose).

    Parameters
    ----------
    alpha : float in [0, 1]
    """

    name: ClassVar[str] = "flip_augment"
    summary: ClassVar[str] = "DisturbLabel: redraw labels uniformly with prob. alpha per batch"
    alpha: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_scalar("alpha", self.alpha, lo=0, hi=1))

    def transform_labels(
        self, y: torch.Tensor, *, n_classes: int, generator: torch.Generator
    ) -> torch.Tensor:
        return disturb_labels(y, n_classes, self.alpha, generator)[0]


@dataclass(frozen=True)
class LabelSmoothing(Defense):
    """Label smoothing (Szegedy et al. 2016): train on ``(1 - eps) * onehot + eps / K``.

    Parameters
    ----------
    eps : float in [0, 1]
    """

    name: ClassVar[str] = "label_smoothing"
    summary: ClassVar[str] = "train on (1 - eps) * onehot + eps / K targets"
    eps: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_scalar("eps", self.eps, lo=0, hi=1))

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        return soft_cross_entropy(logits, smoothed_targets(y, n_classes, self.eps))


@dataclass(frozen=True)
class ConfidencePenalty(Defense):
    """Confidence penalty (Pereyra et al. 2017): minimise ``CE - beta * H(p)``.

    Penalising low-entropy (over-confident) output distributions.

    Parameters
    ----------
    beta : float >= 0
        Weight of the entropy bonus (Pereyra et al. used 0.1 .. 2.0 across tasks).
    """

    name: ClassVar[str] = "confidence_penalty"
    summary: ClassVar[str] = "minimise CE - beta * H(softmax) (Pereyra et al. 2017)"
    beta: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_scalar("beta", self.beta, lo=0))

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        return F.cross_entropy(logits, y) - self.beta * entropy(logits).mean()
