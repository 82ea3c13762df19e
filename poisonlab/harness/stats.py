"""Aggregation over seeds, and when a difference between two aggregates is real: the one
rule the report's verdicts, its rankings and the suite's expectations share.

An aggregate is ``{"mean", "std", "n", "higher_is_better"}`` over seeds (see
:func:`poisonlab.metrics.aggregate`). A difference counts when it exceeds ``Z_SE`` standard
errors of the difference of the two means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from .._text import spec_label
from ..metrics import metric_info

#: A difference counts as real when |mean difference| > Z_SE * its standard error.
Z_SE = 2.0


def compare(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[str, float | None]:
    """Verdict of ``a`` against baseline ``b``: better / worse / no clear difference.

    Descriptive metrics (``higher_is_better`` null: entropy, norms, T*, mutual information)
    get higher / lower instead of better / worse.
    """
    if a is None or b is None or a["mean"] is None or b["mean"] is None:
        return "not measured", None
    diff = a["mean"] - b["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return "too few seeds to tell", diff
    se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    if abs(diff) <= Z_SE * se or diff == 0:
        return "no clear difference", diff
    if a.get("higher_is_better") is None:  # descriptive: a direction, no judgement
        return ("higher" if diff > 0 else "lower"), diff
    good = (diff > 0) == bool(a["higher_is_better"])
    return ("better" if good else "worse"), diff


def rank_with_ties(stats: dict[str, dict[str, Any] | None]) -> dict[str, int]:
    """Competition ranks (1 = highest mean); a defense within ``Z_SE`` standard errors of
    the one ranked just above shares its rank. Unmeasured defenses are left out."""
    order = sorted((d for d, a in stats.items() if a and a["mean"] is not None),
                   key=lambda d: -stats[d]["mean"])  # type: ignore[index]
    ranks: dict[str, int] = {}
    for i, d in enumerate(order):
        tied = i and compare(stats[d], stats[order[i - 1]])[0] in (
            "no clear difference", "too few seeds to tell")
        ranks[d] = ranks[order[i - 1]] if tied else i + 1
    return ranks


def aggregate_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std and n over seeds for each (dataset, model, defense, poisoning, metric,
    threat, attack); failed cells are left out and counted in ``n_failed``.

    Each metric is aggregated as its catalogue entry says
    (:attr:`poisonlab.metrics.MetricInfo.aggregate`) and carries its direction.
    """
    groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
    failed: dict[tuple[str, ...], int] = defaultdict(int)
    labels: dict[tuple[str, ...], dict[str, Any]] = {}
    for c in cells:
        coords = {
            "dataset": spec_label(c["dataset"]), "model": spec_label(c["model"]),
            "defense": spec_label(c["defense"]),
            "poisoning": "none" if c["poisoning"] is None else c["poisoning"]["id"],
        }
        base = tuple(coords.values())
        if c["status"] != "ok":
            failed[base] += 1
            continue
        for m in c["metrics"]:
            key = (*base, m["metric"], str(m["threat"]), str(m["attack"]))
            groups[key].append(m["value"])
            labels[key] = {**coords, "metric": m["metric"], "threat": m["threat"],
                           "attack": m["attack"]}
    out = []
    for key, values in groups.items():
        info = metric_info(labels[key]["metric"])
        out.append({**labels[key], **info.aggregate(values),
                    "n_failed": failed.get(key[:4], 0),
                    "higher_is_better": info.higher_is_better})
    return out
