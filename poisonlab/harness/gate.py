"""The regression gate: baselines with noise-aware tolerances, and a check that names what moved.

A *baseline* is made from one run's results.json (:func:`make_baseline`): for every gated
number (one aggregate: dataset, model, defense, poisoning, metric, threat, attack) it
stores the mean over seeds, the seed spread (std, n), the direction and a tolerance.
:func:`check` compares a later run's results with it, number by number, and returns one
:class:`GateResult` that says what regressed, improved, stayed within tolerance, or is
missing on either side. The rule, its reasoning and the CI workflow are in
docs/regression.md.

The tolerance rule (:func:`tolerance`)::

    tol = max(floor, rel_floor * |baseline|, k * std * sqrt(1/n_base + 1/n_new))

``k * std * sqrt(1/n_base + 1/n_new)`` is ``k`` standard errors of the difference of two
means, each over its own seeds: the new run carries its own seed noise, not only the
baseline's. ``k`` defaults to :data:`DEFAULT_K` = 4 because a suite gates hundreds of
numbers at once (see the docs for the false-alarm arithmetic). The floors (:data:`FLOORS`)
are the smallest change that is treated as real: for accuracies and rates one
percentage point, and never less than :data:`MIN_POINTS` test points. With one seed
(n = 1) there is no spread and the floor alone applies.

>>> from poisonlab.harness.gate import tolerance
>>> round(tolerance(0.02, 3, k=4.0, floor=0.01), 4)     # 4 * 0.02 * sqrt(2/3)
0.0653
>>> tolerance(0.02, 1, k=4.0, floor=0.01)               # n=1: the floor alone
0.01

Metrics without a direction (``higher_is_better`` null: entropy, norms, temperatures,
mutual information) describe a model and are never gated: a baseline lists them under
``descriptive`` and :func:`check` gives them no verdict.

:func:`check` also judges the suite's *expectations* stored in the results (claims such as
"ece of label_smoothing below none", :mod:`poisonlab.harness.expectations`), afresh from
the aggregates: a claim marked ``required`` that does not hold, or cannot be shown to hold
(inconclusive), fails the gate; the others are listed and never fail it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .._text import spec_label
from .._version import __version__
from ..metrics import HIGHER_IS_BETTER
from .causes import config_changes, group_rows
from .expectations import (
    evaluate_expectations,
    expectations_from_doc,
)
from .schema import (
    BASELINE_KIND,
    BASELINE_SCHEMA_VERSION,
    IDENTITY,
    environment_warnings,
    validate_baseline,
    validate_results,
)

# The document readers and writer live in .schema; the gate's callers find them here too.
from .schema import RESULTS_SCHEMA_VERSION as RESULTS_SCHEMA_VERSION
from .schema import load_baseline as load_baseline
from .schema import load_results_doc as load_results_doc
from .schema import write_baseline as write_baseline
from .tolerance import (
    DEFAULT_FLOOR,
    DEFAULT_K,
    FLOORS,
    MIN_POINTS,
    RATE_METRICS,
    REL_FLOORS,
    RULE,
    default_floor,
    parse_tolerances,
    tolerance,
    validate_number,
)
from .verdicts import _ORDER

# What the gate returns lives in .verdicts; its callers find it here too.
from .verdicts import CheckResult as CheckResult
from .verdicts import Comparison as Comparison
from .verdicts import GateResult as GateResult
from .verdicts import Verdict as Verdict

# --------------------------------------------------------------------------- documents


# --------------------------------------------------------------------------- baseline


def _n_test(doc: Mapping[str, Any]) -> dict[str, int]:
    """Smallest test-set size per dataset label, from the cells' dataset summaries."""
    out: dict[str, int] = {}
    for c in doc.get("cells") or []:
        summary = c.get("dataset_summary") if isinstance(c, Mapping) else None
        spec = c.get("dataset") if isinstance(c, Mapping) else None
        if not isinstance(summary, Mapping) or not isinstance(spec, Mapping):
            continue
        n = summary.get("n_test")
        if (isinstance(n, int) and not isinstance(n, bool) and n > 0
                and isinstance(spec.get("name"), str)):
            label = spec_label(dict(spec))
            out[label] = min(n, out.get(label, n))
    return out


