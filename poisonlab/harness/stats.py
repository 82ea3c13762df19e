"""When a difference between two aggregates over seeds is real: the one rule the report's
verdicts, its rankings and the suite's expectations share.

An aggregate is ``{"mean", "std", "n", "higher_is_better"}`` over seeds (see
:func:`poisonlab.metrics.aggregate`). A difference counts when it exceeds ``Z_SE`` standard
errors of the difference of the two means.
"""

from __future__ import annotations

import math
from typing import Any

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
