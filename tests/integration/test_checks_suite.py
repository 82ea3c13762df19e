"""The sanity checks inside a suite run: cell records, results.json, the report, --strict.

The flagged model is a user model (named ``"module:attr"`` as a suite would) that trains
normally but rounds its logits in eval mode, where attacks run: the gradient an attack
sees is zero everywhere, as behind a non-differentiable preprocessing step.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from torch import nn

from poisonlab.cli import EXIT_OK, EXIT_REGRESSION, main
from poisonlab.harness.evaluate import evaluate_cell
from poisonlab.harness.runner import run_suite
from poisonlab.harness.suite import parse_suite
from poisonlab.sanity import ALL_CHECKS, SanityFailure

from .conftest import write_suite

SCHEMA = Path(__file__).resolve().parents[2] / "poisonlab" / "schemas" / "results.schema.json"
MASKED = f"{__name__}:masked_mlp"


class _RoundedAtEval(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        return z if self.training else torch.round(z)


def masked_mlp(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """An MLP whose eval-mode logits are rounded: zero input gradients where attacks run."""
    return _RoundedAtEval(nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 32),
                                        nn.ReLU(), nn.Linear(32, n_classes)))


def _suite(model: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": "checks", "version": 1, "datasets": ["digits"], "models": [model],
        "training": {"epochs": 5, "batch_size": 64, "lr": 0.01},
        "defenses": ["none"],
        "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.2}],
                         "evasion": [{"norm": "linf", "eps": [0.05, 0.1, 0.2]}]},
        "attacks": [{"name": "pgd", "steps": 10}],
        "seeds": [0], "metrics": ["accuracy", "evasion", "poisoning"],
        "checks": {"n_probe": 100}, **extra,
    }


def test_checks_change_no_metric_and_only_clean_cells_get_them() -> None:
    on = parse_suite(_suite({"name": "mlp", "hidden": [32]}))
    off = parse_suite(_suite({"name": "mlp", "hidden": [32]}, checks={"enabled": []}))
    clean, poisoned = list(on.cells())
    rec_on, rec_off = evaluate_cell(on, clean), evaluate_cell(off, clean)
    assert rec_on["status"] == rec_off["status"] == "ok"
    assert rec_on["metrics"] == rec_off["metrics"]
    assert [c["check"] for c in rec_on["checks"]] == list(ALL_CHECKS)
    assert rec_off["checks"] == []
    assert evaluate_cell(on, poisoned)["checks"] == []


def test_a_masked_model_is_flagged_in_results_and_report(tmp_path: Path) -> None:
    suite = parse_suite(_suite(MASKED))
    doc = run_suite(suite, tmp_path / "run")
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    clean = next(c for c in doc["cells"] if c["poisoning"] is None)
    flags = {c["check"] for c in clean["checks"] if c["status"] == "flag"}
    assert {"gradient_norms", "unbounded_eps"} <= flags
    for c in clean["checks"]:
        assert c["doc"] == f"docs/checks.md#{c['check']}"
    report = (tmp_path / "run" / "report.md").read_text()
    section = report.split("## Evaluation sanity checks")[1].split("## ")[0]
    assert report.index("## Threat model") < report.index("## Evaluation sanity checks") \
        < report.index("## What the numbers say")
    assert f"**none** (digits, {MASKED}): `gradient_norms` flagged in 1 of 1 seed" in section
    assert "single attack (`pgd(steps=10)`)" in section
    assert "Evaluation sanity checks" in (tmp_path / "run" / "report.html").read_text()


def test_strict_raises_after_writing_everything(tmp_path: Path) -> None:
    suite = parse_suite(_suite(MASKED, checks={"n_probe": 50,
                                               "enabled": ["gradient_norms"]}))
    with pytest.raises(SanityFailure) as e:
        run_suite(suite, tmp_path / "run", strict=True)
    assert e.value.lines == [
        f"none (digits, {MASKED}) seed 0: gradient_norms flagged: "
        + e.value.doc["cells"][0]["checks"][0]["message"] + " (docs/checks.md#gradient_norms)"]
    for name in ("results.json", "report.md", "report.html"):
        assert (tmp_path / "run" / name).is_file()


@pytest.mark.parametrize(("model", "code"), [(MASKED, EXIT_REGRESSION),
                                             ({"name": "mlp", "hidden": [32]}, EXIT_OK)])
def test_cli_strict_exits_1_with_one_line_per_flag(model: Any, code: int, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path, _suite(model, checks={
        "n_probe": 50, "enabled": ["gradient_norms", "unbounded_eps"]}))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet",
                 "--strict"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    if code == EXIT_OK:
        assert err == []
    else:
        assert [re.search(r"seed 0: (\w+) flagged: ", line)[1] for line in err] == [  # type: ignore[index]
            "gradient_norms", "unbounded_eps"]
        assert all(line.startswith("poisonlab: sanity check: none (digits, ") for line in err)
    assert (tmp_path / "run" / "results.json").is_file()
    # Without --strict the flags are reported, not fatal.
    assert main(["run", str(path), "--out", str(tmp_path / "again"), "--quiet"]) == EXIT_OK


def _ordered_suite(pgd: dict[str, Any]) -> dict[str, Any]:
    return _suite({"name": "mlp", "hidden": [32]},
                  attacks=["fgsm", pgd],
                  threat_model={"evasion": [{"norm": "linf", "eps": [0.1, 0.2]}]},
                  checks={"n_probe": 50, "enabled": ["suite_attacks_ordered"]})


def test_a_suite_pgd_weaker_than_its_fgsm_is_flagged_and_strict_fails(tmp_path: Path) -> None:
    # Two steps of 0.01 * eps: the PGD barely leaves its random start, FGSM takes one step
    # of eps. The probes' own PGD is fine; only the suite's attacks show the problem.
    weak = {"name": "pgd", "steps": 2, "rel_stepsize": 0.01}
    doc = run_suite(parse_suite(_ordered_suite(weak)), tmp_path / "run")
    (check,) = next(c for c in doc["cells"] if c["poisoning"] is None)["checks"]
    assert (check["check"], check["status"]) == ("suite_attacks_ordered", "flag")
    ev = check["evidence"]
    assert ev["fgsm"] > ev["multi"] + 0.02 and ev["excess"] > 0
    assert "pgd(rel_stepsize=0.01, steps=2)" in check["message"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "`suite_attacks_ordered` flagged" in report
    with pytest.raises(SanityFailure) as e:
        run_suite(parse_suite(_ordered_suite(weak)), tmp_path / "strict", strict=True)
    assert "suite_attacks_ordered flagged" in e.value.lines[0]


def test_a_suite_pgd_with_the_defaults_passes_the_ordering(tmp_path: Path) -> None:
    # (10 steps of 0.1 * eps travel one eps in all: on this MLP that PGD is flagged too,
    # 0.40 vs FGSM's 0.48 at eps 0.1; the defaults' 40 steps are not.)
    doc = run_suite(parse_suite(_ordered_suite({"name": "pgd"})), tmp_path / "run")
    (check,) = next(c for c in doc["cells"] if c["poisoning"] is None)["checks"]
    assert check["status"] == "pass", check["message"]
    assert check["evidence"]["multi"] >= check["evidence"]["fgsm"] - 0.02
