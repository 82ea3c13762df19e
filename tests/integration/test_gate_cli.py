"""`poisonlab baseline` and `poisonlab check` end to end: exit codes, tables, summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poisonlab.cli import main
from poisonlab.harness.gate import IDENTITY

from ..unit.test_gate import ROBUST, SPREADS, make_doc, moved
from .conftest import write_suite

ROBUST_CELL = "digits/mlp/none/none @ linf eps=0.1 [pgd]"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path: Path, capsys) -> dict[str, Any]:
    """A results.json and the baseline `poisonlab baseline` made from it."""
    doc = make_doc(SPREADS)
    results = tmp_path / "run" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps(doc))
    baseline = tmp_path / "baseline.json"
    code, out, err = run(["baseline", str(results), "--out", str(baseline)], capsys)
    assert code == 0 and err == "" and str(baseline) in out
    return {"doc": doc, "results": results, "baseline": baseline, "tmp": tmp_path}


def tol_of(baseline: Path, ident: tuple[Any, ...]) -> float:
    entries = json.loads(baseline.read_text())["entries"]
    (e,) = [e for e in entries if tuple(e[k] for k in IDENTITY) == ident]
    return float(e["tolerance"])


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_check_of_the_same_run_passes(files, capsys):
    code, out, _ = run(["check", str(files["results"]), "--baseline", str(files["baseline"])],
                       capsys)
    assert code == 0 and "passed" in out and f"{len(SPREADS)} within" in out
    # a run folder works as well as its results.json
    assert run(["check", str(files["results"].parent), "--baseline",
                str(files["baseline"])], capsys)[0] == 0


def test_a_lowered_accuracy_exits_1_and_is_named(files, capsys):
    tol = tol_of(files["baseline"], ROBUST)
    worse = write(files["tmp"] / "worse.json", moved(files["doc"], ROBUST, -(tol + 0.01)))
    summary = files["tmp"] / "gate.md"
    code, out, _ = run(["check", str(worse), "--baseline", str(files["baseline"]),
                        "--summary", str(summary)], capsys)
    assert code == 1 and "FAILED" in out
    line = next(line for line in out.splitlines() if "regressed" in line and "|" not in line
                and "FAILED" not in line)
    assert line.startswith("robust_accuracy") and ROBUST_CELL in line
    md = summary.read_text()
    assert f"| robust_accuracy | {ROBUST_CELL} |" in md and "| regressed |" in md


def test_improvements_pass_unless_asked_to_fail(files, capsys):
    tol = tol_of(files["baseline"], ROBUST)
    better = write(files["tmp"] / "better.json", moved(files["doc"], ROBUST, tol + 0.01))
    args = ["check", str(better), "--baseline", str(files["baseline"])]
    code, out, _ = run(args, capsys)
    assert code == 0 and "improved" in out
    assert run([*args, "--fail-on-improvement"], capsys)[0] == 1


def test_github_step_summary_is_appended(files, capsys, monkeypatch):
    step = files["tmp"] / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    args = ["check", str(files["results"]), "--baseline", str(files["baseline"])]
    assert run(args, capsys)[0] == 0
    assert run(args, capsys)[0] == 0
    text = step.read_text()
    assert text.startswith("earlier step\n") and text.count("### poisonlab check") == 2


def test_all_lists_the_numbers_within_tolerance(files, capsys):
    code, out, _ = run(["check", str(files["results"]), "--baseline", str(files["baseline"]),
                        "--all"], capsys)
    assert code == 0 and out.count(" within") >= len(SPREADS)


def test_baseline_options_reach_the_rule(files, capsys):
    out_path = files["tmp"] / "b3.json"
    code, _, _ = run(["baseline", str(files["results"]), "--out", str(out_path), "--k", "2",
                      "--floor", "0"], capsys)
    base = json.loads(out_path.read_text())
    assert code == 0 and base["rule"]["k"] == 2.0 and base["rule"]["floor"] == 0.0
    assert all(e["floor"] == 0.0 for e in base["entries"])


@pytest.mark.parametrize(("make_args", "pattern"), [
    (lambda f: ["check", str(f["baseline"]), "--baseline", str(f["baseline"])],
     "is a poisonlab baseline"),
    (lambda f: ["check", str(f["results"]), "--baseline", str(f["results"])],
     "is a results.json, not a baseline"),
    (lambda f: ["check", str(f["tmp"] / "nope.json"), "--baseline", str(f["baseline"])],
     "does not exist"),
    (lambda f: ["check", str(f["junk"]), "--baseline", str(f["baseline"])],
     "is not a JSON file"),
    (lambda f: ["baseline", str(f["results"]), "--out", str(f["tmp"] / "b.json"), "--k", "-1"],
     "k=-1.0 is not allowed: expected a number > 0"),
    (lambda f: ["baseline", str(f["results"]), "--out", str(f["tmp"])], "is a folder"),
    (lambda f: ["baseline", str(f["tolerances"]), "--out", str(f["tmp"] / "b.json")],
     "did you mean 'ece'"),
    (lambda f: ["check", str(f["results"]), "--baseline", str(f["baseline"]), "--summary",
                str(f["tmp"] / "no" / "dir" / "s.md")], "cannot be written"),
])
def test_bad_input_is_one_line_and_exit_2(files, capsys, make_args, pattern):
    files["junk"] = files["tmp"] / "junk.json"
    files["junk"].write_text("{")
    files["tolerances"] = write(files["tmp"] / "tol.json",
                                make_doc(SPREADS, tolerances={"eec": {"floor": 0.1}}))
    code, out, err = run(make_args(files), capsys)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("poisonlab: error: ") and pattern in err
    assert "Traceback" not in err
    assert not (files["tmp"] / "b.json").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["check", "results.json"])
    assert e.value.code == 2 and "--baseline" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_run_passes_against_its_own_baseline(tmp_path: Path, capsys):
    """A results.json written by `poisonlab run` (not a synthetic one) goes through."""
    suite = {
        "name": "gate-tiny", "version": 1, "description": "the gate on a real run",
        "datasets": [{"name": "blobs", "n_samples": 200}],
        "models": [{"name": "mlp", "hidden": [8]}],
        "training": {"epochs": 3, "batch_size": 32, "lr": 0.01},
        "defenses": ["none"],
        "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.2}],
                         "evasion": [{"norm": "linf", "eps": [0.1]}]},
        "attacks": ["fgsm"], "seeds": [0, 1], "offmanifold": {"n_noise": 50},
    }
    path = write_suite(tmp_path, suite)
    out = tmp_path / "run"
    assert run(["run", str(path), "--out", str(out), "--quiet"], capsys)[0] == 0
    base = tmp_path / "baseline.json"
    assert run(["baseline", str(out), "--out", str(base)], capsys)[0] == 0
    baseline = json.loads(base.read_text())
    metrics = {e["metric"] for e in baseline["entries"]}
    assert {"clean_accuracy", "robust_accuracy", "accuracy_drop"} <= metrics
    assert baseline["rule"]["n_test"]  # read from the cells' dataset summaries
    code, stdout, _ = run(["check", str(out), "--baseline", str(base)], capsys)
    assert code == 0 and "passed" in stdout
