"""Gate your own suite inside pytest: run it, compare with the baseline, fail on a regression.

Copy next to your tests and set SUITE and BASELINE. Make the baseline once, from a run
you trust, on the machine type that runs this test (in CI, the CI runner)::

    poisonlab run suites/my_suite.yaml --out runs/my_suite
    poisonlab baseline runs/my_suite/results.json --out baselines/my_suite.json

Then ``pytest test_my_suite.py`` fails with the report table (metric, cell, baseline, now,
delta, tolerance, verdict) when a number regressed beyond its tolerance or is missing.
The tolerance rule is in docs/regression.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from poisonlab.harness import load_suite, run_suite
from poisonlab.testing import assert_no_regression

HERE = Path(__file__).parent
SUITE = HERE / "suites" / "my_suite.yaml"
BASELINE = HERE / "baselines" / "my_suite.json"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the suite per test session (results.json's content)."""
    out = tmp_path_factory.mktemp("my_suite")
    return run_suite(load_suite(SUITE), out, report=False)


def test_no_robustness_regression(results: dict[str, Any]) -> None:
    if not BASELINE.is_file():
        # A missing baseline must not pass silently: say how to make one.
        pytest.fail(f"no baseline at {BASELINE}: make one with 'poisonlab baseline "
                    f"RESULTS.json --out {BASELINE}'")
    result = assert_no_regression(results, BASELINE)
    for w in result.warnings:  # e.g. another torch version than the baseline's
        warnings.warn(w, stacklevel=1)


def test_improvements_are_locked_in(results: dict[str, Any]) -> None:
    """Optional: fail on improvements too, so that a better model forces a new baseline."""
    if not BASELINE.is_file():
        pytest.skip("no baseline yet (see test_no_robustness_regression)")
    assert_no_regression(results, BASELINE, fail_on_improvement=True)
