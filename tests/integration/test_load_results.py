"""load_results and load_aggregates read every number of results.json, once, unchanged."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import poisonlab
from poisonlab import DataError, load_aggregates, load_results
from poisonlab.cli import main
from poisonlab.harness.results import AGGREGATE_COLUMNS, RESULT_COLUMNS, THREAT_COLUMNS

from .conftest import TINY, write_suite


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("load")
    suite = write_suite(root, TINY)
    assert main(["run", str(suite), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def doc_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


def same(a: Any, b: Any) -> bool:
    """Equal, with null in JSON read as NaN in the frame."""
    if a is None:
        return bool(pd.isna(b))
    return a == b


def check_round_trip(doc: dict[str, Any], df: pd.DataFrame) -> None:
    assert tuple(df.columns) == RESULT_COLUMNS
    assert len(df) == sum(max(1, len(c["metrics"])) for c in doc["cells"])
    rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in df.to_dict("records"):
        ident = (r["key"], r["metric"], r["threat"], r["attack"])
        ident = tuple(None if pd.isna(v) else v for v in ident)
        rows.setdefault(ident, []).append(r)
    seen = 0
    for c in doc["cells"]:
        for m in c["metrics"] or [None]:
            coords = (None, None, None) if m is None else (m["metric"], m["threat"], m["attack"])
            ident = (c["key"], *coords)
            (r,) = rows[ident]  # exactly once
            seen += 1
            poisoning = "none" if c["poisoning"] is None else c["poisoning"]["id"]
            assert (r["seed"], r["status"], r["poisoning"]) == (c["seed"], c["status"], poisoning)
            assert r["suite"] == doc["suite"]["name"]
            assert same(c["error"], r["error"])
            if m is None:
                assert math.isnan(r["value"]) and pd.isna(r["higher_is_better"])
            else:
                assert same(m["value"], r["value"]), ident
                assert r["higher_is_better"] == m["higher_is_better"]
    assert seen == len(df)


def test_every_metric_record_round_trips_once(run_dir: Path):
    doc = doc_of(run_dir)
    df = load_results(run_dir)
    check_round_trip(doc, df)
    assert set(df.metric) >= {"clean_accuracy", "robust_accuracy", "accuracy_drop"}
    assert set(df.poisoning) == {"none", "random 0.3"}
    assert set(df.defense) == {"none", "label_smoothing(eps=0.1)"}
    assert (df.status == "ok").all()
    assert str(df.value.dtype) == "float64" and str(df.seed.dtype) == "int64"
    assert str(df.higher_is_better.dtype) == "boolean"


def test_the_threat_is_in_numeric_columns(run_dir: Path):
    df = load_results(run_dir)
    assert tuple(df.columns[-len(THREAT_COLUMNS):]) == THREAT_COLUMNS
    assert str(df.eps.dtype) == "float64" and str(df.budget.dtype) == "float64"
    ra = df[df.metric == "robust_accuracy"]
    assert set(ra.eps) == {0.05, 0.2} and set(ra.norm) == {"linf"}
    assert not ra.targeted.any()
    assert set(zip(ra.poisoning, ra.budget, strict=True)) == {("none", 0.0), ("random 0.3", 0.3)}
    assert set(df[df.poisoning == "random 0.3"].strategy) == {"random"}
    assert df[df.metric == "clean_accuracy"].eps.isna().all()  # no evasion threat
    # filter numerically: the robust accuracy under the larger eps is the lower one
    by_eps = ra.groupby("eps").value.mean()
    assert by_eps[0.2] <= by_eps[0.05]
    agg = load_aggregates(run_dir)
    assert set(agg[agg.metric == "robust_accuracy"].eps) == {0.05, 0.2}
    assert set(agg.budget) == {0.0, 0.3}


def test_folder_and_file_give_the_same_tables(run_dir: Path):
    pd.testing.assert_frame_equal(load_results(run_dir), load_results(run_dir / "results.json"))
    pd.testing.assert_frame_equal(load_aggregates(str(run_dir)),
                                  load_aggregates(run_dir / "results.json"))


def test_aggregates_are_those_of_results_json(run_dir: Path):
    doc = doc_of(run_dir)
    agg = load_aggregates(run_dir)
    assert tuple(agg.columns) == AGGREGATE_COLUMNS
    assert len(agg) == len(doc["aggregates"])
    for a, r in zip(doc["aggregates"], agg.to_dict("records"), strict=True):
        for col in AGGREGATE_COLUMNS[2:-len(THREAT_COLUMNS)]:
            assert same(a[col], r[col]), (col, a)
        assert (r["suite"], r["suite_version"]) == (doc["suite"]["name"], doc["suite"]["version"])


def test_aggregates_are_the_mean_of_the_per_seed_rows(run_dir: Path):
    df = load_results(run_dir)
    agg = load_aggregates(run_dir)
    by = ["dataset", "model", "defense", "poisoning", "metric", "threat", "attack"]
    mean = df.groupby(by, dropna=False).value.mean().rename("expected").reset_index()
    both = agg.merge(mean, on=by, how="left", validate="one_to_one")
    assert not both.expected.isna().any()
    assert both["mean"].to_numpy() == pytest.approx(both.expected.to_numpy())


def test_nulls_and_failed_cells(run_dir: Path, tmp_path: Path):
    doc = copy.deepcopy(doc_of(run_dir))
    doc["cells"][0]["metrics"][1]["value"] = None
    doc["cells"][1].update(status="failed", error="training diverged", metrics=[])
    doc["aggregates"][0]["mean"] = doc["aggregates"][0]["std"] = None
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    df = load_results(path)
    check_round_trip(doc, df)
    (failed,) = df[df.key == doc["cells"][1]["key"]].to_dict("records")
    assert failed["status"] == "failed" and failed["error"] == "training diverged"
    assert math.isnan(failed["value"])
    assert df.value.isna().sum() == 2
    agg = load_aggregates(path)
    assert math.isnan(agg["mean"][0]) and math.isnan(agg["std"][0])


def test_exported_from_the_package():
    assert poisonlab.load_results is load_results
    assert "load_results" in poisonlab.__all__ and "load_aggregates" in poisonlab.__all__
    assert poisonlab.harness.load_results is load_results


@pytest.mark.parametrize("load", [load_results, load_aggregates])
def test_bad_paths_raise_one_line(load: Any, tmp_path: Path):
    cases: list[tuple[Path, str]] = [
        (tmp_path / "nope", r"path='.*nope' does not exist"),
        (tmp_path, r"holds no results\.json"),
    ]
    for name, text, pattern in [
        ("notjson.json", "{not json", r"is not a poisonlab results\.json: JSONDecodeError"),
        ("other.json", '{"a": 1}', r"schema_version=None, expected 1"),
        ("list.json", "[1, 2]", r"schema_version=None, expected 1"),
        ("future.json", '{"schema_version": 2}', r"schema_version=2, expected 1"),
    ]:
        (tmp_path / name).write_text(text)
        cases.append((tmp_path / name, pattern))
    for path, pattern in cases:
        with pytest.raises(DataError, match=pattern) as e:
            load(path)
        assert "\n" not in str(e.value)
        assert str(path.name) in str(e.value)
