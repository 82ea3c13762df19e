"""Report logic on synthetic results documents: verdicts, ranking, pooled reliability,
and which figures and tables appear."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poisonlab.harness.report import (
    Results,
    figures,
    pooled_reliability,
    ranking,
    write_reports,
)
from poisonlab.harness.stats import compare, rank_with_ties
from poisonlab.metrics import HIGHER_IS_BETTER, aggregate

EPS = (0.1, 0.2)
FLIP = {"strategy": "random", "rate": 0.2, "id": "random 0.2", "source": None,
        "target": None, "max_per_class": None}


def _cell(defense: str, seed: int, values: dict[tuple[str, str | None, str | None], float],
          *, poisoning: dict[str, Any] | None = None,
          reliability: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    metrics = [{"metric": m, "threat": t, "attack": a, "value": v,
                "higher_is_better": HIGHER_IS_BETTER.get(m, True)}
               for (m, t, a), v in values.items()]
    cell = {"dataset": {"name": "blobs"}, "model": {"name": "mlp"},
            "defense": {"name": defense}, "poisoning": poisoning, "seed": seed,
            "status": "ok", "error": None, "metrics": metrics,
            "dataset_summary": {"n_classes": 4}, "poisoning_info": None}
    if reliability is not None:
        cell["reliability"] = reliability
    return cell


def make_doc(robust: dict[str, list[float]], *, poisoned: dict[str, list[float]] | None = None,
             teacher: dict[str, list[float]] | None = None,
             reliability: bool = False) -> dict[str, Any]:
    """A results document: per defense, per-seed worst-case robust accuracy at eps 0.1
    (0.2 gives half of it), clean accuracy 0.95 + 0.01 * seed, rays and noise confidence."""
    cells = []
    for d, per_seed in robust.items():
        for seed, rob in enumerate(per_seed):
            vals: dict[tuple[str, str | None, str | None], float] = {
                ("clean_accuracy", None, None): 0.95 + 0.01 * seed,
                ("ece", None, None): 0.05,
                ("offmanifold_confidence", "uniform", None): 0.5 + 0.1 * seed,
                ("gaussian_confidence", "gaussian", None): 0.4,
                ("ray_confidence", "alpha=1", None): 0.9,
                ("ray_confidence", "alpha=10", None): 0.99,
            }
            for e, scale in zip(EPS, (1.0, 0.5), strict=True):
                tid = f"linf eps={e:g}"
                vals[("robust_accuracy", tid, "worst-case")] = rob * scale
                vals[("robust_accuracy", tid, "pgd")] = rob * scale + 0.01
                vals[("robust_accuracy", tid, "fgsm")] = rob * scale + 0.05
            if teacher and d in teacher:
                vals[("teacher_accuracy", None, None)] = teacher[d][seed]
            rel = ({"count": [0, 10, 30, 60], "accuracy": [None, 0.5, 0.6, 0.9 - 0.1 * seed],
                    "confidence": [None, 0.4, 0.7, 0.95]} if reliability else None)
            cells.append(_cell(d, seed, vals, reliability=rel))
            if poisoned and d in poisoned:
                cells.append(_cell(d, seed, {("clean_accuracy", None, None):
                                             poisoned[d][seed]}, poisoning=FLIP))
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for c in cells:
        for m in c["metrics"]:
            key = ("blobs", "mlp", c["defense"]["name"],
                   c["poisoning"]["id"] if c["poisoning"] else "none", m["metric"],
                   m["threat"], m["attack"])
            groups[key].append(m["value"])
    aggregates = [dict(zip(("dataset", "model", "defense", "poisoning", "metric", "threat",
                            "attack"), k, strict=True), **aggregate(v), n_failed=0,
                       higher_is_better=HIGHER_IS_BETTER.get(k[4], True))
                  for k, v in groups.items()]
    return {
        "schema_version": 1, "poisonlab_version": "test", "created": "now",
        "suite": {"name": "synthetic", "description": "synthetic"},
        "threat_model": {"evasion": [{"norm": "linf", "eps": list(EPS), "targeted": False}],
                         "poisoning": [FLIP] if poisoned else [],
                         "attacks": [{"name": "fgsm"}, {"name": "pgd"}],
                         "attack_knowledge": {"fgsm": "white-box", "pgd": "white-box"}},
        "environment": {"packages": {"torch": "x"}, "platform": "p", "torch_threads": 1},
        "n_cells": len(cells), "n_failed": 0, "cells": cells, "aggregates": aggregates,
    }


SCOPE = ("blobs", "mlp")


def test_compare_states_direction_and_refuses_noise() -> None:
    a = {"mean": 0.9, "std": 0.01, "n": 5, "higher_is_better": True}
    b = {"mean": 0.8, "std": 0.01, "n": 5, "higher_is_better": True}
    assert compare(a, b)[0] == "better" and compare(b, a)[0] == "worse"
    noisy = {"mean": 0.81, "std": 0.2, "n": 5, "higher_is_better": True}
    assert compare(noisy, b)[0] == "no clear difference"
    desc = {**a, "higher_is_better": None}
    assert compare(desc, {**b, "higher_is_better": None})[0] == "higher"
    assert compare({**b, "higher_is_better": None}, desc)[0] == "lower"
    assert compare({**a, "n": 1}, b)[0] == "too few seeds to tell"


def test_rank_with_ties_shares_ranks_only_within_noise() -> None:
    def s(mean: float, std: float) -> dict[str, Any]:
        return {"mean": mean, "std": std, "n": 5, "higher_is_better": True}

    clear = rank_with_ties({"a": s(0.5, 0.01), "b": s(0.9, 0.01), "c": s(0.7, 0.01)})
    assert clear == {"b": 1, "c": 2, "a": 3}
    tied = rank_with_ties({"a": s(0.5, 0.01), "b": s(0.9, 0.01), "c": s(0.89, 0.02),
                           "d": None})
    assert tied == {"b": 1, "c": 1, "a": 3}


def test_ranking_orders_by_threat_columns_and_keeps_the_weakest_last() -> None:
    doc = make_doc({"none": [0.30, 0.32, 0.31], "strong": [0.70, 0.71, 0.69],
                    "middle": [0.50, 0.52, 0.51]},
                   poisoned={"none": [0.80, 0.81, 0.79], "strong": [0.90, 0.91, 0.90],
                             "middle": [0.85, 0.86, 0.85]})
    ranked = ranking(Results(doc), SCOPE)
    assert [d for d, _, _ in ranked] == ["strong", "middle", "none"]
    strong = ranked[0][2]
    assert set(strong) == {"evasion linf eps=0.1", "evasion linf eps=0.2",
                           "poisoning random 0.2"}
    assert all(v == 1 for v in strong.values()) and ranked[-1][1] == 3.0


def test_pooled_reliability_weights_bins_by_count() -> None:
    doc = make_doc({"none": [0.3, 0.3]}, reliability=True)
    pooled = pooled_reliability(Results(doc), SCOPE, "none")
    assert pooled is not None
    assert pooled["count"] == [0, 20, 60, 120]
    assert pooled["accuracy"][0] is None
    assert pooled["accuracy"][3] == pytest.approx((0.9 + 0.8) / 2)
    assert pooled["confidence"][2] == pytest.approx(0.7)
    assert pooled_reliability(Results(make_doc({"none": [0.3]})), SCOPE, "none") is None


def test_figures_appear_only_when_their_data_exists() -> None:
    plain = figures(Results(make_doc({"none": [0.3, 0.3], "ls": [0.4, 0.4]})))
    assert sorted(n.split("_0_")[0] for n in plain) == ["offmanifold_confidence",
                                                       "robust_vs_eps"]
    full = figures(Results(make_doc(
        {"none": [0.3, 0.3], "distill": [0.4, 0.4]}, poisoned={"none": [0.8, 0.8],
                                                              "distill": [0.8, 0.8]},
        teacher={"distill": [0.97, 0.96]}, reliability=True)))
    assert sorted(n.split("_0_")[0] for n in full) == [
        "distillation", "offmanifold_confidence", "poisoning_vs_flip_rate", "reliability",
        "robust_vs_eps"]
    # One curve per defense in the security curve, starting at eps 0 (clean accuracy).
    ax = next(f for n, f in full.items() if n.startswith("robust_vs_eps")).axes[0]
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["no defense", "distill"]  # display names
    np.testing.assert_allclose(lines[0].get_xdata(), [0.0, 0.1, 0.2])
    np.testing.assert_allclose(lines[0].get_ydata(), [0.955, 0.3, 0.15])


def test_report_puts_the_ranking_under_the_findings(tmp_path: Path) -> None:
    doc = make_doc({"none": [0.30, 0.32, 0.31], "strong": [0.70, 0.71, 0.69]},
                   reliability=True)
    paths = write_reports(doc, tmp_path)
    md = paths["md"].read_text()
    assert md.index("What the numbers say") < md.index("### Ranking under") < md.index(
        "## Figures")
    row = next(line for line in md.splitlines() if line.startswith("| strong |"))
    assert "(#1)" in row and "0.700 ± 0.010" in row
    assert (tmp_path / "figures").is_dir() and len(list((tmp_path / "figures").iterdir())) == 3
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 3 and "Ranking under" in html
