"""batch_size through the metrics, the sanity checks, the harness and the CLI (docs/batching.md).

Across batch sizes {1, 7, 64, unbatched} the metrics that run a model agree within 1e-5
and every count (argmax, alpha_star's grid value) is identical; the sanity checks reach
the same outcomes; a suite cell gives identical accuracies and success rates (and keeps
its key) at batch size 7, 64 and the default, with a per-attack batch size kept out of
the attack's label; ``poisonlab evaluate --batch-size 7`` equals ``--batch-size 64`` and
``poisonlab run --batch-size`` leaves every number alone. A model that records the widest
batch it saw shows that no forward pass exceeds the batch size, however many inputs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from poisonlab import Dataset, EvasionThreat, build_model, load_dataset, metrics, train
from poisonlab.batching import DEFAULT_BATCH_SIZE
from poisonlab.cli import main
from poisonlab.harness import measure as evaluate_mod
from poisonlab.harness.evaluate import evaluate_cell
from poisonlab.harness.pretrained import evaluate_model_details
from poisonlab.harness.suite import parse_suite
from poisonlab.sanity import SanitySettings, run_sanity

SIZES = (1, 7, 64, None)
TOL = 1e-5
N_NOISE = 200


class _Widest(nn.Module):
    """Wraps a model and records the largest batch any forward pass saw."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.widest = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widest = max(self.widest, int(x.shape[0]))
        return self.inner(x)


def _model_metrics(model: nn.Module, ds: Dataset, bs: int | None) -> dict[str, Any]:
    """Every metric that runs a model, at batch size ``bs`` (the same noise every time)."""
    u = metrics.uniform_noise(N_NOISE, ds.input_shape, ds.bounds, 1)
    probs = metrics.predict_proba(model, ds.x_test, batch_size=bs)
    return {
        "logits": metrics.predict_logits(model, ds.x_test, batch_size=bs),
        "probs": probs,
        "max_softmax": metrics.max_softmax(model, u, batch_size=bs),
        "ece": metrics.ece(probs, ds.y_test),
        "nll": metrics.nll(probs, ds.y_test),
        "brier": metrics.brier(probs, ds.y_test),
        "offmanifold_confidence": metrics.offmanifold_confidence(model, u, batch_size=bs),
        "alpha_star": metrics.alpha_star(model, u, batch_size=bs),
        "offmanifold_auroc": metrics.offmanifold_auroc(model, ds.x_test, u, batch_size=bs),
        "ray_confidence": metrics.ray_confidence(model, ds.x_test, batch_size=bs),
        "logit_norm": metrics.logit_norm(model, ds.x_test, batch_size=bs),
        "temperature": metrics.temperature(model, ds.x_val, ds.y_val, batch_size=bs),
        "mutual_information": metrics.mutual_information(
            model, ds.x_train, ds.y_train, n_examples=40, n_augment=8, batch_size=bs),
    }


def test_metrics_agree_across_batch_sizes(digits_mlp: nn.Module, digits: Dataset) -> None:
    ref = _model_metrics(digits_mlp, digits, None)
    # a real model: informative values, not constants that would agree anyway
    assert 0.0 < ref["ece"] < 0.5 and 0.5 < ref["offmanifold_auroc"] <= 1.0
    assert ref["alpha_star"] in metrics.ALPHA_GRID and ref["mutual_information"] > 0
    assert len(set(ref["max_softmax"].tolist())) > N_NOISE // 2
    for bs in SIZES[:-1]:
        got = _model_metrics(digits_mlp, digits, bs)
        for name in ("logits", "probs", "max_softmax"):
            torch.testing.assert_close(got[name], ref[name], rtol=0, atol=TOL, msg=name)
        assert torch.equal(got["probs"].argmax(dim=1), ref["probs"].argmax(dim=1)), bs
        assert got["alpha_star"] == ref["alpha_star"], bs
        for name in ("ece", "nll", "brier", "offmanifold_confidence", "offmanifold_auroc",
                     "logit_norm", "temperature", "mutual_information"):
            assert abs(got[name] - ref[name]) < TOL, (name, bs)
        assert got["ray_confidence"].keys() == ref["ray_confidence"].keys()
        for a, v in ref["ray_confidence"].items():
            assert abs(got["ray_confidence"][a] - v) < TOL, (a, bs)


