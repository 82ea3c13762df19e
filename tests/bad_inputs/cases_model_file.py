"""Weights files handed to load_weights / ``poisonlab evaluate --weights``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from poisonlab import build_model
from poisonlab.errors import ConfigError
from poisonlab.models import load_weights

from .harness import Case, cli_case
from .payloads import malicious_weights


def _model() -> torch.nn.Module:
    return build_model("mlp", (4,), 3, hidden=[8], seed=0)


def _load(write: Callable[[Path], object]) -> Callable[[Path], object]:
    def call(tmp: Path) -> object:
        path = tmp / "w.pt"
        write(path)
        return load_weights(_model(), path)
    return call


def _evil(tmp: Path) -> object:
    path, marker = malicious_weights(tmp)
    try:
        return load_weights(_model(), path)
    finally:
        if marker.exists():  # pragma: no cover - the payload ran: a security bug
            raise AssertionError("the weights file's payload ran")


def _data(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.random((30, 4), dtype=np.float32)
    y = np.arange(30) % 3
    np.savez(tmp / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    return tmp / "d.npz"


def _cli_evil(tmp: Path) -> list[str]:
    path, _ = malicious_weights(tmp)
    return ["evaluate", "--model", "mlp", "--weights", path, "--data", _data(tmp),
            "--out", tmp / "out", "--quiet"]


def _other_keys(path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(3, 4)}, path)


def _other_shapes(path: Path) -> None:
    state = _model().state_dict()
    state = {k: torch.zeros(*[s + 1 for s in v.shape]) for k, v in state.items()}
    torch.save(state, path)


CASES = [
    Case("model file", "a weights file whose pickle runs code (exec payload)", _evil,
         ConfigError, r"refused by torch\.load\(weights_only=True\) \(it names exec"),
    cli_case("model file", "poisonlab evaluate --weights with a code-running pickle",
             _cli_evil, r"weights=.*refused by torch\.load\(weights_only=True\)"),
    Case("model file", "a missing weights file", lambda tmp: load_weights(_model(),
         tmp / "nope.pt"), ConfigError, r"weights=.*does not exist"),
    Case("model file", "a folder instead of a weights file",
         lambda tmp: load_weights(_model(), tmp), ConfigError, r"weights=.*not a file"),
    Case("model file", "an empty weights file", _load(lambda p: p.write_bytes(b"")),
         ConfigError, r"weights=.*cannot be read"),
    Case("model file", "a weights file of random bytes",
         _load(lambda p: p.write_bytes(np.random.default_rng(0).bytes(256))),
         ConfigError, r"weights=.*(cannot be read|refused)"),
    Case("model file", "a whole tensor instead of a state_dict",
         _load(lambda p: torch.save(torch.zeros(3), p)), ConfigError,
         r"holds a Tensor that is not a mapping"),
    Case("model file", "a state_dict with keys the model does not have", _load(_other_keys),
         ConfigError, r"do not fit the model"),
    Case("model file", "a state_dict with the model's keys but other shapes",
         _load(_other_shapes), ConfigError, r"do not fit the model.*size mismatch"),
    Case("model file", "weights=123 (not a path)", lambda tmp: load_weights(_model(), 123),
         ConfigError, r"weights=123 is not allowed: expected a file path"),
]
