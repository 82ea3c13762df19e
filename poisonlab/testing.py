"""Helpers for your own tests: gate a suite's numbers inside pytest.

>>> from poisonlab.testing import assert_no_regression
>>> assert_no_regression("runs/ci/results.json", "baselines/ci.json")  # doctest: +SKIP

See docs/regression.md for the tolerance rule and examples/test_my_suite.py for a test
module that runs a suite and checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .harness.gate import GateResult, check, load_baseline, load_results_doc

__all__ = ["assert_no_regression"]


def assert_no_regression(
    results: str | Path | Mapping[str, Any],
    baseline: str | Path | Mapping[str, Any],
    *,
    fail_on_improvement: bool = False,
) -> GateResult:
    """Fail the calling test when a number regressed against ``baseline``.

    The same comparison as ``poisonlab check`` (:func:`poisonlab.harness.gate.check`).

    Parameters
    ----------
    results : path or mapping
        A results.json, the run folder holding it, or the loaded document (what
        :func:`~poisonlab.harness.run_suite` returns).
    baseline : path or mapping
        A baseline file written by ``poisonlab baseline``, or the loaded document.
    fail_on_improvement : bool
        Also fail when a number improved beyond its tolerance.

    Returns
    -------
    GateResult
        The comparison, when nothing failed (its ``warnings`` may still say that the
        environment differs from the baseline's).

    Raises
    ------
    AssertionError
        Something regressed or is missing from the results (or improved, with
        ``fail_on_improvement``); the message is the report table.
    PoisonlabError
        ``results`` or ``baseline`` cannot be read or is not what it should be.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    doc = results if isinstance(results, Mapping) else load_results_doc(results)
    base = baseline if isinstance(baseline, Mapping) else load_baseline(baseline)
    result = check(doc, base, fail_on_improvement=fail_on_improvement)
    if not result.ok:
        raise AssertionError("\n" + result.text())
    return result
