"""Defenses: everything that changes how a model is trained.

A defense plugs into :func:`poisonlab.train` through two hooks, each a small pure step:

- ``transform_labels(y, n_classes=, generator=)``: a per-batch label transform
  (flip-augmented training redraws labels here);
- ``loss(logits, y, n_classes=)``: the training objective on one batch (label smoothing and
  the confidence penalty change it).

``get_defense(name, **params)`` builds a registered defense; unknown names and unknown or
out-of-range parameters raise :class:`~poisonlab.errors.ConfigError`.

>>> d = get_defense("label_smoothing", eps=0.1)
>>> d.name, d.params()
('label_smoothing', {'eps': 0.1})
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Defense
from .losses import ConfidencePenalty, FlipAugment, LabelSmoothing, NoDefense

defenses: Registry[type[Defense]] = Registry("defense")
for _cls in (NoDefense, FlipAugment, LabelSmoothing, ConfidencePenalty):
    defenses.add(_cls.name, _cls, help=_cls.summary)


def get_defense(name: str, **params: Any) -> Defense:
    """Build the registered defense ``name`` with its parameters (validated)."""
    built: Defense = defenses.build(name, **params)
    return built


__all__ = [
    "ConfidencePenalty",
    "Defense",
    "FlipAugment",
    "LabelSmoothing",
    "NoDefense",
    "defenses",
    "get_defense",
]
