"""The gate's tolerance rule and its overrides: how far a number may move before it counts.

A gated number moves by ``|new - baseline|``; it has changed when that exceeds
``RULE`` = ``max(floor, rel_floor * |value|, k * std * sqrt(1/n + 1/n_new))`` (the floor of
a rate metric never below ``MIN_POINTS / n_test``). :func:`tolerance` computes it;
:func:`parse_tolerances` validates a suite's ``tolerances:`` block or ``overrides=``
(docs/regression.md). :mod:`poisonlab.harness.gate` applies it to a baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, UnknownNameError
from ..metrics import HIGHER_IS_BETTER, METRICS
from ..registry import did_you_mean

#: Standard errors of the difference a number may move before it counts as changed.
DEFAULT_K = 4.0
#: Floor of metrics not listed in :data:`FLOORS` (a metric you registered yourself).
DEFAULT_FLOOR = 0.01
#: A rate metric's floor is never below this many test points (``MIN_POINTS / n_test``).
MIN_POINTS = 2
#: Fractions of test points: their floor is ``max(0.01, MIN_POINTS / n_test)``.
RATE_METRICS = frozenset(m.name for m in METRICS if m.rate and m.floor is not None)
#: Absolute floor of the tolerance per metric (the smallest change that counts as real),
#: from the metric catalogue (:data:`poisonlab.metrics.METRICS`): one percentage point of
#: test points for rates, 0.01 for probabilities (ECE, Brier, confidences, AUROC), 0.02
#: nats of NLL, half a label of ``n_flipped`` (any whole label is a change) and 0 for
#: alpha_star, whose floor is relative (:data:`REL_FLOORS`).
FLOORS: dict[str, float] = {m.name: m.floor for m in METRICS if m.floor is not None}
#: Relative floor (a fraction of ``|baseline|``) per metric; 0 for metrics not listed.
#: alpha_star moves in steps of the grid (8 points per decade, a factor 1.334).
REL_FLOORS: dict[str, float] = {m.name: m.rel_floor for m in METRICS if m.rel_floor}
#: Fields of a per-metric override (a suite's ``tolerances:`` or ``overrides=``).
OVERRIDE_FIELDS = ("tolerance", "floor", "rel_floor", "k")

RULE = "max(floor, rel_floor * |value|, k * std * sqrt(1/n + 1/n_new))"


# --------------------------------------------------------------------------- the rule


def tolerance(
    std: float,
    n: int,
    *,
    n_new: int | None = None,
    k: float = DEFAULT_K,
    floor: float = 0.0,
    rel_floor: float = 0.0,
    value: float = 0.0,
) -> float:
    """The tolerance of one number: ``max(floor, rel_floor*|value|, k*std*sqrt(1/n + 1/n_new))``.

    Parameters
    ----------
    std : float
        Sample standard deviation (ddof=1) of the baseline's per-seed values, >= 0.
    n : int
        Seeds behind the baseline's mean, >= 1. With ``n == 1`` there is no spread and
        the floors alone apply, whatever ``std`` says.
    n_new : int, optional
        Seeds behind the mean it is compared with; default ``n`` (the same suite rerun).
    k : float
        Standard errors of the difference allowed, > 0 (default :data:`DEFAULT_K`).
    floor, rel_floor : float
        Absolute floor and floor relative to ``|value|``, >= 0.
    value : float
        The baseline's mean (only used by ``rel_floor``).

    Returns
    -------
    float
        The largest change of the mean, in the metric's units, that counts as noise.

    Examples
    --------
    >>> tolerance(0.0, 5, floor=0.01)
    0.01
    >>> round(tolerance(0.01, 4, n_new=2, k=3.0), 5)   # 3 * 0.01 * sqrt(1/4 + 1/2)
    0.02598
    """
    n_new = n if n_new is None else n_new
    spread = k * std * math.sqrt(1.0 / n + 1.0 / n_new) if n > 1 and n_new >= 1 else 0.0
    return max(floor, rel_floor * abs(value), spread)


def default_floor(metric: str, n_test: int | None = None) -> float:
    """The absolute floor of ``metric`` when nothing overrides it.

    Rate metrics (:data:`RATE_METRICS`) never go below :data:`MIN_POINTS` test points.

    >>> default_floor("clean_accuracy", 450), default_floor("clean_accuracy", 100)
    (0.01, 0.02)
    """
    floor = FLOORS.get(metric, DEFAULT_FLOOR)
    if metric in RATE_METRICS and n_test:
        floor = max(floor, MIN_POINTS / n_test)
    return floor


# --------------------------------------------------------------------------- overrides


def validate_number(where: str, value: Any, *, positive: bool = False) -> float:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        raise ConfigError(f"{where}={value!r} is not allowed: expected a number "
                          f"{'> 0' if positive else '>= 0'}")
    return float(value)


def parse_tolerances(
    raw: Any,
    *,
    metrics: Mapping[str, bool | None] | None = None,
    where: str = "tolerances",
) -> dict[str, dict[str, float]]:
    """Validate per-metric tolerance overrides, as a suite's ``tolerances:`` mapping.

    Each metric maps to one or more of ``floor`` (absolute, >= 0), ``rel_floor``
    (fraction of ``|baseline|``, >= 0) and ``k`` (> 0), which replace the defaults of the
    rule, or to ``tolerance`` alone (>= 0), a fixed tolerance that replaces the rule.

    Parameters
    ----------
    raw : mapping or None
        ``{metric: {field: number}}``, e.g. ``{"ece": {"floor": 0.02}}``. None: no
        overrides.
    metrics : mapping, optional
        Known metric names and their direction (``higher_is_better``); default the
        metrics of :data:`poisonlab.metrics.HIGHER_IS_BETTER`.
    where : str
        How errors name the mapping (``"tolerances"`` for a suite).

    Returns
    -------
    dict
        ``{metric: {field: float}}``.

    Raises
    ------
    UnknownNameError
        A metric name is not known (with a did-you-mean hint).
    ConfigError
        A field or value is not allowed, or the metric is descriptive (never gated).

    Examples
    --------
    >>> parse_tolerances({"ece": {"floor": 0.02}, "robust_accuracy": {"tolerance": 0.05}})
    {'ece': {'floor': 0.02}, 'robust_accuracy': {'tolerance': 0.05}}
    >>> parse_tolerances({"ece": {"floor": -1}})
    Traceback (most recent call last):
    ...
    poisonlab.errors.ConfigError: tolerances.ece.floor=-1 is not allowed: expected a number >= 0
    """
    known = dict(HIGHER_IS_BETTER if metrics is None else metrics)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}={raw!r} is not allowed: expected a mapping like "
                          "{ece: {floor: 0.02}, robust_accuracy: {tolerance: 0.05}}")
    out: dict[str, dict[str, float]] = {}
    for metric, fields in raw.items():
        if not isinstance(metric, str) or metric not in known:
            options = sorted(known)
            raise UnknownNameError(
                f"{where}: metric={metric!r} is not known: expected one of "
                f"{', '.join(options)}{did_you_mean(str(metric), options)}")
        at = f"{where}.{metric}"
        if known[metric] is None:
            raise ConfigError(f"{at} is not allowed: {metric!r} is descriptive (no better "
                              "direction) and never gated")
        if not isinstance(fields, Mapping) or not fields:
            raise ConfigError(f"{at}={fields!r} is not allowed: expected a mapping with one "
                              f"or more of {', '.join(OVERRIDE_FIELDS)}")
        parsed: dict[str, float] = {}
        for name, value in fields.items():
            if name not in OVERRIDE_FIELDS:
                raise ConfigError(
                    f"{at}: unknown field {name!r}: expected one of "
                    f"{', '.join(OVERRIDE_FIELDS)}{did_you_mean(str(name), list(OVERRIDE_FIELDS))}")
            parsed[name] = validate_number(f"{at}.{name}", value, positive=name == "k")
        if "tolerance" in parsed and len(parsed) > 1:
            others = ", ".join(f for f in parsed if f != "tolerance")
            raise ConfigError(f"{at}: tolerance together with {others} is not allowed: "
                              "tolerance fixes the tolerance, so floor, rel_floor and k "
                              "would not apply")
        out[metric] = parsed
    return out
