"""Every metric of the design (section 4), as pure functions.

The package holds them by what they measure: :mod:`.scores` (accuracy, success rates,
calibration, AUROC, aggregation over seeds), :mod:`.predict` (running a model over inputs
in batches), :mod:`.offmanifold` (confidence off the data and its scale) and
:mod:`.information` (mutual information and its augmentation); every name is importable
from ``poisonlab.metrics``.

Classification and calibration metrics take predictions or probabilities (numpy arrays or
tensors) and return Python floats. Off-manifold metrics take a model and draw their noise
inputs from a seeded generator. ``aggregate`` turns per-seed values into mean, std, n.

Definitions
-----------
clean_accuracy / robust_accuracy
    ``mean(argmax f(x) == y)`` on clean / adversarial inputs.
attack_success_rate (evasion)
    Untargeted: among points classified correctly when clean, the fraction whose x_adv is
    misclassified. Targeted: among points with ``y != target``, the fraction predicted as
    target.
poisoning_success_rate (indiscriminate)
    Among test points the clean-trained model classifies correctly, the fraction the
    poisoned-trained model misclassifies. Pairwise: the fraction of clean test points of
    class source that the poisoned model predicts as target.
ece
    Expected calibration error with equal-width confidence bins (Guo et al. 2017).
offmanifold_confidence, alpha_star, offmanifold_auroc
    Confidence away from the data (Hendrycks & Gimpel 2017; Hein et al. 2019).
temperature, mean_entropy, reliability
    The validation temperature of the model as deployed, the mean Shannon entropy of its
    test outputs, and the per-bin data of a reliability diagram (Guo et al. 2017).
mutual_information, logit_norm, weight_norm
    How much the logits remember about which training example they saw (Müller, Kornblith
    & Hinton 2019), and the scale of the logits and of the weights. Descriptive: their
    direction is ``None`` in :data:`HIGHER_IS_BETTER`.

Devices
-------
A model may live on any device and the data on another (or be numpy arrays): functions
that take a model move the inputs to the model's device batch by batch and bring the
predictions back to the CPU; metrics are Python floats. Random inputs (uniform and
Gaussian noise, augmentations) are drawn from CPU generators and then moved, so the draws
are the same on every device.

Batches
-------
Every function that runs a model takes ``batch_size`` (default
:data:`~poisonlab.batching.DEFAULT_BATCH_SIZE`, 256; None: all at once): that many inputs
go through the model at a time and only the per-input results are kept, so memory grows
with the batch size, not with the number of inputs. Random inputs are drawn whole before
any batching, so no number depends on it beyond float rounding (docs/batching.md).

>>> import numpy as np
>>> ece(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))
0.35
"""

from __future__ import annotations

from .catalogue import (
    GROUP_METRICS,
    HIGHER_IS_BETTER,
    METRICS,
    MetricInfo,
    metric_info,
    metric_registry,
)
from .information import (
    AUGMENT_NOISE,
    AUGMENT_SHIFT,
    MI_CLASSES,
    MI_N_AUGMENT,
    MI_N_EXAMPLES,
    augment,
    gaussian_mi,
    mutual_information,
    validate_information_settings,
)
from .offmanifold import (
    ALPHA_GRID,
    ALPHA_STAR_LEVEL,
    RAY_ALPHAS,
    alpha_star,
    gaussian_noise,
    logit_norm,
    mean_entropy,
    offmanifold_auroc,
    offmanifold_confidence,
    ray_confidence,
    temperature,
    uniform_noise,
    weight_norm,
)
from .predict import (
    as_model_input,
    max_softmax,
    predict_logits,
    predict_proba,
)
from .scores import (
    PROB_TOL,
    ROW_SUM_TOL,
    accuracy,
    aggregate,
    attack_success_rate,
    auroc,
    brier,
    ece,
    nll,
    poisoning_success_rate,
    reliability,
)

__all__ = [
    "ALPHA_GRID",
    "ALPHA_STAR_LEVEL",
    "AUGMENT_NOISE",
    "AUGMENT_SHIFT",
    "GROUP_METRICS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "MI_CLASSES",
    "MI_N_AUGMENT",
    "MI_N_EXAMPLES",
    "PROB_TOL",
    "RAY_ALPHAS",
    "ROW_SUM_TOL",
    "MetricInfo",
    "accuracy",
    "aggregate",
    "alpha_star",
    "as_model_input",
    "attack_success_rate",
    "augment",
    "auroc",
    "brier",
    "ece",
    "gaussian_mi",
    "gaussian_noise",
    "logit_norm",
    "max_softmax",
    "mean_entropy",
    "metric_info",
    "metric_registry",
    "mutual_information",
    "nll",
    "offmanifold_auroc",
    "offmanifold_confidence",
    "poisoning_success_rate",
    "predict_logits",
    "predict_proba",
    "ray_confidence",
    "reliability",
    "temperature",
    "uniform_noise",
    "validate_information_settings",
    "weight_norm",
]
