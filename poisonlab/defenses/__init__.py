"""Defenses: everything that changes how a model is trained.

A defense plugs into :func:`poisonlab.train` through the hook of its kind (see
:mod:`poisonlab.defenses.base`): data filters (``prepare``: kNN sanitisation, confident
learning), label transforms (``epoch_labels`` / ``transform_labels``: flip-augmented
training), losses (``loss``: label smoothing, the confidence penalty, GCE, SCE,
bootstrapping), training modes (``objective``: adversarial training, distillation) and
post-hoc steps (``post_hoc`` on the validation split: temperature scaling) and partition
aggregation (``fit_ensemble``: DPA / Finite Aggregation, certified by
:func:`poisonlab.certify`). ``compose`` combines defenses of different kinds.

``get_defense(name, **params)`` builds a registered defense; unknown names and unknown or
out-of-range parameters raise :class:`~poisonlab.errors.ConfigError`.

>>> d = get_defense("label_smoothing", eps=0.1)
>>> d.name, d.kind, d.params()
('label_smoothing', 'loss', {'eps': 0.1})
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Defense
from .losses import (
    GCE,
    SCE,
    Bootstrap,
    ConfidencePenalty,
    FlipAugment,
    LabelSmoothing,
    NoDefense,
)

defenses: Registry[type[Defense]] = Registry("defense")
for _cls in (NoDefense, FlipAugment, LabelSmoothing, ConfidencePenalty, GCE, SCE, Bootstrap):
    defenses.add(_cls.name, _cls, help=_cls.summary)
for _name, _target, _help in (
    ("knn_sanitize", "filters:KNNSanitize", "relabel or drop points whose k nearest "
     "neighbours disagree with their label (Paudice et al. 2018)"),
    ("confident_learning", "filters:ConfidentLearning", "drop label issues found by "
     "cleanlab's confident learning (Northcutt et al. 2021)"),
    ("fgsm_at", "adversarial:FGSMTraining", "train on an alpha mix of clean and FGSM losses "
     "(Goodfellow et al. 2015)"),
    ("pgd_at", "adversarial:PGDTraining", "train on PGD adversarial examples (Madry et al. "
     "2018)"),
    ("trades", "adversarial:TRADES", "CE on clean inputs + beta KL to adversarial ones "
     "(Zhang et al. 2019)"),
    ("temperature_scaling", "posthoc:TemperatureScaling", "divide the logits by one "
     "temperature fitted on the validation split (Guo et al. 2017)"),
    ("distillation", "distillation:Distillation", "train a student on a teacher's outputs "
     "softened at temperature T (Hinton et al. 2015)"),
    ("partition_aggregation", "partition:PartitionAggregation", "certified robustness to "
     "label flips: base models on hash partitions vote (DPA, Levine & Feizi 2021; Finite "
     "Aggregation with d > 1, Wang et al. 2022)"),
    ("dpa", "partition:PartitionAggregation", "alias of partition_aggregation"),
    ("compose", "compose:Compose", "combine defenses of different kinds, e.g. label "
     "smoothing on top of kNN sanitisation"),
):
    defenses.add(_name, f"poisonlab.defenses.{_target}", help=_help)


def get_defense(name: str, **params: Any) -> Defense:
    """Build the registered defense ``name`` with its parameters (validated)."""
    built: Defense = defenses.build(name, **params)
    return built


__all__ = [
    "GCE",
    "SCE",
    "Bootstrap",
    "ConfidencePenalty",
    "Defense",
    "FlipAugment",
    "LabelSmoothing",
    "NoDefense",
    "defenses",
    "get_defense",
]