def test_alpha_star_per_input_does_not_depend_on_its_batch() -> None:
    # Inputs that reach the level at very different alphas: a batch that stops early
    # (all reached) must not cut short a slower input of another batch.
    u = torch.tensor([[8.0, 0.0], [0.01, 0.0], [3.0, 0.0], [0.0, 0.0], [0.5, 0.0]])
    per_input = [metrics.alpha_star(nn.Identity(), u[i:i + 1]) for i in range(len(u))]
    assert len(set(per_input)) == len(u)  # five different alphas, one capped
    assert per_input[3] == metrics.ALPHA_GRID[-1]
    for bs in SIZES:
        assert metrics.alpha_star(nn.Identity(), u, batch_size=bs) == float(
            np.median(per_input))


@pytest.mark.parametrize("n", [50, 600])
def test_no_metric_forward_pass_exceeds_the_batch_size(n: int, digits_mlp: nn.Module,
                                                       digits: Dataset) -> None:
    wide = _Widest(digits_mlp)
    x = torch.cat([digits.x_test, digits.x_test])[:n]
    u = metrics.uniform_noise(n, digits.input_shape, digits.bounds, 0)
    calls = [
        lambda bs: metrics.predict_logits(wide, x, batch_size=bs),
        lambda bs: metrics.predict_proba(wide, x, batch_size=bs),
        lambda bs: metrics.max_softmax(wide, x, batch_size=bs),
        lambda bs: metrics.offmanifold_auroc(wide, x, u, batch_size=bs),
        lambda bs: metrics.alpha_star(wide, u, batch_size=bs),
        lambda bs: metrics.ray_confidence(wide, x, batch_size=bs),
        lambda bs: metrics.logit_norm(wide, x, batch_size=bs),
        lambda bs: metrics.temperature(wide, x, digits.y_test.repeat(2)[:n],
                                             batch_size=bs),
        lambda bs: metrics.mutual_information(wide, digits.x_train, digits.y_train,
                                              n_examples=n // 8, n_augment=8, batch_size=bs),
    ]
    for i, call in enumerate(calls):
        for bs, widest in ((16, 16), (DEFAULT_BATCH_SIZE, None)):
            wide.widest = 0
            call(bs)
            assert 0 < wide.widest <= bs, (i, bs)
            if widest is not None:
                assert wide.widest == widest, i  # bounded by bs whatever n, and reached
    wide.widest = 0
    metrics.predict_logits(wide, x, batch_size=None)
    assert wide.widest == n  # None: everything at once


def _check_outcomes(model: nn.Module, digits: Dataset, bs: int | None) -> list[dict[str, Any]]:
    threats = [EvasionThreat(eps=e, bounds=digits.bounds) for e in (0.05, 0.1, 0.2)]
    settings = SanitySettings(n_probe=60, steps=4)
    return [o.to_dict() for o in run_sanity(model, digits.x_test, digits.y_test,
                                            groups=[threats], settings=settings, seed=3,
                                            batch_size=bs)]


def test_sanity_checks_reach_the_same_outcomes_at_any_batch_size(
    digits_mlp: nn.Module, digits: Dataset
) -> None:
    ref = _check_outcomes(digits_mlp, digits, None)
    ran = [o["check"] for o in ref if o["status"] != "skipped"]
    assert {"iterative_vs_single_step", "monotone_in_eps", "noise_vs_attack",
            "gradient_norms", "convergence"} <= set(ran)
    wide = _Widest(digits_mlp)
    got = _check_outcomes(wide, digits, 7)
    assert wide.widest == 7  # every probe, and the probe points' clean predictions
    for a, b in zip(got, ref, strict=True):
        assert (a["check"], a["status"], a["threat"]) == (b["check"], b["status"],
                                                          b["threat"])
        for k, v in b["evidence"].items():  # counts and rates: identical; norms: close
            if k == "median_norm":
                assert abs(a["evidence"][k] - v) <= TOL * max(1.0, abs(v))
            else:
                assert a["evidence"][k] == v, (a["check"], k)


# --------------------------------------------------------------------------- the harness

SUITE: dict[str, Any] = {
    "name": "batching", "version": 1,
    "datasets": [{"name": "blobs", "n_samples": 600}],
    "models": [{"name": "mlp", "hidden": [16]}],
    "training": {"epochs": 5, "batch_size": 32, "lr": 0.01},
    "defenses": ["none"],
    "threat_model": {"evasion": [{"norm": "linf", "eps": [0.05, 0.2]}]},
    "attacks": ["fgsm", {"name": "pgd", "steps": 10},
                {"name": "pgd", "steps": 5, "restarts": 2, "batch_size": 5}],
    "seeds": [0],
    "offmanifold": {"n_noise": 100},
    "information": {"n_examples": 20, "n_augment": 4},
    "checks": {"n_probe": 70, "steps": 5},
}

#: Metrics that count points (or pick a grid value): identical at any batch size.
COUNTS = {"clean_accuracy", "robust_accuracy", "attack_success_rate", "alpha_star",
          "teacher_accuracy"}


def _suite(batch_size: int | None) -> Any:
    d = copy.deepcopy(SUITE)
    if batch_size is not None:
        d["batch_size"] = batch_size
    return parse_suite(d)


def _same_numbers(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [(m["metric"], m["threat"], m["attack"]) for m in a] == \
        [(m["metric"], m["threat"], m["attack"]) for m in b]
    for x, y in zip(a, b, strict=True):
        if x["metric"] in COUNTS:
            assert x["value"] == y["value"], x
        else:
            assert abs(x["value"] - y["value"]) < TOL, x


def test_a_suite_cell_does_not_depend_on_the_batch_size(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    seen: list[tuple[str, Any, Any]] = []
    real = evaluate_mod.security_curve

    def spy(attack: Any, *args: Any, **kw: Any) -> Any:
        seen.append((attack.name, kw["batch_size"], kw["keep_adv"]))
        return real(attack, *args, **kw)

    monkeypatch.setattr(evaluate_mod, "security_curve", spy)
    records = {}
    for bs in (7, 64, None):
        suite = _suite(bs)
        records[bs] = evaluate_cell(suite, next(suite.cells()))
        assert records[bs]["status"] == "ok", records[bs]["error"]
    ref = records[None]
    # the suite's batch size for two attacks, the third's own; never the adversarial examples
    assert seen == [(name, size, False) for bs in (7, 64, DEFAULT_BATCH_SIZE)
                    for name, size in (("fgsm", bs), ("pgd", bs), ("pgd", 5))]
    assert any(m["metric"] == "attack_success_rate" and 0 < m["value"] < 1
               for m in ref["metrics"])
    assert {c["status"] for c in ref["checks"]} >= {"pass"}
    for bs in (7, 64):
        rec = records[bs]
        assert rec["key"] == ref["key"]  # no batch size in a cell key
        _same_numbers(rec["metrics"], ref["metrics"])
        assert [(c["check"], c["status"]) for c in rec["checks"]] == \
            [(c["check"], c["status"]) for c in ref["checks"]]
        assert rec["batch_size"] == bs
        assert rec["attack_batch_sizes"] == {"pgd(restarts=2, steps=5)": 5}
    assert ref["batch_size"] == DEFAULT_BATCH_SIZE
    # the attack's batch size is a call argument: not in its label or parameters
    suite = _suite(64)
    assert [a.label for a in suite.attacks] == ["fgsm", "pgd(steps=10)",
                                                "pgd(restarts=2, steps=5)"]
    assert suite.eval_config() == _suite(None).eval_config()
    assert suite.to_dict()["batch_size"] == 64
    plain = copy.deepcopy(SUITE)
    plain["attacks"] = plain["attacks"][:2]
    assert "batch_size" not in parse_suite(plain).to_dict()  # the default: as before


def test_evaluate_model_forward_passes_stay_within_the_batch_size(
    digits_mlp: nn.Module, digits: Dataset
) -> None:
    def run(model: nn.Module, bs: int) -> dict[str, Any]:
        return evaluate_model_details(
            model, digits, threats=[EvasionThreat(eps=e, bounds=digits.bounds)
                                    for e in (0.05, 0.1)],
            attacks=["fgsm", {"name": "pgd", "steps": 3}], n_noise=300,
            information={"n_examples": 20, "n_augment": 4},
            checks={"n_probe": 40, "steps": 2}, batch_size=bs)

    wide = _Widest(digits_mlp)
    got = run(wide, 16)
    assert wide.widest == 16  # attacks, metrics, checks: never more than 16 at once
    _same_numbers(got["metrics"], run(digits_mlp, 128)["metrics"])


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def blobs_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = load_dataset("blobs", seed=0)
    model = build_model("mlp", ds.input_shape, ds.n_classes, seed=0)
    model = train(model, ds.x_train, ds.y_train, epochs=5, seed=0)
    path = tmp_path_factory.mktemp("w") / "mlp.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_cli_evaluate_batch_size_changes_no_number(blobs_weights: Path,
                                                   tmp_path: Path) -> None:
    docs = {}
    for bs in ("7", "64"):
        out = tmp_path / bs
        argv = ["evaluate", "--model", "mlp", "--weights", str(blobs_weights), "--data",
                "blobs", "--eps", "0.05", "0.2", "--attacks", "fgsm", "pgd", "--out",
                str(out), "--quiet", "--batch-size", bs]
        assert main(argv) == 0
        docs[bs] = json.loads((out / "results.json").read_text())
    (a,), (b,) = docs["7"]["cells"], docs["64"]["cells"]
    assert (a["batch_size"], b["batch_size"]) == (7, 64)
    assert a["key"] == b["key"]
    assert any(m["metric"] == "robust_accuracy" and 0 < m["value"] < 1 for m in a["metrics"])
    _same_numbers(a["metrics"], b["metrics"])
    assert [c["status"] for c in a["checks"]] == [c["status"] for c in b["checks"]]


@pytest.mark.slow
def test_cli_run_batch_size_overrides_the_suite_and_changes_no_number(tmp_path: Path
                                                                      ) -> None:
    d = copy.deepcopy(SUITE)
    d["batch_size"] = 64
    d["metrics"] = ["accuracy", "evasion", "calibration"]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(d))
    docs = {}
    for flags in ([], ["--batch-size", "9"]):
        out = tmp_path / ("flag" if flags else "suite")
        assert main(["run", str(path), "--out", str(out), "--quiet", *flags]) == 0
        docs[bool(flags)] = json.loads((out / "results.json").read_text())
    (a,), (b,) = docs[False]["cells"], docs[True]["cells"]
    assert (a["batch_size"], b["batch_size"]) == (64, 9)
    assert a["attack_batch_sizes"] == b["attack_batch_sizes"]  # an attack's own stays
    assert docs[True]["suite"]["config"]["batch_size"] == 9
    assert a["key"] == b["key"]
    _same_numbers(a["metrics"], b["metrics"])


@pytest.mark.slow
def test_resume_with_another_batch_size_keeps_the_cells(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    first = json.loads((out / "results.json").read_text())
    # the batch size changes no number, so the finished cell is kept, not refused or redone
    assert main(["run", str(path), "--out", str(out), "--quiet", "--resume",
                 "--batch-size", "5"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [c["key"] for c in again["cells"]] == [c["key"] for c in first["cells"]]
    assert again["cells"][0]["batch_size"] == first["cells"][0]["batch_size"]  # not re-run
    _same_numbers(again["cells"][0]["metrics"], first["cells"][0]["metrics"])
    # a change that does move the numbers is still refused
    changed = copy.deepcopy(SUITE)
    changed["seeds"] = [int(changed.get("seeds", [0])[0]) + 1]
    path.write_text(yaml.safe_dump(changed))
    assert main(["run", str(path), "--out", str(out), "--quiet", "--resume"]) == 2
