"""Run every bad-input case (see tests/bad_inputs/__init__.py) and keep the doc current."""

from __future__ import annotations

from pathlib import Path

import pytest

from .__main__ import DOC, build
from .harness import Case, all_cases, message

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line(case: Case, tmp_path: Path) -> None:
    kind, text = message(case, tmp_path)
    assert text and kind


def test_docs_table_is_current() -> None:
    assert DOC.read_text() == build(), (
        "docs/bad_inputs.md is stale: run `python -m tests.bad_inputs --write`")