def _suite_tolerances(doc: Mapping[str, Any]) -> Any:
    suite = doc["suite"]
    if suite.get("tolerances") is not None:
        return suite["tolerances"]
    config = suite.get("config")
    return config.get("tolerances") if isinstance(config, Mapping) else None


def make_baseline(
    results_doc: Mapping[str, Any],
    *,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    k: float = DEFAULT_K,
    floor: float | None = None,
) -> dict[str, Any]:
    """A baseline from a run's results: value, spread, direction and tolerance per number.

    Every aggregate with a direction and a value becomes one entry; descriptive metrics
    (``higher_is_better`` null) are listed under ``descriptive`` and never gated, and
    aggregates without a value (all seeds failed, or the metric undefined) under
    ``skipped``. The tolerance is :func:`tolerance` with ``n_new = n`` (the same suite
    rerun); :func:`check` recomputes it when the results have another n.

    Parameters
    ----------
    results_doc : mapping
        A results document (the content of results.json).
    overrides : mapping, optional
        Per-metric overrides, ``{metric: {field: number}}`` (see :func:`parse_tolerances`).
        They replace, metric by metric, the suite's ``tolerances:`` (read from
        ``results_doc["suite"]["tolerances"]`` or the suite config).
    k : float
        Standard errors of the difference allowed, > 0 (default :data:`DEFAULT_K`).
    floor : float, optional
        Absolute floor for every metric, >= 0; default None: per metric, :data:`FLOORS`
        (rate metrics at least :data:`MIN_POINTS` test points).

    Returns
    -------
    dict
        The baseline document (poisonlab/schemas/baseline.schema.json): ``kind``,
        ``schema_version``, ``suite``, ``environment``, ``source``, ``rule``,
        ``entries``, ``descriptive``, ``skipped``.

    Raises
    ------
    DataError
        ``results_doc`` is not a results document.
    UnknownNameError, ConfigError
        An override names an unknown metric or has a value that is not allowed.

    Examples
    --------
    >>> base = make_baseline(doc)  # doctest: +SKIP
    >>> check(doc, base).exit_code  # doctest: +SKIP
    0
    """
    doc = validate_results(results_doc)
    k = validate_number("k", k, positive=True)
    floor = None if floor is None else validate_number("floor", floor)
    aggs = doc["aggregates"]
    directions: dict[str, bool | None] = dict(HIGHER_IS_BETTER)
    for a in aggs:
        directions.setdefault(a["metric"], a["higher_is_better"])
    merged = dict(parse_tolerances(_suite_tolerances(doc), metrics=directions,
                                   where="suite.tolerances"))
    merged.update(parse_tolerances(overrides, metrics=directions, where="overrides"))
    n_test = _n_test(doc)

    entries: list[dict[str, Any]] = []
    descriptive: set[str] = set()
    skipped: list[dict[str, Any]] = []
    for a in aggs:
        ident = {key: a[key] for key in IDENTITY}
        if a["higher_is_better"] is None:
            descriptive.add(a["metric"])
            continue
        if a["mean"] is None or a["n"] == 0:
            skipped.append({**ident, "reason": f"no value (n=0, n_failed={a.get('n_failed')})"})
            continue
        n, value = a["n"], a["mean"]
        std = float(a["std"] or 0.0) if n > 1 else 0.0  # one seed: no spread
        ov = merged.get(a["metric"], {})
        entry: dict[str, Any] = {**ident, "value": value, "std": std, "n": n,
                                 "n_failed": a.get("n_failed", 0),
                                 "higher_is_better": a["higher_is_better"]}
        if "tolerance" in ov:
            entry.update(k=None, floor=None, rel_floor=None, tolerance=ov["tolerance"],
                         fixed=True, basis="fixed")
        else:
            k_m = ov.get("k", k)
            if "floor" in ov:
                floor_m = ov["floor"]
            elif floor is not None:
                floor_m = floor
            else:
                floor_m = default_floor(a["metric"], n_test.get(a["dataset"]))
            rel_m = ov.get("rel_floor", REL_FLOORS.get(a["metric"], 0.0))
            tol = tolerance(std, n, k=k_m, floor=floor_m, rel_floor=rel_m, value=value)
            spread = tolerance(std, n, k=k_m)
            basis = "floor-only" if n == 1 else ("spread" if spread >= tol else "floor")
            entry.update(k=k_m, floor=floor_m, rel_floor=rel_m, tolerance=tol, fixed=False,
                         basis=basis)
        entries.append(entry)

    env = doc["environment"]
    return {
        "kind": BASELINE_KIND,
        "schema_version": BASELINE_SCHEMA_VERSION,
        "poisonlab_version": __version__,
        # the suite's config too: check names each key that changed since (causes.py)
        "suite": {"name": doc["suite"]["name"], "version": doc["suite"]["version"],
                  "config": doc["suite"].get("config")},
        "source": {"poisonlab_version": doc.get("poisonlab_version"),
                   "created": doc.get("created"), "git": env.get("git"),
                   "n_cells": doc.get("n_cells"), "n_failed": doc.get("n_failed")},
        "environment": dict(env),
        "rule": {"formula": RULE, "k": k, "floor": floor,
                 "floors": dict(FLOORS), "default_floor": DEFAULT_FLOOR,
                 "rel_floors": dict(REL_FLOORS), "min_points": MIN_POINTS,
                 "rate_metrics": sorted(RATE_METRICS), "n_test": n_test,
                 "overrides": merged},
        "entries": entries,
        "descriptive": sorted(descriptive),
        "skipped": skipped,
    }



