"""The metric catalogue: each metric declared once, every table a view of it (issue 20)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from poisonlab.errors import UnknownNameError
from poisonlab.harness import expectations, tolerance
from poisonlab.harness.report.tables import _label
from poisonlab.metrics import GROUP_METRICS, HIGHER_IS_BETTER, METRICS, metric_info
from poisonlab.metrics.catalogue import RATE, SCOPES

HARNESS = Path(__file__).resolve().parents[2] / "poisonlab" / "harness"


def recorded_names() -> set[str]:
    """Every metric name the harness records: the first argument of its ``metric(...)``
    calls (measure.py and pretrained.py build every metric entry through it)."""
    out = set()
    for path in HARNESS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "metric" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                out.add(node.args[0].value)
    return out


def test_every_recorded_metric_is_declared_and_every_declared_one_recorded() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)) == 23
    assert recorded_names() == set(names)


def test_the_old_tables_are_views_of_the_catalogue() -> None:
    assert list(HIGHER_IS_BETTER) == [m.name for m in METRICS]
    assert {m for ms in GROUP_METRICS.values() for m in ms} == set(HIGHER_IS_BETTER)
    assert tolerance.FLOORS["nll"] == 0.02 and tolerance.FLOORS["n_flipped"] == 0.5
    assert set(tolerance.FLOORS) == {m.name for m in METRICS if m.floor is not None}
    assert {"alpha_star": pytest.approx(10 ** (1 / 8) - 1)} == tolerance.REL_FLOORS
    assert {"clean_accuracy", "robust_accuracy",
                                      "attack_success_rate", "accuracy_drop",
                                      "poisoning_success_rate",
                                      "certified_accuracy"} == tolerance.RATE_METRICS
    assert {"robust_accuracy", "attack_success_rate"} == expectations.EVASION_METRICS
    assert expectations.FIXED_THREATS["gaussian_confidence"] == "gaussian"


@pytest.mark.parametrize("info", METRICS, ids=lambda m: m.name)
def test_each_declaration_is_coherent(info) -> None:  # type: ignore[no-untyped-def]
    assert info.scope in SCOPES and info.label and info.unit and info.doc
    assert (info.scope == "noise") == (info.threat is not None)
    if info.rate:
        assert info.unit == RATE and info.higher_is_better is not None
    if info.higher_is_better is None:  # descriptive metrics are never gated by a floor
        assert info.floor is None and not info.rel_floor
    agg = info.aggregate([0.25, 0.75, float("nan")])
    assert agg["mean"] == 0.5 and agg["n"] == 2
    assert metric_info(info.name) is info


def test_an_unknown_metric_gets_a_did_you_mean() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'offmanifold_auroc'"):
        metric_info("offmanifold_aucroc")


def test_the_report_names_metrics_by_their_catalogue_label() -> None:
    assert _label("ece") == "ECE"
    assert _label("offmanifold_confidence") == "off-manifold confidence (uniform noise)"
