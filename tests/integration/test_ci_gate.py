"""The project's own robustness gate: benchmarks/suites/ci.yaml against the committed
benchmarks/baselines/ci.json.

An unchanged rerun passes; a change that truly weakens a defense (adversarial training
patched to train on a ball a tenth of the declared radius) fails, naming the numbers.
Refresh the baseline after an intended change (see the suite file's header).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from poisonlab.cli import main
from poisonlab.defenses.adversarial import AdversarialTraining
from poisonlab.harness.gate import check, load_baseline, load_results_doc
from poisonlab.testing import assert_no_regression
from poisonlab.threat import EvasionThreat

from .conftest import CI_SUITE as SUITE
from .conftest import ROOT

pytestmark = pytest.mark.slow

BASELINE = ROOT / "benchmarks" / "baselines" / "ci.json"


def test_the_ci_suite_passes_its_committed_baseline(ci_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "summary.md"
    code = main(["check", str(ci_run), "--baseline", str(BASELINE), "--summary",
                 str(summary)])
    out = capsys.readouterr().out
    assert code == 0, out
    result = assert_no_regression(ci_run, BASELINE)
    baseline = load_baseline(BASELINE)
    # Every gated number of the baseline was found and judged; none regressed.
    assert len(result.rows) == len(baseline["entries"]) > 50
    assert not result.regressed and not result.missing
    required = [e for e in result.expectations if e.expectation.required]
    assert required and all(e.holds for e in required)
    assert "robust_accuracy of pgd_at above none" in summary.read_text()


def test_weakened_adversarial_training_fails_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A recipe change that truly weakens pgd_at while its label stays the same: it now
    # trains on a ball a tenth of its declared eps. Only `none` and `pgd_at` are rerun
    # (in this process, where the patch applies), so the other defenses show as missing.
    real = AdversarialTraining.threat

    def weak(self: AdversarialTraining, bounds: tuple[float, float]) -> EvasionThreat:
        t = real(self, bounds)
        return EvasionThreat(norm=t.norm, eps=t.eps / 10, bounds=bounds)

    monkeypatch.setattr(AdversarialTraining, "threat", weak)
    raw = yaml.safe_load(SUITE.read_text())
    raw["defenses"] = [d for d in raw["defenses"]
                       if d == "none" or (isinstance(d, dict) and d["name"] == "pgd_at")]
    raw["expectations"] = [e for e in raw["expectations"] if "pgd_at" in json.dumps(e)]
    suite = tmp_path / "ci.yaml"
    suite.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    # the run already says it: the required claim about pgd_at no longer holds (exit 1)
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "poisonlab: expectation: required claim '" in err and "pgd_at" in err

    assert main(["check", str(out), "--baseline", str(BASELINE)]) == 1
    printed = capsys.readouterr().out
    assert "regressed" in printed and "pgd_at" in printed

    result = check(load_results_doc(out), load_baseline(BASELINE))
    regressed = {(r.defense, r.metric, r.threat) for r in result.regressed}
    assert ("pgd_at(eps=0.1, steps=5)", "robust_accuracy", "linf eps=0.1") in regressed
    # Nothing of the unchanged defense moved: same seeds, same numbers.
    assert not [r for r in result.rows if r.defense == "none" and r.verdict.value != "within"]
    assert {r.defense for r in result.missing} == {"label_smoothing(eps=0.1)", "gce(q=0.7)"}
    failing = [e.expectation.claim for e in result.failing_expectations]
    assert failing == ["robust_accuracy of pgd_at above none at linf eps=0.1 by more than 0.1"]
