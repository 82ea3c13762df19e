"""poisonlab: security evaluations of classifiers.

Poison training labels, perturb test inputs, train with label-side defenses, and measure
what happened as numbers a CI job can hold steady. See README.md and docs/metrics.md.

>>> from poisonlab import load_dataset, build_model, train, get_defense
>>> ds = load_dataset("digits", seed=0)
>>> model = build_model("mlp", ds.input_shape, ds.n_classes, seed=0)
>>> model = train(model, ds.x_train, ds.y_train, defense=get_defense("none"), epochs=1)
"""

from __future__ import annotations

# The registries (attacks, datasets, defenses, models) live in their modules:
# ``from poisonlab.attacks import attacks``. They are not re-exported here, where their
# names would shadow the subpackages ``poisonlab.attacks``, ``poisonlab.models`` and
# ``poisonlab.defenses``.
from . import metrics
from ._torch import eval_mode
from ._version import __version__
from .attacks import (
    FGSM,
    PGD,
    Attack,
    AttackResult,
    FlipResult,
    LabelFlip,
    flip_labels,
    get_attack,
    security_curve,
)
from .certify import Certificate, certify
from .data import Dataset, load_dataset
from .defenses import Defense, get_defense
from .errors import (
    AttackError,
    ConfigError,
    DataError,
    EvaluationWarning,
    PoisonlabError,
    PoisonlabWarning,
    RunError,
    SuiteError,
    TrainingError,
    UnknownNameError,
)
from .harness.results import load_aggregates, load_results
from .models import build_model
from .registry import Registry
from .threat import (
    EvasionThreat,
    FlipStrategy,
    Knowledge,
    NamedThreat,
    Norm,
    PoisonThreat,
    ThreatModel,
)
from .training import train

__all__ = [
    "FGSM",
    "PGD",
    "Attack",
    "AttackError",
    "AttackResult",
    "Certificate",
    "ConfigError",
    "DataError",
    "Dataset",
    "Defense",
    "EvaluationWarning",
    "EvasionThreat",
    "FlipResult",
    "FlipStrategy",
    "Knowledge",
    "LabelFlip",
    "NamedThreat",
    "Norm",
    "PoisonThreat",
    "PoisonlabError",
    "PoisonlabWarning",
    "Registry",
    "RunError",
    "SuiteError",
    "ThreatModel",
    "TrainingError",
    "UnknownNameError",
    "__version__",
    "build_model",
    "certify",
    "eval_mode",
    "flip_labels",
    "get_attack",
    "get_defense",
    "load_aggregates",
    "load_dataset",
    "load_results",
    "metrics",
    "security_curve",
    "train",
]
