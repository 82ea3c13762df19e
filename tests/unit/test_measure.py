"""measure_cell: one cell -> a CellResult of plain numbers (issue 20)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from poisonlab.harness.evaluate import evaluate_cell
from poisonlab.harness.measure import CellResult, cell_stages, measure_cell
from poisonlab.harness.suite import parse_suite

SUITE: dict[str, Any] = {
    "name": "measure",
    "datasets": [{"name": "blobs", "n_samples": 240}],
    "models": ["mlp"],
    "training": {"epochs": 2},
    "defenses": ["none"],
    "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.2}],
                     "evasion": [{"norm": "linf", "eps": [0.1, 0.3]}]},
    "attacks": ["fgsm", {"name": "pgd", "steps": 3}],
    "seeds": [0],
    "metrics": ["accuracy", "evasion", "calibration"],
    "checks": {"n_probe": 10, "steps": 3},
}


def _plain(value: Any) -> bool:
    """JSON-ready: dicts, lists, strings, ints, floats, bools and None only."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _untimed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "timing"}


def test_a_cell_measures_to_plain_numbers_and_ticks_each_stage() -> None:
    suite = parse_suite(SUITE)
    clean = next(iter(suite.cells()))
    stages: list[str] = []
    result = measure_cell(suite, clean, tick=stages.append)
    assert isinstance(result, CellResult) and result.ok, result.error
    # training, 2 attacks x 2 eps, the sanity checks
    assert len(stages) == cell_stages(suite, clean) == 1 + 2 * 2 + 1
    assert _plain(result.metrics) and _plain(result.sanity) and _plain(result.reliability)
    names = {m["metric"] for m in result.metrics}
    assert {"clean_accuracy", "robust_accuracy", "ece"} <= names
    assert all(math.isfinite(m["value"]) for m in result.metrics)
    assert {o["check"] for o in result.sanity} and result.seeds is not None
    record = result.to_record()
    json.dumps(record, allow_nan=False)  # JSON-ready as it stands
    assert record["checks"] == result.sanity and record["key"] == suite.key(clean)
    # the record the executors hand the store is the same measurement
    assert _untimed(evaluate_cell(suite, clean)) == _untimed(record)


def test_a_failing_cell_is_a_failed_result_with_no_numbers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import poisonlab.harness.measure as measure

    def boom(*a: Any, **k: Any) -> Any:
        raise ValueError("a bug in someone's code")

    monkeypatch.setattr(measure, "train", boom)
    suite = parse_suite(SUITE)
    result = measure_cell(suite, next(iter(suite.cells())))
    assert result.status == "failed" and not result.ok
    assert result.error is not None and "ValueError" in result.error
    assert "a bug in someone's code" in result.error
    assert result.metrics == [] and result.sanity == [] and result.reliability is None
    record = result.to_record()
    assert "dataset_summary" not in record and record["status"] == "failed"
