"""Certified robustness in a suite (issue 22), end to end through the CLI: the dpa cells
record certified accuracy and their curve, the report draws it beside the accuracy under
the label-flip attacks, and the certificate check holds (and flags a broken one)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from poisonlab.harness.certified import check_certificates, flip_counts
from poisonlab.harness.store import STORE_NAME, Store
from poisonlab.harness.suite import parse_suite

from .conftest import ROOT, write_suite
from .test_cli import run, schema

SUITE: dict[str, Any] = {
    "name": "tiny-certified",
    "version": 1,
    "description": "DPA against plain training under random label flips on digits",
    "datasets": ["digits"],
    "models": ["logistic"],
    "training": {"epochs": 10, "batch_size": 64, "lr": 0.001},
    "defenses": ["none", {"name": "dpa", "k": 20, "features": "pca", "n_components": 20,
                          "epochs": 40}],
    "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.003},
                                   {"strategy": "margin", "rate": 0.005}]},
    "certified": {"flips": [1, 0.004]},
    "seeds": [0, 1],
    "metrics": ["accuracy", "poisoning"],
}


@pytest.fixture(scope="module")
def certified_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("certified")
    out = tmp / "run"
    from poisonlab.cli import main

    assert main(["run", str(write_suite(tmp, SUITE)), "--out", str(out), "--quiet"]) == 0
    return out


def _cells(doc: dict[str, Any], defense: str) -> list[dict[str, Any]]:
    cells = [c for c in doc["cells"] if c["defense"]["name"] == defense]
    assert len(cells) == 6  # clean + 2 poisonings, 2 seeds
    return cells


def test_dpa_cells_record_their_certificates(certified_run: Path) -> None:
    doc = json.loads((certified_run / "results.json").read_text())
    jsonschema.validate(doc, schema())
    assert doc["n_failed"] == 0
    n_train = doc["cells"][0]["dataset_summary"]["n_train"]
    want = flip_counts((1, 0.004), [0.003, 0.005], n_train)
    for c in _cells(doc, "dpa"):
        got = {m["threat"]: m["value"] for m in c["metrics"]
               if m["metric"] == "certified_accuracy"}
        assert sorted(got) == sorted(f"flips={r}" for r in want)
        curve = c["certified"]
        assert curve["k"] == 20 and curve["d"] == 1 and curve["n_train"] == n_train
        assert curve["flips"] == list(range(len(curve["flips"])))
        for r, v in got.items():  # the metrics are points of the stored curve
            i = int(r.split("=")[1])
            assert v == (curve["accuracy"][i] if i < len(curve["accuracy"]) else 0.0)
        acc = next(m["value"] for m in c["metrics"] if m["metric"] == "clean_accuracy")
        assert curve["accuracy"][0] == pytest.approx(acc)
        assert curve["accuracy"] == sorted(curve["accuracy"], reverse=True)
        if c["poisoning"] is not None:  # the attack never beats the certificate
            (check,) = [o for o in c["checks"] if o["check"] == "certificate_holds"]
            assert check["status"] == "pass" and check["evidence"]["broken"] == 0
            assert check["evidence"]["flips"] == c["poisoning_info"]["n_flipped"]
    for c in _cells(doc, "none"):  # no certificate without partition aggregation
        assert "certified" not in c
        assert not any(m["metric"] == "certified_accuracy" for m in c["metrics"])


def test_the_report_draws_and_tabulates_the_certified_curve(certified_run: Path) -> None:
    md = (certified_run / "report.md").read_text()
    assert "## Certified robustness to label flips" in md
    assert "every certificate held in 4 attacked cells" in md
    assert (certified_run / "figures" / "certified_0_digits-logistic.png").stat().st_size
    section = md.split("\n## Certified robustness to label flips\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| dpa")]
    assert len(rows) == 3 and all(line.rstrip(" |").endswith(("yes", "")) for line in rows)
    html = (certified_run / "report.html").read_text()
    assert "Certified robustness to label flips" in html


def test_a_broken_certificate_is_flagged(certified_run: Path) -> None:
    with Store(certified_run / STORE_NAME) as store:
        records = store.records()
    dpa = [r for r in records if r["defense"]["name"] == "dpa"]
    poisoned = next(r for r in dpa if r["poisoning"] is not None)
    clean = next(r for r in dpa if r["poisoning"] is None and r["seed"] == poisoned["seed"])
    certified = [i for i, rad in enumerate(clean["internal"]["certified_radii"])
                 if rad >= poisoned["poisoning_info"]["n_flipped"]]
    y = poisoned["internal"]["y_test"]
    broken = copy.deepcopy(poisoned)
    broken["internal"]["pred_clean"][certified[0]] = (y[certified[0]] + 1) % 10
    check_certificates([clean, broken])
    (check,) = [o for o in broken["checks"] if o["check"] == "certificate_holds"]
    assert check["status"] == "flag" and check["evidence"]["broken"] == 1
    assert "certificate is broken" in check["message"]
    check_certificates([clean, broken])  # runs again without adding a second check
    assert sum(o["check"] == "certificate_holds" for o in broken["checks"]) == 1


@pytest.mark.parametrize("certified, match", [
    ({"flips": []}, r"certified.flips=\[\] is not allowed"),
    ({"flips": [-1]}, r"certified.flips\[0\]=-1 is not allowed"),
    ({"flips": [1.5]}, r"certified.flips\[0\]=1.5 is not allowed"),
    ({"radius": [1]}, "certified=.* is not allowed"),
])
def test_bad_certified_settings_name_the_field(tmp_path: Path, capsys: Any,
                                               certified: Any, match: str) -> None:
    path = write_suite(tmp_path, {**SUITE, "certified": certified})
    code, _, err = run(["validate", str(path)], capsys)
    assert code == 2
    assert re.search(match, err), err


def test_the_shipped_certified_suite_parses_and_names_its_budgets() -> None:
    raw = yaml.safe_load((ROOT / "benchmarks" / "suites" / "certified.yaml").read_text())
    suite = parse_suite(raw)
    assert [d.name for d in suite.defenses].count("dpa") == 4
    assert suite.certified_flips == tuple(raw["certified"]["flips"])


def test_load_results_gives_the_radius_as_a_number(certified_run: Path) -> None:
    import poisonlab as pl

    df = pl.load_results(certified_run)
    cert = df[df.metric == "certified_accuracy"]
    assert len(cert) > 0 and cert.flips.notna().all()
    assert (cert.flips == cert.threat.str.removeprefix("flips=").astype(float)).all()
    assert df[df.metric != "certified_accuracy"].flips.isna().all()
    agg = pl.load_aggregates(certified_run)
    at = agg[(agg.metric == "certified_accuracy") & (agg.poisoning == "none")]
    assert sorted(set(at.flips)) == sorted(set(cert.flips))
