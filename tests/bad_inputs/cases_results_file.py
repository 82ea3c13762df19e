"""results.json and baseline files handed to ``poisonlab check`` / ``poisonlab baseline``,
load_results_doc, load_baseline and read_results."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poisonlab.errors import DataError
from poisonlab.harness.gate import load_baseline, load_results_doc, make_baseline
from poisonlab.harness.results import load_aggregates, load_results, read_results

from .harness import Case, cli_case

AGG: dict[str, Any] = {"dataset": "blobs", "model": "mlp", "defense": "none",
                       "poisoning": "none", "metric": "clean_accuracy", "threat": None,
                       "attack": None, "mean": 0.9, "std": 0.01, "n": 3, "n_failed": 0,
                       "higher_is_better": True}
CELL_NO_KEY: dict[str, Any] = {"dataset": {"name": "blobs"}, "model": {"name": "mlp"},
                               "defense": {"name": "none"}, "poisoning": None, "seed": 0,
                               "status": "ok", "metrics": []}
#: The least results document the gate reads.
RESULTS: dict[str, Any] = {"schema_version": 1, "suite": {"name": "s", "version": 1},
                           "environment": {}, "cells": [], "aggregates": [AGG]}


def results(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(RESULTS)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return d


def aggregate(**changes: Any) -> dict[str, Any]:
    return results(aggregates=[{**AGG, **changes}])


def baseline(**entry_changes: Any) -> dict[str, Any]:
    base = make_baseline(RESULTS)
    base["entries"][0].update(entry_changes)
    return base


def _dump(doc: Any) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc)


def _write(tmp: Path, content: Any, name: str) -> Path:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(_dump(content))
    return path


def check(what: str, res: Any, base: Any, match: str) -> Case:
    """``poisonlab check RESULTS --baseline BASELINE``."""
    return cli_case("results file", f"check: {what}", lambda tmp: [
        "check", _write(tmp, res, "results.json"), "--baseline",
        _write(tmp, base, "baseline.json")], match)


def make(what: str, res: Any, match: str) -> Case:
    """``poisonlab baseline RESULTS --out BASELINE``."""
    return cli_case("results file", f"baseline: {what}", lambda tmp: [
        "baseline", _write(tmp, res, "results.json"), "--out", tmp / "baseline.json"], match)


def api(what: str, fn: Callable[[Path], Any], content: Any, match: str) -> Case:
    def call(tmp: Path) -> Any:
        return fn(_write(tmp, content, "doc.json"))
    return Case("results file", what, call, DataError, match)


CASES = [
    make("an empty file", "", r"results='.*' is not a JSON file: JSONDecodeError: Expecting "
         r"value: line 1 column 1"),
    make("malformed JSON", '{"schema_version": 1,', r"results='.*' is not a JSON file: "
         r"JSONDecodeError"),
    make("non-UTF-8 bytes", b"\xff\xfe{}", r"results='.*' is not a JSON file: "
         r"UnicodeDecodeError"),
    make("a JSON list", [1, 2], r"results '.*' is a list: expected a poisonlab results "
         r"document"),
    make("a JSON number", "3", r"results '.*' is a int: expected a poisonlab results"),
    make("schema_version 2", results(schema_version=2),
         r"is not a poisonlab results\.json: schema_version=2, expected 1"),
    make("no schema_version", results(schema_version=...),
         r"is not a poisonlab results\.json: schema_version=None"),
    make("no aggregates", results(aggregates=...), r"expected 1 with 'aggregates'"),
    make("aggregates: a mapping", results(aggregates={}),
         r"results '.*'\.aggregates=\{\} is not allowed: expected a list"),
    make("no suite", results(suite=...), r"results '.*' has no 'suite': expected a mapping"),
    make("suite name: a number", results(suite={"name": 3, "version": 1}),
         r"\.suite\.name=3 is not allowed: expected a string"),
    make("suite version: true", results(suite={"name": "s", "version": True}),
         r"\.suite\.version=True is not allowed: expected an integer"),
    make("no environment", results(environment=...), r"has no 'environment'"),
    make("an aggregate that is a string", results(aggregates=["x"]),
         r"\.aggregates\[0\]='x' is not allowed: expected a mapping"),
    make("an aggregate without a metric", results(aggregates=[
        {k: v for k, v in AGG.items() if k != "metric"}]),
        r"\.aggregates\[0\] has no 'metric': expected a string"),
    make("an aggregate mean: NaN", aggregate(mean=float("nan")),
         r"\.aggregates\[0\]\.mean=nan is not allowed: expected a number or null"),
    make("an aggregate mean: '0.9' (a string)", aggregate(mean="0.9"),
         r"\.aggregates\[0\]\.mean='0\.9' is not allowed: expected a number or null"),
    make("an aggregate std: -1", aggregate(std=-1),
         r"\.aggregates\[0\]\.std=-1 is not allowed: expected a number >= 0 or null"),
    make("an aggregate n: 1.5", aggregate(n=1.5),
         r"\.aggregates\[0\]\.n=1\.5 is not allowed: expected an integer >= 0"),
    make("an aggregate higher_is_better: 1", aggregate(higher_is_better=1),
         r"\.aggregates\[0\]\.higher_is_better=1 is not allowed: expected true, false or "
         r"null"),
    make("the same aggregate twice", results(aggregates=[AGG, AGG]),
         r"\.aggregates\[1\] repeats aggregates\[0\]"),
    check("a baseline of another kind", RESULTS, {**baseline(), "kind": "other"},
          r"is not a poisonlab baseline: kind='other', expected 'poisonlab-baseline'"),
    make("a baseline instead of results", make_baseline(RESULTS),
         r"results '.*' is a poisonlab baseline: expected a results\.json"),
    check("a baseline that is an empty file", RESULTS, "",
          r"baseline='.*' is not a JSON file: JSONDecodeError"),
    check("a baseline that is a JSON list", RESULTS, [],
          r"baseline '.*' is a list: expected a poisonlab baseline"),
    check("a results.json instead of a baseline", RESULTS, {**RESULTS, "cells": []},
          r"baseline '.*' is a results\.json, not a baseline: make one with 'poisonlab "
          r"baseline"),
    check("a baseline of schema_version 9", RESULTS, {**baseline(), "schema_version": 9},
          r"baseline '.*': schema_version=9 is not supported: expected 1"),
    check("a baseline entry value: NaN", RESULTS, baseline(value=float("nan")),
          r"baseline '.*'\.entries\[0\]\.value=nan is not allowed: expected a finite number"),
    check("a baseline entry value: Infinity", RESULTS, baseline(value=float("inf")),
          r"\.entries\[0\]\.value=inf is not allowed: expected a finite number"),
    check("a baseline entry tolerance: -0.1", RESULTS, baseline(tolerance=-0.1),
          r"\.entries\[0\]\.tolerance=-0\.1 is not allowed: expected a number >= 0"),
    check("a baseline entry n: 0", RESULTS, baseline(n=0),
          r"\.entries\[0\]\.n=0 is not allowed: expected an integer >= 1"),
    check("a baseline entry k: 0", RESULTS, baseline(k=0),
          r"\.entries\[0\]\.k=0 is not allowed: expected a number > 0"),
    check("a baseline without entries", RESULTS,
          {k: v for k, v in baseline().items() if k != "entries"},
          r"baseline '.*' has no 'entries': expected a list"),
    cli_case("results file", "check: a baseline that does not exist", lambda tmp: [
        "check", _write(tmp, RESULTS, "results.json"), "--baseline", tmp / "nope.json"],
        r"baseline='.*/nope\.json' does not exist: expected a JSON file"),
    cli_case("results file", "check: a folder as the baseline", lambda tmp: [
        "check", _write(tmp, RESULTS, "results.json"), "--baseline", tmp],
        r"baseline='.*' is a folder: expected a JSON file"),
    check("results.json with schema_version 0", results(schema_version=0), baseline(),
          r"is not a poisonlab results\.json: schema_version=0"),
    api("load_results_doc on a JSON string", load_results_doc, '"results"',
        r"results '.*' is a str: expected a poisonlab results document"),
    api("load_baseline on non-UTF-8 bytes", load_baseline, b"\x80",
        r"baseline='.*' is not a JSON file: UnicodeDecodeError"),
    api("load_baseline on a JSON null", load_baseline, "null",
        r"baseline '.*' is a NoneType: expected a poisonlab baseline"),
    api("read_results on an empty file", read_results, "",
        r"path='.*' is not a poisonlab results\.json: JSONDecodeError"),
    api("read_results on a results.json of schema_version 2", read_results,
        results(schema_version=2), r"schema_version=2, expected 1"),
    api("load_results on a results.json without suite", load_results, results(suite=...),
        r"path='.*' has no 'suite': expected a mapping"),
    api("load_results on a cell without its key", load_results, results(cells=[CELL_NO_KEY]),
        r"path='.*': cells\[0\] has no 'key': expected it as 'poisonlab run' writes it"),
    api("load_results on a cell whose seed is a string", load_results,
        results(cells=[{**CELL_NO_KEY, "key": "k", "seed": "zero"}]),
        r"path='.*': a column is malformed \(.*zero"),
    api("load_results on cells: null", load_results, results(cells=None),
        r"path='.*': cells=None is not allowed: expected a list"),
    api("load_aggregates on an aggregate without n_failed", load_aggregates,
        results(aggregates=[{k: v for k, v in AGG.items() if k != "n_failed"}]),
        r"path='.*': aggregates\[0\] has no 'n_failed'"),
    Case("results file", "read_results on a folder without results.json",
         lambda tmp: read_results(tmp), DataError,
         r"path='.*' holds no results\.json: expected a folder written by 'poisonlab run'"),
]
