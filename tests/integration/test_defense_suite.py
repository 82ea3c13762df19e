"""Composed, post-hoc and distillation defenses in a suite, end to end through the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema

from poisonlab.harness import measure as evaluate

from .conftest import TINY, write_suite
from .test_cli import run, schema, stable

COMPOSED = {"name": "compose", "defenses": ["knn_sanitize",
                                           {"name": "label_smoothing", "eps": 0.1}]}
DISTILL = {"name": "distillation", "T": 2.0, "teacher": {"defense": "label_smoothing"}}
SUITE: dict[str, Any] = {
    **copy.deepcopy(TINY),
    "name": "tiny-defenses",
    "description": "a composed defense, temperature scaling and distillation on blobs",
    "defenses": ["none", COMPOSED, "temperature_scaling", DISTILL],
    "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.3}],
                     "evasion": [{"norm": "linf", "eps": [0.1]}]},
    "attacks": [{"name": "pgd", "steps": 5}],
    "seeds": [0],
    "metrics": ["accuracy", "evasion", "poisoning", "calibration"],
}


def _metrics(doc: dict[str, Any], defense_name: str, poisoning: str | None,
             metric: str) -> float:
    for c in doc["cells"]:
        p = c["poisoning"]["id"] if c["poisoning"] else None
        if c["defense"]["name"] == defense_name and p == poisoning:
            return next(m["value"] for m in c["metrics"] if m["metric"] == metric)
    raise KeyError(defense_name)


def test_defense_suite_runs_is_deterministic_and_records_every_parameter(
    tmp_path: Path, capsys
) -> None:
    path = write_suite(tmp_path, SUITE)
    docs = []
    for i in range(2):
        evaluate._SURROGATES.clear()
        assert run(["run", str(path), "--out", str(tmp_path / f"r{i}"), "--quiet"],
                   capsys)[0] == 0
        docs.append(json.loads((tmp_path / f"r{i}" / "results.json").read_text()))
    assert stable(docs[0]) == stable(docs[1])
    doc = docs[0]
    jsonschema.validate(doc, schema())
    assert doc["n_failed"] == 0, [c["error"] for c in doc["cells"] if c["error"]]
    composed = next(c for c in doc["cells"] if c["defense"]["name"] == "compose")
    assert composed["defense"]["params"]["defenses"][1] == {"name": "label_smoothing",
                                                            "eps": 0.1}
    # temperature scaling never changes a prediction: same accuracy as the plain model
    for p in (None, "random 0.3"):
        assert _metrics(doc, "temperature_scaling", p, "clean_accuracy") == _metrics(
            doc, "none", p, "clean_accuracy")
    report = (tmp_path / "r0" / "report.md").read_text()
    assert "compose(defenses=[knn_sanitize, label_smoothing(eps=0.1)])" in report
