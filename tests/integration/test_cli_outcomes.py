"""What the command answers a user with (issue 21): exit codes that mean one thing each,
warnings for a threat model out of scale with the data, --strict, --format json, the
current folder importable, parameters listed, and a check that names its causes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from poisonlab.cli import main

from .byo_helpers import make_net
from .conftest import write_suite

#: A 2-class problem on 8 features in 0..255 (raw pixel units).
RNG = np.random.default_rng(0)
X = RNG.uniform(0, 255, (240, 8)).astype("float32")
Y = (X[:, 0] > 127.5).astype("int64")

SMALL: dict[str, Any] = {
    "name": "outcomes", "version": 1,
    "datasets": [{"name": "blobs", "n_samples": 200}],
    "models": ["logistic"],
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05},
    "defenses": ["none", {"name": "label_smoothing", "eps": 0.1}],
    "threat_model": {"evasion": [{"norm": "linf", "eps": [0.2]}]},
    "attacks": ["fgsm"],
    "seeds": [0],
    "metrics": ["accuracy", "evasion"],
    "checks": {"enabled": []},
}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data in 0..255 (and a copy in 0..1 declaring bounds 0..255), an empty
    and a one-class .npz, a model module and its weights: what a user brings."""
    d = tmp_path_factory.mktemp("byo")
    split = {"x_train": X[:180], "y_train": Y[:180], "x_test": X[180:], "y_test": Y[180:]}
    np.savez(d / "raw.npz", **split)
    np.savez(d / "unit.npz", **{k: v / 255 if k.startswith("x") else v
                                for k, v in split.items()}, bounds=np.array([0.0, 255.0]))
    np.savez(d / "empty.npz", **dict(split, x_test=X[:0], y_test=Y[:0]))
    np.savez(d / "one_class.npz", **dict(split, y_train=np.zeros(180, "int64")))
    (d / "mynet.py").write_text(
        "from tests.integration.byo_helpers import make_net\n")
    torch.save(make_net((8,), 2).state_dict(), d / "w.pt")
    return d


def evaluate(byo: Path, data: str, *extra: str, model: str = "tests.integration."
             "byo_helpers:make_net") -> list[str]:
    return ["evaluate", "--model", model, "--weights", str(byo / "w.pt"), "--data",
            str(byo / data), "--out", str(byo / f"out-{data}-{len(extra)}"), "--quiet",
            *extra]


ROOT = Path(__file__).resolve().parents[2]


