"""Crafted untrusted files: a weights file whose pickle runs code when loaded unsafely."""

from __future__ import annotations

from pathlib import Path

import torch


class RunsCode:
    """Unpickling this calls ``exec`` on a line that writes ``marker``: proof it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        line = f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('payload ran')"
        return exec, (line,)


def malicious_weights(folder: Path) -> tuple[Path, Path]:
    """(weights file, marker): a state_dict-shaped file with a code-running entry."""
    path, marker = folder / "evil.pt", folder / "PWNED"
    torch.save({"0.weight": torch.zeros(2, 2), "0.bias": RunsCode(marker)}, path)
    return path, marker
