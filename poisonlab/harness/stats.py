"""Aggregation over seeds, and when a difference between two aggregates is real.

An aggregate is ``{"mean", "std", "n", "higher_is_better"}`` over seeds (see
:func:`poisonlab.metrics.aggregate`). The report has one tie rule: two aggregates are
tied when their 95% Student-t intervals over seeds overlap (:func:`tied`), in its
findings (:func:`compare`), its rankings (:func:`rank_with_ties`) and its verdicts. A
suite's expectations keep their own documented rule: a claim holds beyond ``Z_SE``
standard errors of the difference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from .._text import spec_label
from ..metrics import metric_info

#: The expectations' rule (harness/expectations.py): a claim holds when the difference
#: exceeds Z_SE standard errors of the seed spread.
Z_SE = 2.0


def compare(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[str, float | None]:
    """Verdict of ``a`` against baseline ``b``: better / worse / no clear difference.

    No clear difference when the two are :func:`tied` (their 95% intervals over seeds
    overlap): the report's one tie rule, shared by its findings, rankings and verdicts.
    Descriptive metrics (``higher_is_better`` null: entropy, norms, T*, mutual information)
    get higher / lower instead of better / worse.
    """
    if a is None or b is None or a["mean"] is None or b["mean"] is None:
        return "not measured", None
    diff = a["mean"] - b["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return "too few seeds to tell", diff
    if diff == 0 or tied(a, b):
        return "no clear difference", diff
    if a.get("higher_is_better") is None:  # descriptive: a direction, no judgement
        return ("higher" if diff > 0 else "lower"), diff
    good = (diff > 0) == bool(a["higher_is_better"])
    return ("better" if good else "worse"), diff


#: Confidence level of the intervals over seeds (reports, verdicts, ties).
CI_LEVEL = 0.95


def confidence_interval(a: dict[str, Any] | None, level: float = CI_LEVEL
                        ) -> tuple[float, float] | None:
    """Student-t interval of the mean over seeds: ``mean -+ t(level, n-1) * std / sqrt(n)``.

    None when there is no mean or fewer than 2 seeds (one seed has no spread to measure).

    >>> lo, hi = confidence_interval({"mean": 0.5, "std": 0.1, "n": 4})
    >>> round(lo, 3), round(hi, 3)
    (0.341, 0.659)
    """
    if a is None or a.get("mean") is None or a.get("n", 0) < 2 or a.get("std") is None:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, a["n"] - 1)) * a["std"] / math.sqrt(a["n"])
    return a["mean"] - half, a["mean"] + half


def tied(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two aggregates cannot be told apart: their intervals overlap, or either has
    fewer than 2 seeds (no interval). The one tie rule of rankings and verdicts."""
    ia, ib = confidence_interval(a), confidence_interval(b)
    if ia is None or ib is None:
        return True
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def rank_with_ties(stats: dict[str, dict[str, Any] | None], *,
                   higher_is_better: bool = True) -> dict[str, int]:
    """Competition ranks (1 = best mean) in tiers: the best defense not ranked yet leads a
    tier, and every defense :func:`tied` with the leader shares its rank (ties are with the
    leader, not chained, so a tie shown in one table is a tie in every other). Unmeasured
    defenses are left out.

    >>> s = lambda m: {"mean": m, "std": 0.01, "n": 3}
    >>> rank_with_ties({"a": s(0.90), "b": s(0.89), "c": s(0.70)})
    {'a': 1, 'b': 1, 'c': 3}
    """
    sign = -1.0 if higher_is_better else 1.0
    order = sorted((d for d, a in stats.items() if a and a["mean"] is not None),
                   key=lambda d: sign * stats[d]["mean"])  # type: ignore[index]
    ranks: dict[str, int] = {}
    for i, d in enumerate(order):
        if d in ranks:
            continue
        ranks[d] = i + 1
        for other in order[i + 1:]:
            if other not in ranks and tied(stats[d], stats[other]):  # type: ignore[arg-type]
                ranks[other] = i + 1
    return dict(sorted(ranks.items(), key=lambda kv: order.index(kv[0])))


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