def command(args: list[str], cwd: Path = ROOT) -> tuple[int, str, str]:
    """The command in its own process, as a user runs it: warnings shown as they are
    outside pytest. ``-P``: python does not put the current folder on sys.path itself
    (as a console script does not)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-P", "-c", "import sys; from poisonlab.cli "
                           "import main; sys.exit(main())", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_an_eps_tiny_for_the_data_warns_and_strict_fails(byo: Path) -> None:
    code, _, err = command(evaluate(byo, "raw.npz", "--eps", "0.1", "1"))
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith("poisonlab: warning: ")]
    assert len(lines) == 2, err  # one per eps: 0.1 and 1 are both under 1% of 0..255
    assert lines[0].startswith("poisonlab: warning: threats[0]: linf eps=0.1 is 0.039% of "
                               "the data range [")
    assert "linf eps=1 is 0.39%" in lines[1] and "(under 1%)" in lines[1]
    code, _, err = command(evaluate(byo, "raw.npz", "--eps", "0.1", "--strict"))
    assert code == 1 and "--strict: 1 warning (above) fail the command" in err
    # the results are written first
    assert (byo / "out-raw.npz-3" / "results.json").is_file()
    code, _, err = command(evaluate(byo, "raw.npz", "--eps", "8", "--strict"))
    assert code == 0 and "warning" not in err, err  # 3% of the range: in scale


def test_bounds_in_other_units_than_the_data_warn(byo: Path) -> None:
    code, _, err = command(evaluate(byo, "unit.npz", "--eps", "0.05", "--strict"))
    assert code == 1
    assert "bounds [0, 255] but the test inputs lie in" in err
    assert "are the bounds in the data's units?" in err


@pytest.mark.parametrize("data, message", [
    ("empty.npz", "y_test is empty: expected at least one example"),
    ("one_class.npz", "y_train has one class (0): expected at least 2 classes"),
])
def test_empty_or_one_class_data_is_one_line(byo: Path, data: str, message: str,
                                             capsys) -> None:
    code, out, err = run(evaluate(byo, data), capsys)
    assert code == 2 and out == ""
    assert err == f"poisonlab: error: {message}\n"


def test_the_current_folder_is_importable_for_module_factory(byo: Path) -> None:
    code, _, err = command(evaluate(byo, "raw.npz", "--eps", "8", model="mynet:make_net"),
                           cwd=byo)
    assert code == 0, err
    code, _, err = command(evaluate(byo, "raw.npz", model="mynet:make_net"))
    assert code == 2 and "mynet" in err and err.count("\n") == 1


def test_format_json_is_the_results_document_and_nothing_else(tmp_path: Path,
                                                                capsys) -> None:
    suite = write_suite(tmp_path, SMALL)
    code, out, _ = run(["run", str(suite), "--out", str(tmp_path / "r"), "--quiet",
                        "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out) == json.loads((tmp_path / "r" / "results.json").read_text())
    code, out, _ = run(["baseline", str(tmp_path / "r"), "--out", str(tmp_path / "b.json")],
                       capsys)
    code, out, _ = run(["check", str(tmp_path / "r"), "--baseline", str(tmp_path / "b.json"),
                        "--format", "json"], capsys)
    got = json.loads(out)
    assert code == 0 and got["ok"] and got["exit_code"] == 0 and got["causes"] == []
    assert got["counts"]["within"] == len(got["rows"]) > 0
    assert {"dataset", "defense", "metric", "threat", "baseline", "now", "verdict"} <= \
        set(got["rows"][0])


def test_a_changed_defense_parameter_is_one_cause_not_rows(tmp_path: Path, capsys) -> None:
    old = write_suite(tmp_path, SMALL, "old.yaml")
    new = write_suite(tmp_path, dict(SMALL, defenses=[
        "none", {"name": "label_smoothing", "eps": 0.2}]), "new.yaml")
    assert main(["run", str(old), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["run", str(new), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert main(["baseline", str(tmp_path / "a"), "--out", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    code, out, _ = run(["check", str(tmp_path / "b"), "--baseline", str(tmp_path / "b.json")],
                       capsys)
    assert code == 1  # the baseline's numbers of eps=0.1 are missing: the gate fails
    lines = out.splitlines()
    start = lines.index("Changes since the baseline (their rows are counted above, not "
                        "listed):")
    assert lines[start + 1] == "  defenses[1] (label_smoothing).params.eps: 0.1 -> 0.2"
    assert lines[start + 2].startswith("  defense 'label_smoothing(eps=0.1)': ")
    assert "of the baseline have no value in the results" in lines[start + 2]
    assert lines[start + 3].startswith("  defense 'label_smoothing(eps=0.2)': ")
    # no row of either label is listed one by one; the unchanged defense's rows are within
    assert "label_smoothing(eps=0.1)/" not in out and "label_smoothing(eps=0.2)/" not in out


def test_a_required_expectation_that_is_inconclusive_exits_1_saying_why(
        tmp_path: Path, capsys) -> None:
    suite = write_suite(tmp_path, dict(SMALL, expectations=[
        {"claim": "clean_accuracy of label_smoothing(eps=0.1) above none",
         "required": True}]))
    code, _, err = run(["run", str(suite), "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 1
    line = next(x for x in err.splitlines() if x.startswith("poisonlab: expectation: "))
    assert "required claim 'clean_accuracy of label_smoothing(eps=0.1) above none' " \
        "inconclusive on " in line
    assert "seed" in line  # the reason: one seed cannot separate the two


def test_list_shows_an_entrys_parameters_with_defaults(capsys) -> None:
    code, out, _ = run(["list", "attacks", "pgd"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("pgd: projected gradient descent")
    steps = next(x for x in lines if x.strip().startswith("steps"))
    assert steps.split() == ["steps", "=", "40", "(int", ">=", "1)"]
    assert any(x.strip().startswith("restarts") and ": Independent random starts" in x
               for x in lines)
    code, _, err = run(["list", "attacks", "pgdd"], capsys)
    assert code == 2 and "did you mean 'pgd'" in err


def test_evaluate_pretrained_takes_a_threat_model_and_its_named_threats_head_the_report(
        byo: Path, tmp_path: Path) -> None:
    from poisonlab import EvasionThreat, NamedThreat, PoisonThreat, ThreatModel
    from poisonlab.errors import ConfigError
    from poisonlab.harness.pretrained import evaluate_pretrained

    bounds = (0.0, 255.0)
    tm = ThreatModel(evasion=[EvasionThreat(eps=8.0, bounds=bounds),
                              EvasionThreat(norm="l2", eps=40.0, bounds=bounds)],
                     threats=[NamedThreat("small linf", evasion="linf eps=8")])
    args = ("tests.integration.byo_helpers:make_net", byo / "w.pt", str(byo / "raw.npz"))
    doc = evaluate_pretrained(*args, tmp_path / "e", threat_model=tm, attacks=["fgsm"])
    assert [e["norm"] for e in doc["threat_model"]["evasion"]] == ["linf", "l2"]
    assert doc["threat_model"]["threats"][0]["name"] == "small linf"
    threats = {m["threat"] for c in doc["cells"] for m in c["metrics"]
               if m["metric"] == "robust_accuracy"}
    assert threats == {"linf eps=8", "l2 eps=40"}
    md = (tmp_path / "e" / "report.md").read_text()
    assert md.split("## Verdicts by threat model")[1].split("### ")[1].startswith("small linf")
    with pytest.raises(ConfigError, match="a trained model cannot be poisoned"):
        evaluate_pretrained(*args, tmp_path / "p", threat_model=ThreatModel(
            evasion=tm.evasion, poisoning=[PoisonThreat(rate=0.1)]))
    with pytest.raises(ConfigError, match="eps and threat_model are both given"):
        evaluate_pretrained(*args, tmp_path / "q", threat_model=tm, eps=[8.0])


def test_evaluate_format_json_is_its_results_document(byo: Path, capsys) -> None:
    args = evaluate(byo, "raw.npz", "--eps", "8", "--format", "json")
    code, out, _ = run(args, capsys)
    assert code == 0
    written = json.loads((Path(args[args.index("--out") + 1]) / "results.json").read_text())
    assert json.loads(out) == written and written["cells"][0]["status"] == "ok"
