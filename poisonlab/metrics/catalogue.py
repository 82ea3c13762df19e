"""Every metric poisonlab records, declared once: its name, direction, unit, what records
it, how its seeds are aggregated, how the gate tolerates it and how reports name it.

The measurement (:mod:`poisonlab.harness.measure`), the aggregation over seeds (the
runner), the regression gate's floors (:mod:`poisonlab.harness.tolerance`), the suite's
expectations (their metric groups and threat scopes) and the report's labels all read
:data:`METRICS`; the older tables (``HIGHER_IS_BETTER``, ``FLOORS``, ``GROUP_METRICS``...)
are views of it. A metric added here is measured by adding its computation to
``measure.py`` and is then gated, aggregated and reported like the others.

>>> info = metric_info("robust_accuracy")
>>> info.higher_is_better, info.unit, info.group, info.scope
(True, 'fraction of test points', 'evasion', 'evasion')
>>> from poisonlab.errors import UnknownNameError
>>> try:
...     metric_info("robust_acuracy")
... except UnknownNameError as e:
...     print(str(e).rpartition(" (")[2])
did you mean 'robust_accuracy'?)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..registry import Registry
from .offmanifold import ALPHA_GRID
from .scores import aggregate

#: Where a metric is measured, which decides the threat (and attack) it is recorded under:
#: "clean" (no threat), "evasion" (an evasion threat and an attack), "poisoning" (threat =
#: the cell's poisoning id), "noise" (one fixed kind of noise, :attr:`MetricInfo.threat`),
#: "ray" (threat ``alpha=A`` per ray multiplier), "ensemble" (an evasion threat and
#: ``"<attack>: <component>"``), "certified" (threat ``flips=R``, a certified radius).
SCOPES = ("clean", "evasion", "poisoning", "noise", "ray", "ensemble", "certified")
RATE = "fraction of test points"


@dataclass(frozen=True)
class MetricInfo:
    """One metric's declaration.

    ``higher_is_better`` is True or False for the defender, None for a descriptive metric
    (never gated or given a verdict). ``group`` is the suite metric group that records it
    (``metrics: [...]`` in a suite; "poisoning" is recorded whenever a suite poisons).
    ``floor`` is the gate's absolute tolerance floor (None: the gate's default);
    ``rel_floor`` a floor relative to the baseline value; ``rate`` marks a fraction of test
    points (its floor never goes below a few test points). ``aggregate`` turns the per-seed
    values into ``{"mean", "std", "n"}``. ``label`` is how reports name it.
    """

    name: str
    group: str
    higher_is_better: bool | None
    unit: str
    label: str
    scope: str = "clean"
    threat: str | None = None
    floor: float | None = None
    rel_floor: float = 0.0
    rate: bool = False
    aggregate: Callable[[Sequence[float]], dict[str, float | int]] = field(
        default=aggregate, repr=False, compare=False)
    doc: str = ""


def _rate(name: str, group: str, label: str, *, higher: bool, scope: str = "clean",
          doc: str) -> MetricInfo:
    """A fraction of test points: floor 1 point (and never under MIN_POINTS points)."""
    return MetricInfo(name, group, higher, RATE, label, scope=scope, floor=0.01, rate=True,
                      doc=doc)


#: Every metric, in the order results list them (append only).
METRICS: tuple[MetricInfo, ...] = (
    _rate("clean_accuracy", "accuracy", "clean accuracy", higher=True,
          doc="accuracy on the clean test split"),
    _rate("robust_accuracy", "evasion", "robust accuracy", higher=True, scope="evasion",
          doc="test points still classified correctly under the attack"),
    _rate("attack_success_rate", "evasion", "attack success rate", higher=False,
          scope="evasion", doc="originally correct test points the attack turned wrong"),
    _rate("accuracy_drop", "poisoning", "accuracy drop", higher=False, scope="poisoning",
          doc="clean-label cell's accuracy minus the poisoned cell's"),
    _rate("poisoning_success_rate", "poisoning", "poisoning success rate", higher=False,
          scope="poisoning", doc="test points the poisoning turned wrong (or to its target)"),
    MetricInfo("offmanifold_confidence", "offmanifold", False, "probability",
               "off-manifold confidence (uniform noise)", scope="noise", threat="uniform",
               floor=0.01, doc="mean max-softmax on uniform noise"),
    MetricInfo("gaussian_confidence", "offmanifold", False, "probability",
               "off-manifold confidence (Gaussian noise)", scope="noise", threat="gaussian",
               floor=0.01, doc="mean max-softmax on Gaussian noise fitted to the inputs"),
    MetricInfo("ray_confidence", "offmanifold", False, "probability", "ray confidence",
               scope="ray", floor=0.01,
               doc="mean max-softmax along rays alpha * x away from the test inputs"),
    MetricInfo("alpha_star", "offmanifold", True, "noise scale", "alpha*",
               scope="noise", threat="uniform", floor=0.0,
               rel_floor=float(ALPHA_GRID[1] / ALPHA_GRID[0]) - 1.0,
               doc="smallest noise scale at which the confidence reaches the level"),
    MetricInfo("offmanifold_auroc", "offmanifold", True, "probability",
               "off-manifold AUROC", scope="noise", threat="uniform", floor=0.01,
               doc="AUROC of max-softmax separating test inputs from uniform noise"),
    MetricInfo("ece", "calibration", False, "probability", "ECE", floor=0.01,
               doc="expected calibration error (15 equal-width bins)"),
    MetricInfo("nll", "calibration", False, "nats", "NLL", floor=0.02,
               doc="mean negative log-likelihood of the true class"),
    MetricInfo("brier", "calibration", False, "probability", "Brier", floor=0.01,
               doc="mean squared error of the probability vector"),
    MetricInfo("n_flipped", "poisoning", False, "labels", "labels flipped",
               scope="poisoning", floor=0.5, doc="training labels the poisoning changed"),
    MetricInfo("teacher_accuracy", "accuracy", True, RATE, "teacher accuracy",
               doc="clean test accuracy of a distillation teacher"),
    MetricInfo("temperature", "calibration", None, "temperature", "T*",
               doc="temperature fitted on the validation split (descriptive)"),
    MetricInfo("mean_entropy", "calibration", None, "nats", "mean entropy",
               doc="mean entropy of the predicted distribution (descriptive)"),
    MetricInfo("mutual_information", "information", None, "nats", "mutual information",
               doc="mutual information between inputs and representations (descriptive)"),
    MetricInfo("logit_norm", "information", None, "logit units", "logit norm",
               doc="mean L2 norm of the test logits (descriptive)"),
    MetricInfo("weight_norm", "information", None, "weight units", "weight norm",
               doc="L2 norm of the trainable weights (descriptive)"),
    MetricInfo("fooled_first_by", "evasion", None, RATE, "fooled first by",
               scope="ensemble",
               doc="test points each component of an ensemble attack fooled first"),
    _rate("certified_accuracy", "accuracy", "certified accuracy", higher=True,
          scope="certified", doc="test points predicted correctly with a certified radius "
          "of at least R flipped training labels (partition aggregation; threat flips=R)"),
    MetricInfo("median_certified_radius", "accuracy", True, "labels",
               "median certified radius", floor=0.5,
               doc="largest R at which half the test points are certified correct "
               "(partition aggregation)"),
)

#: Lookup with did-you-mean (:func:`metric_info`).
metric_registry: Registry[MetricInfo] = Registry("metric")
for _m in METRICS:
    metric_registry.add(_m.name, _m, help=_m.doc)


def metric_info(name: str) -> MetricInfo:
    """The declaration of metric ``name``; UnknownNameError (did you mean) otherwise."""
    return metric_registry.get(name)


# --------------------------------------------------------------------------- views

#: Direction of every metric: True if higher is better for the defender, False if lower
#: is, None if the metric is descriptive (no better or worse; never gated or given a
#: verdict).
HIGHER_IS_BETTER: dict[str, bool | None] = {m.name: m.higher_is_better for m in METRICS}
#: The metrics each of a suite's metric groups records.
GROUP_METRICS: dict[str, tuple[str, ...]] = {
    g: tuple(m.name for m in METRICS if m.group == g)
    for g in dict.fromkeys(m.group for m in METRICS)}
