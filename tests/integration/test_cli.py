"""The poisonlab command end to end: runs, results, reports, exit codes, bad input."""

from __future__ import annotations

import copy
import json
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from poisonlab.cli import main

from .conftest import TINY, write_suite

VOLATILE = ("created", "timing")


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    """results.json without the fields that legitimately differ between runs."""
    doc = copy.deepcopy(doc)
    doc.pop("created")
    doc["environment"].pop("executors", None)  # which executor ran the cells
    for c in doc["cells"]:
        c.pop("timing")
    return doc


def schema() -> dict[str, Any]:
    text = resources.files("poisonlab").joinpath("schemas/results.schema.json").read_text()
    return json.loads(text)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_valid_results_and_reports(tiny_suite: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(["run", str(tiny_suite), "--out", str(out)], capsys)
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    jsonschema.validate(doc, schema())
    # 2 defenses x (clean + 1 poisoning) x 2 seeds
    assert doc["n_cells"] == 8 and doc["n_failed"] == 0
    assert {c["seed"] for c in doc["cells"]} == {0, 1}
    for c in doc["cells"]:
        assert c["status"] == "ok"
        threats = {m["threat"] for m in c["metrics"] if m["metric"] == "robust_accuracy"}
        assert threats == {"linf eps=0.05", "linf eps=0.2"}
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "## Threat model" in md and "What the numbers say" in md
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert sorted(f.split("_0_")[0] for f in figs) == [
        "offmanifold_confidence", "poisoning_vs_flip_rate", "reliability", "robust_vs_eps"]
    for name in figs:
        assert f"figures/{name}" in md
    assert html.count("data:image/png;base64,") == len(figs)
    assert "report.html" in stdout and "clean acc" in stdout


def test_same_suite_twice_gives_identical_numbers(tiny_suite: Path, tmp_path: Path, capsys):
    docs = []
    for name in ("a", "b"):
        assert run(["run", str(tiny_suite), "--out", str(tmp_path / name), "--quiet"],
                   capsys)[0] == 0
        docs.append(json.loads((tmp_path / name / "results.json").read_text()))
    assert stable(docs[0]) == stable(docs[1])


def test_poisoning_metrics_are_derived_from_the_matching_clean_cell(
    tiny_suite: Path, tmp_path: Path, capsys
):
    assert run(["run", str(tiny_suite), "--out", str(tmp_path / "r"), "--quiet"], capsys)[0] == 0
    doc = json.loads((tmp_path / "r" / "results.json").read_text())

    def value(cell: dict[str, Any], metric: str) -> float:
        (m,) = [m for m in cell["metrics"] if m["metric"] == metric]
        return m["value"]

    clean = {(c["defense"]["name"], c["seed"]): c for c in doc["cells"] if not c["poisoning"]}
    poisoned = [c for c in doc["cells"] if c["poisoning"]]
    assert poisoned
    for c in poisoned:
        ref = clean[(c["defense"]["name"], c["seed"])]
        expected = value(ref, "clean_accuracy") - value(c, "clean_accuracy")
        assert value(c, "accuracy_drop") == pytest.approx(expected, abs=1e-12)
        n_train = c["dataset_summary"]["n_train"]
        assert value(c, "n_flipped") == round(0.3 * n_train)


def test_worst_case_is_no_better_than_any_single_attack(tiny_suite: Path, tmp_path: Path,
                                                        capsys):
    assert run(["run", str(tiny_suite), "--out", str(tmp_path / "r"), "--quiet"], capsys)[0] == 0
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    for c in doc["cells"]:
        by: dict[str, dict[str, float]] = {}
        for m in c["metrics"]:
            if m["metric"] == "robust_accuracy":
                by.setdefault(m["threat"], {})[m["attack"]] = m["value"]
        for threat, vals in by.items():
            worst = vals.pop("worst-case")
            assert worst <= min(vals.values()) + 1e-12, threat
            clean = next(m["value"] for m in c["metrics"] if m["metric"] == "clean_accuracy")
            assert worst <= clean


def test_aggregates_are_mean_std_n_over_seeds(tiny_suite: Path, tmp_path: Path, capsys):
    assert run(["run", str(tiny_suite), "--out", str(tmp_path / "r"), "--quiet"], capsys)[0] == 0
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    values = [m["value"] for c in doc["cells"] if c["defense"]["name"] == "none"
              and c["poisoning"] is None for m in c["metrics"] if m["metric"] == "ece"]
    (agg,) = [a for a in doc["aggregates"] if a["defense"] == "none"
              and a["poisoning"] == "none" and a["metric"] == "ece"]
    assert agg["n"] == 2
    assert agg["mean"] == pytest.approx(sum(values) / 2)
    assert agg["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)


def test_resume_finishes_a_partial_run_with_identical_results(
    tiny_suite: Path, tmp_path: Path, capsys
):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(["run", str(tiny_suite), "--out", str(full), "--quiet"], capsys)[0] == 0
    assert run(["run", str(tiny_suite), "--out", str(part), "--quiet"], capsys)[0] == 0
    with sqlite3.connect(part / "results.sqlite") as conn:  # lose half the cells
        conn.execute("DELETE FROM cells WHERE position % 2 = 1")
    code = run(["run", str(tiny_suite), "--out", str(part), "--resume", "--quiet"], capsys)[0]
    assert code == 0
    a = json.loads((full / "results.json").read_text())
    b = json.loads((part / "results.json").read_text())
    assert stable(a) == stable(b)


def test_existing_run_folder_is_kept_without_resume(tiny_suite: Path, tmp_path: Path, capsys):
    out = tmp_path / "r"
    assert run(["run", str(tiny_suite), "--out", str(out), "--quiet"], capsys)[0] == 0
    before = (out / "results.json").read_bytes()
    code, _, err = run(["run", str(tiny_suite), "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "--resume" in err
    assert (out / "results.json").read_bytes() == before


def test_report_regenerates_from_the_store(tiny_suite: Path, tmp_path: Path, capsys):
    out = tmp_path / "r"
    assert run(["run", str(tiny_suite), "--out", str(out), "--quiet"], capsys)[0] == 0
    before = stable(json.loads((out / "results.json").read_text()))
    (out / "results.json").unlink()
    (out / "report.html").unlink()
    assert run(["report", str(out)], capsys)[0] == 0
    assert stable(json.loads((out / "results.json").read_text())) == before
    assert (out / "report.html").exists()


def test_validate_and_list(tiny_suite: Path, capsys):
    code, out, _ = run(["validate", str(tiny_suite)], capsys)
    assert code == 0 and "8 cells" in out
    code, out, _ = run(["list", "defenses"], capsys)
    assert code == 0
    for name in ("none", "flip_augment", "label_smoothing", "confidence_penalty"):
        assert name in out


def _bad(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(TINY)
    for k, v in changes.items():
        d[k] = v
    return d


BAD_SUITES = [
    (_bad(defenses=["none", "label_smothing"]), r"defenses\[1\].*did you mean 'label_smoothing'"),
    (_bad(datasets=["digitz"]), r"datasets\[0\].*did you mean 'digits'"),
    (_bad(models=["mlpp"]), r"models\[0\].*did you mean 'mlp'"),
    (_bad(attacks=["pgdd"]), r"attacks\[0\].*did you mean 'pgd'"),
    (_bad(defenses=[{"name": "flip_augment", "alpha": 1.5}]), r"defenses\[0\].*alpha=1\.5"),
    (_bad(defenses=[{"name": "label_smoothing", "epsilon": 0.1}]),
     r"unknown parameter 'epsilon'.*did you mean 'eps'"),
    (_bad(threat_model={"poisoning": [{"strategy": "random", "rate": 1.0}]},
          attacks=[]), r"poisoning\[0\].*rate=1\.0"),
    (_bad(threat_model={"evasion": [{"norm": "linf", "eps": [-0.1]}]}), r"eps=-0\.1"),
    (_bad(threat_model={"evasion": [{"norm": "l3", "eps": [0.1]}]}), r"norm='l3'"),
    (_bad(seeds=[]), r"seeds"),
    (_bad(seeds=[0, 0]), r"seeds\[1\].*twice"),
    (_bad(defenses=["none", "none"]), r"defenses\[1\].*twice"),
    (_bad(attacks=[{"name": "pgd", "steps": 0}]), r"steps=0"),
    (_bad(training={"epochs": 5, "lr": -1}), r"training.*lr=-1"),
    (_bad(metrics=["calibraton"]), r"did you mean 'calibration'"),
    ({**TINY, "seedz": [0]}, r"unknown suite key 'seedz'.*did you mean 'seeds'"),
    (_bad(threat_model={"evasion": [{"norm": "linf", "eps": [0.1], "targeted": True}]},
          attacks=["pgd", "square"]), r"attacks\[1\].*for square.*untargeted only"),
    (_bad(attacks=["foolbox:L2PGD"]), r"attacks\[0\].*did you mean 'foolbox:LinfPGD'"),
    (_bad(attacks=["art:ProjectedGradientDecent"]),
     r"attacks\[0\].*did you mean 'art:ProjectedGradientDescent'"),
    (_bad(attacks=[{"name": "transfer", "surrogate": {"defence": "none"}}]),
     r"attacks\[0\].*unknown key 'defence'.*did you mean 'defense'"),
    (_bad(threat_model={"poisoning": [{"strategy": "noise_matrix", "rate": 0.1,
                                       "noise_matrix": [[1, 0], [0, 1]]}]}, attacks=[]),
     r"poisoning\[0\].*noise_matrix"),
    (_bad(threat_model={"poisoning": [{"strategy": "adversarial", "rate": 0.1,
                                       "max_per_class": 1.5}]}, attacks=[]),
     r"poisoning\[0\].*max_per_class=1\.5"),
    ("name: x\ndatasets: [digits\n", r"malformed YAML at line"),
    ("- just\n- a list\n", r"expected a mapping"),
]


@pytest.mark.parametrize(("suite", "pattern"), BAD_SUITES)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_suites_exit_2_with_one_line(suite: Any, pattern: str, command: str,
                                         tmp_path: Path, capsys):
    import re

    path = write_suite(tmp_path, suite)
    args = [command, str(path)] + (["--out", str(tmp_path / "out")] if command == "run" else [])
    code, _out, err = run(args, capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("poisonlab: error: ")
    assert "Traceback" not in err
    assert re.search(pattern, err), err
    assert not (tmp_path / "out" / "results.json").exists()


def test_missing_suite_file(tmp_path: Path, capsys):
    code, _, err = run(["validate", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "required" in err


def test_include_merges_a_base_suite(tmp_path: Path, capsys):
    write_suite(tmp_path, TINY, "base.yaml")
    path = write_suite(tmp_path, {"include": "base.yaml", "name": "child", "seeds": [3]})
    code, out, _ = run(["validate", str(path)], capsys)
    assert code == 0 and "4 cells" in out


def test_targeted_threats_run_and_are_recorded_as_targeted(tmp_path: Path, capsys):
    data = copy.deepcopy(TINY)
    data["defenses"] = ["none"]
    # (l2 on 2-D blobs in about [0.05, 0.95]: eps 0.5 is 40% of the data's diameter)
    data["threat_model"] = {"evasion": [{"norm": "l2", "eps": [0.1, 0.5], "targeted": True}]}
    path = write_suite(tmp_path, data)
    assert run(["run", str(path), "--out", str(tmp_path / "r"), "--quiet"], capsys)[0] == 0
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    for c in doc["cells"]:
        asr = {m["threat"]: m["value"] for m in c["metrics"]
               if m["metric"] == "attack_success_rate" and m["attack"] == "pgd(steps=10)"}
        assert set(asr) == {"l2 eps=0.1 targeted", "l2 eps=0.5 targeted"}
        # success toward a random target class can only grow with the budget
        assert 0 <= asr["l2 eps=0.1 targeted"] <= asr["l2 eps=0.5 targeted"] <= 1


def test_report_names_attacker_knowledge_and_flip_strategies(tmp_path: Path, capsys):
    data = copy.deepcopy(TINY)
    data["defenses"] = ["none"]
    data["seeds"] = [0]
    data["attacks"] = ["fgsm", "noise", {"name": "transfer", "attack": {"name": "pgd",
                                                                        "steps": 5}}]
    data["threat_model"] = {
        "poisoning": [{"strategy": "margin", "rate": 0.1},
                      {"strategy": "random", "rate": 0.1, "max_per_class": 0.2}],
        "evasion": [{"norm": "linf", "eps": [0.1]}],
    }
    path = write_suite(tmp_path, data)
    assert run(["run", str(path), "--out", str(tmp_path / "r"), "--quiet"], capsys)[0] == 0
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    jsonschema.validate(doc, schema())
    assert doc["threat_model"]["attack_knowledge"] == {
        "fgsm": "white-box", "noise": "black-box",
        "transfer(attack=pgd(steps=5))": "transfer"}
    report = (tmp_path / "r" / "report.md").read_text()
    assert "fgsm (white-box), noise (black-box), transfer(attack=pgd(steps=5)) (transfer)" in report
    assert "most confident about" in report
    assert "at most a fraction 0.2 of any class" in report
    flips = {c["poisoning"]["id"]: c["poisoning_info"]["n_flipped"] for c in doc["cells"]
             if c["poisoning"]}
    n_train = next(c["poisoning_info"]["n_train"] for c in doc["cells"] if c["poisoning"])
    assert flips == {"margin 0.1": round(0.1 * n_train), "random 0.1 cap=0.2": round(0.1 * n_train)}
