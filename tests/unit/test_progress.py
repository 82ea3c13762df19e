"""The in-cell progress bar: silent when stderr is not a terminal, never changes a number."""

from __future__ import annotations

import pytest

from poisonlab.harness.evaluate import evaluate_cell
from poisonlab.harness.suite import parse_suite

SUITE = {
    "name": "progress", "datasets": [{"name": "blobs", "n_samples": 200}],
    "models": [{"name": "mlp", "hidden": [8]}], "training": {"epochs": 2},
    "defenses": ["none"], "threat_model": {"evasion": [{"norm": "linf", "eps": [0.1, 0.2]}]},
    "attacks": ["fgsm", {"name": "pgd", "steps": 3}], "seeds": [0],
    "offmanifold": {"n_noise": 20},
}


def test_progress_is_silent_off_a_terminal_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    suite = parse_suite(SUITE)
    cell = next(suite.cells())
    shown = evaluate_cell(suite, cell, progress=True)
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    hidden = evaluate_cell(suite, cell, progress=False)
    for r in (shown, hidden):
        r.pop("timing")
    assert shown == hidden
