"""The model is validated once per cell (issue 20): a probe per model, not one per call.

``_torch.probe_model`` is the model contract's check (a forward pass, and a backward
pass when input gradients are needed). Before issue 20 every attack, metric and sanity
check of a cell probed the same model again (13 probes per cell of the ci suite); inside
``validate_once`` a model that passed is answered from memory.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from torch import nn

import poisonlab._torch as model_contract
import poisonlab.harness.measure as evaluate_mod
from poisonlab._torch import probe_model, validate_once
from poisonlab.harness.evaluate import evaluate_cell
from poisonlab.harness.suite import parse_suite

SUITE: dict[str, Any] = {
    "name": "probe-count",
    "datasets": [{"name": "blobs", "n_samples": 300}],
    "models": ["mlp"],
    "training": {"epochs": 2},
    "defenses": ["none"],
    "threat_model": {"poisoning": [{"strategy": "random", "rate": 0.2}],
                     "evasion": [{"norm": "linf", "eps": [0.1, 0.3]}]},
    "attacks": ["fgsm", {"name": "pgd", "steps": 5},
                {"name": "transfer", "attack": {"name": "pgd", "steps": 5}}],
    "seeds": [0],
    "metrics": ["accuracy", "evasion", "poisoning", "offmanifold", "calibration"],
    "offmanifold": {"n_noise": 50},
    "checks": {"n_probe": 20, "steps": 5},
}


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, bool, bool]]]:
    """Every real probe: ``(id(model), param_grad, input_grad)``."""
    seen: list[tuple[int, bool, bool]] = []
    real = model_contract._probe

    def counting(model: nn.Module, x: torch.Tensor, **kw: Any) -> int:
        seen.append((id(model), kw["param_grad"], kw["input_grad"]))
        return real(model, x, **kw)

    monkeypatch.setattr(model_contract, "_probe", counting)
    yield seen


def _per_model(seen: list[tuple[int, bool, bool]]) -> dict[int, collections.Counter[str]]:
    out: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for mid, param_grad, _ in seen:
        out[mid]["train" if param_grad else "use"] += 1
    return dict(out)


def test_each_model_of_a_cell_is_probed_once_for_training_and_once_after(
        probes: list[tuple[int, bool, bool]]) -> None:
    suite = parse_suite(SUITE)
    clean, poisoned = list(suite.cells())
    for cell in (clean, poisoned):
        probes.clear()
        rec = evaluate_cell(suite, cell)
        assert rec["status"] == "ok", rec["error"]
        per_model = _per_model(probes)
        # the cell's model and the transfer attack's surrogate: each probed at most once
        # for training and once after it (the poisoned cell reuses the clean cell's
        # surrogate from the cache: no training probe, one probe in this cell)
        assert len(per_model) == 2
        for counts in per_model.values():
            assert counts["train"] <= 1 and counts["use"] <= 1, counts
        assert sum(c["train"] for c in per_model.values()) == (2 if cell is clean else 1)
        assert len(probes) <= 4
        # the model a cell evaluates is probed after training, and that probe checks its
        # input gradients (white-box attacks need them)
        assert any(ig for _, pg, ig in probes if not pg)


def test_the_memory_changes_no_number(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = parse_suite(SUITE)
    cell = next(iter(suite.cells()))
    once = evaluate_cell(suite, cell)
    monkeypatch.setattr(evaluate_mod, "validate_once", nullcontext)
    every_time = evaluate_cell(suite, cell)
    assert once["status"] == every_time["status"] == "ok"
    assert once["metrics"] == every_time["metrics"]
    assert once["checks"] == every_time["checks"]


def test_probe_memory_rules(probes: list[tuple[int, bool, bool]]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.zeros(5, 4)
    assert probe_model(model, x) == 3
    assert probe_model(model, x) == 3
    assert len(probes) == 2  # outside the block: every call probes
    probes.clear()
    with validate_once():
        probe_model(model, x)
        probe_model(model, x)
        assert len(probes) == 1
        probe_model(model, x, input_grad=True)  # asks for more: probes again
        probe_model(model, x, input_grad=True)
        probe_model(model, x)
        assert len(probes) == 2
        probe_model(model, x, param_grad=True)  # training: always probes
        probe_model(model, x, param_grad=True)
        assert len(probes) == 4
        probe_model(model, torch.zeros(5, 2, 2))  # another input shape: probes
        assert len(probes) == 5
        with validate_once():  # a nested block starts empty
            probe_model(model, x)
        assert len(probes) == 6
    probe_model(model, x)
    assert len(probes) == 7


def test_a_failing_model_is_not_remembered(probes: list[tuple[int, bool, bool]]) -> None:
    class Nan(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((len(x), 3), float("nan"))

    from poisonlab.errors import DataError

    with validate_once():
        for _ in range(2):
            with pytest.raises(DataError, match="NaN or Inf logits"):
                probe_model(Nan(), torch.zeros(2, 4))
    assert len(probes) == 2
