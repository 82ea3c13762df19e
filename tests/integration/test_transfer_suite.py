"""A suite with a transfer attack and a DLR-loss PGD, end to end through the CLI.

The harness trains a transfer attack's surrogate once per (dataset, seed, ...) and keeps it
in ``poisonlab.harness.measure._SURROGATES``; training is deterministic, so the cache may
change the time of a run but never a number.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from poisonlab import load_dataset
from poisonlab._text import spec_label
from poisonlab.harness import measure as evaluate

from .conftest import TINY, write_suite
from .test_cli import run, schema, stable

TRANSFER = {"name": "transfer", "attack": {"name": "pgd", "steps": 10}}
DLR = {"name": "pgd", "loss": "dlr"}
SUITE: dict[str, Any] = {
    **copy.deepcopy(TINY),
    "name": "tiny-transfer",
    "description": "white-box PGD, transfer PGD and DLR PGD on 3-class blobs",
    "threat_model": {"evasion": [{"norm": "linf", "eps": [0.05, 0.2]}]},
    "attacks": ["pgd", TRANSFER, DLR],
    "seeds": [0],
    "metrics": ["accuracy", "evasion"],
}
THREATS = {"linf eps=0.05", "linf eps=0.2"}


def _label(spec: dict[str, Any]) -> str:
    params = {k: v for k, v in spec.items() if k != "name"}
    return spec_label({"name": spec["name"], "params": params})


def _robust(doc: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """robust_accuracy by (defense, attack label, threat)."""
    return {(c["defense"]["name"], m["attack"], m["threat"]): m["value"]
            for c in doc["cells"] for m in c["metrics"] if m["metric"] == "robust_accuracy"}


def test_blobs_has_enough_classes_for_dlr() -> None:
    params = dict(SUITE["datasets"][0])
    ds = load_dataset(params.pop("name"), seed=0, **params)
    assert ds.n_classes >= 3


def test_a_transfer_suite_runs_and_is_deterministic_with_or_without_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trainings: list[int] = []
    real_train = evaluate.train

    def counting_train(*args: Any, **kwargs: Any) -> Any:
        trainings.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(evaluate, "train", counting_train)
    path = write_suite(tmp_path, SUITE)
    docs = []
    # cold cache, warm cache (the first run's surrogate reused), cold again
    for name, clear, n_trained in (("cold", True, 3), ("warm", False, 2), ("cleared", True, 3)):
        if clear:
            evaluate._SURROGATES.clear()
        trainings.clear()
        code, _, err = run(["run", str(path), "--out", str(tmp_path / name), "--quiet"],
                           capsys)
        assert code == 0, err
        # two target models, plus the one surrogate both cells share unless it was cached
        assert len(trainings) == n_trained, name
        docs.append(json.loads((tmp_path / name / "results.json").read_text()))
    jsonschema.validate(docs[0], schema())
    assert docs[0]["n_cells"] == 2 and docs[0]["n_failed"] == 0
    robust = _robust(docs[0])
    transfer, dlr = _label(TRANSFER), _label(DLR)
    for defense in ("none", "label_smoothing"):
        for threat in THREATS:
            for attack in ("pgd", transfer, dlr, "worst-case"):
                assert 0.0 <= robust[(defense, attack, threat)] <= 1.0
            worst = robust[(defense, "worst-case", threat)]
            assert worst <= min(robust[(defense, a, threat)] for a in ("pgd", transfer, dlr))
    assert stable(docs[0]) == stable(docs[1]) == stable(docs[2])


BAD_SURROGATES = [
    ({"modle": "mlp"}, r"did you mean 'model'"),
    ({"model": "mlpp"}, r"did you mean 'mlp'"),
    ({"defense": "label_smothing"}, r"did you mean 'label_smoothing'"),
    ({"seed": -1}, r"surrogate\.seed=-1"),
]


@pytest.mark.parametrize(("surrogate", "pattern"), BAD_SURROGATES,
                         ids=["key", "model", "defense", "seed"])
def test_validate_names_the_attack_with_a_bad_surrogate(
    surrogate: dict[str, Any], pattern: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    suite = {**copy.deepcopy(SUITE), "attacks": ["pgd", {**TRANSFER, "surrogate": surrogate}]}
    code, _, err = run(["validate", str(write_suite(tmp_path, suite))], capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("poisonlab: error: attacks[1]: "), err
    assert re.search(pattern, err), err
    assert "Traceback" not in err


def test_validate_accepts_a_declared_surrogate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    surrogate = {"model": {"name": "mlp", "hidden": [8]},
                 "defense": {"name": "label_smoothing", "eps": 0.1}, "seed": 3}
    suite = {**copy.deepcopy(SUITE), "attacks": ["pgd", {**TRANSFER, "surrogate": surrogate}]}
    code, out, err = run(["validate", str(write_suite(tmp_path, suite))], capsys)
    assert code == 0, err
    assert "2 cells" in out