def check(
    results_doc: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    *,
    fail_on_improvement: bool = False,
) -> GateResult:
    """Compare a run's results with a baseline, number by number; judge its expectations.

    For each baseline entry the same cell and metric is looked up in the results'
    aggregates; ``gain`` (the change signed by the metric's direction) decides: below
    ``-tolerance`` regressed, above ``+tolerance`` improved, otherwise within. A number
    of the baseline absent from the results (or without a value there) is *missing* and
    fails the gate; a number only in the results is *new* and does not. When the results
    have another n than the baseline, the tolerance is recomputed for that n
    (:func:`tolerance` with ``n_new``). Descriptive metrics get no verdict.

    The expectations stored in the results (``results_doc["expectations"]``) are judged
    again from the aggregates (:func:`~poisonlab.harness.expectations.evaluate_expectations`;
    the stored verdicts are not trusted): a required one that does not hold in some scope,
    or is inconclusive there, fails the gate.

    Parameters
    ----------
    results_doc : mapping
        The results document (content of results.json).
    baseline : mapping or None
        A baseline made by :func:`make_baseline`; None: judge the expectations only.
    fail_on_improvement : bool
        Also fail when a number improved beyond its tolerance (forces a baseline refresh).

    Returns
    -------
    GateResult
        Rows, expectation verdicts, warnings (environment or suite differs, n differs,
        floor-only tolerances) and ``exit_code``.

    Raises
    ------
    DataError
        Either document is not what it should be (the message names the field).
    """
    doc = validate_results(results_doc)
    expectations = tuple(evaluate_expectations(doc, expectations_from_doc(doc)))
    if baseline is None:
        return GateResult(rows=(), fail_on_improvement=fail_on_improvement,
                           suite=str(doc["suite"]["name"]), expectations=expectations,
                           has_baseline=False)
    base = validate_baseline(baseline)
    warnings = environment_warnings(base["environment"], doc["environment"])
    b_suite, r_suite = base["suite"], doc["suite"]
    if (b_suite["name"], b_suite.get("version")) != (r_suite["name"], r_suite["version"]):
        warnings.insert(0, f"suite differs: the baseline is of {b_suite['name']!r} version "
                           f"{b_suite.get('version')}, the results of {r_suite['name']!r} "
                           f"version {r_suite['version']}")

    index = {tuple(a[key] for key in IDENTITY): a for a in doc["aggregates"]}
    rows: list[Comparison] = []
    n_changed = floor_only = 0
    for e in base["entries"]:
        ident = tuple(e[key] for key in IDENTITY)
        a = index.pop(ident, None)
        common = dict(zip(IDENTITY, ident, strict=True))
        if a is None or a["mean"] is None or a["n"] == 0:
            note = "" if a is None else f"no value: n=0, n_failed={a.get('n_failed')}"
            rows.append(Comparison(**common, verdict=Verdict.MISSING, baseline=e["value"],
                                   higher_is_better=e["higher_is_better"],
                                   n_baseline=e["n"], note=note))
            continue
        notes = []
        tol = e["tolerance"]
        if a["n"] != e["n"]:
            n_changed += 1
            notes.append(f"n {e['n']} -> {a['n']}")
            if not e["fixed"]:
                tol = tolerance(e["std"], e["n"], n_new=a["n"], k=e["k"], floor=e["floor"],
                                rel_floor=e["rel_floor"], value=e["value"])
        if e["n"] == 1 and not e["fixed"]:
            floor_only += 1
        if a["higher_is_better"] != e["higher_is_better"]:
            notes.append("direction differs")
            warnings.append(f"{e['metric']}: higher_is_better is {e['higher_is_better']} in "
                            f"the baseline, {a['higher_is_better']} in the results: compared "
                            "with the baseline's direction; remake the baseline")
        gain = (a["mean"] - e["value"]) * (1 if e["higher_is_better"] else -1)
        verdict = (Verdict.REGRESSED if gain < -tol else
                   Verdict.IMPROVED if gain > tol else Verdict.WITHIN)
        rows.append(Comparison(**common, verdict=verdict, baseline=e["value"], now=a["mean"],
                               tolerance=tol, higher_is_better=e["higher_is_better"],
                               n_baseline=e["n"], n_now=a["n"], note=", ".join(notes)))
    for ident, a in index.items():
        if a["higher_is_better"] is None:  # descriptive: never gated
            continue
        rows.append(Comparison(**dict(zip(IDENTITY, ident, strict=True)), verdict=Verdict.NEW,
                               now=a["mean"], higher_is_better=a["higher_is_better"],
                               n_now=a["n"]))
    if n_changed:
        warnings.append(f"{n_changed} numbers have another n (seeds) than in the baseline "
                        "(failed cells or another suite): their tolerance is recomputed for "
                        "the new n")
    if floor_only:
        warnings.append(f"{floor_only} numbers have n=1 in the baseline: their tolerance is "
                        "the floor alone (no seed spread to measure noise); use >= 3 seeds")
    # dedupe repeated direction warnings, keep order
    warnings = list(dict.fromkeys(warnings))
    groups, explained = group_rows(rows)
    causes = config_changes(b_suite.get("config"), r_suite.get("config")) + groups
    return GateResult(rows=tuple(_sorted(rows)), warnings=tuple(warnings),
                      fail_on_improvement=fail_on_improvement, suite=str(b_suite["name"]),
                      expectations=expectations, causes=tuple(causes),
                      explained=frozenset(explained))


def _sorted(rows: Iterable[Comparison]) -> list[Comparison]:
    def severity(r: Comparison) -> float:
        gain, tol = r.gain, r.tolerance
        if gain is None or tol is None:
            return 0.0
        ratio = abs(gain) / tol if tol > 0 else math.inf
        return -ratio  # largest excess first (regressions and improvements alike)

    rank = {v: i for i, v in enumerate(_ORDER)}
    return sorted(rows, key=lambda r: (rank[r.verdict], severity(r)))
