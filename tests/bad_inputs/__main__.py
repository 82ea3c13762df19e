"""``python -m tests.bad_inputs [--write]``: print (or write) docs/bad_inputs.md."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .harness import all_cases, message, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad_inputs.md"


def build() -> str:
    rows = []
    for case in all_cases():
        with tempfile.TemporaryDirectory() as tmp:
            rows.append((case, *message(case, Path(tmp))))
    return render(rows)


if __name__ == "__main__":
    text = build()
    if "--write" in sys.argv[1:]:
        DOC.write_text(text)
        sys.stdout.write(f"wrote {DOC}\n")
    else:
        sys.stdout.write(text)
