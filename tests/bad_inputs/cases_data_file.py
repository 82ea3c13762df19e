"""``.npz`` data files: load_npz, ``poisonlab evaluate --data`` and a suite's npz dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poisonlab import build_model, load_dataset
from poisonlab.data import load_npz
from poisonlab.errors import ConfigError, DataError

from .harness import Case, cli_case

RNG = np.random.default_rng(0)


def _arrays(**kw: Any) -> dict[str, Any]:
    """A valid split (4 features, 3 classes), with entries replaced (None: removed)."""
    rng = np.random.default_rng(1)  # the same arrays every time a case runs
    d: dict[str, Any] = {"x_train": rng.random((30, 4), dtype=np.float32),
                         "y_train": np.arange(30) % 3,
                         "x_test": rng.random((9, 4), dtype=np.float32),
                         "y_test": np.arange(9) % 3}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


def _write(tmp: Path, **kw: Any) -> Path:
    path = tmp / "d.npz"
    np.savez(path, **_arrays(**kw))
    return path


def _npz(**kw: Any) -> Callable[[Path], object]:
    return lambda tmp: load_npz(_write(tmp, **kw))


def _raw(content: bytes, name: str = "d.npz") -> Callable[[Path], object]:
    def call(tmp: Path) -> object:
        (tmp / name).write_bytes(content)
        return load_npz(tmp / name)
    return call


def _truncated(tmp: Path) -> object:
    path = _write(tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return load_npz(path)


def _object_array(tmp: Path) -> object:
    path = tmp / "d.npz"
    arrays = _arrays()
    arrays["y_train"] = np.array([int(v) for v in arrays["y_train"]], dtype=object)
    np.savez(path, **arrays)  # pickled inside the zip: must not be unpickled on load
    return load_npz(path)


def _npy(tmp: Path) -> object:
    np.save(tmp / "d.npy", np.zeros((3, 4)))
    return load_npz(tmp / "d.npy")


def _suite_dataset(**kw: Any) -> Callable[[Path], object]:
    """A suite's ``{name: npz, path: ...}`` entry, as the runner loads it."""
    return lambda tmp: load_dataset("npz", path=str(_write(tmp, **kw)))


def _evaluate(**kw: Any) -> Callable[[Path], list[str]]:
    """``poisonlab evaluate`` with a good model and weights and the data file under test."""
    def argv(tmp: Path) -> list[str]:
        torch.save(build_model("mlp", (4,), 3, seed=0).state_dict(), tmp / "w.pt")
        data = kw.get("_path")  # never pop: a case runs more than once
        arrays = {k: v for k, v in kw.items() if k != "_path"}
        path = _write(tmp, **arrays) if data is None else data(tmp)
        return ["evaluate", "--model", "mlp", "--weights", str(tmp / "w.pt"), "--data",
                str(path), "--out", str(tmp / "out"), "--quiet"]
    return argv


def _text_file(tmp: Path) -> Path:
    (tmp / "d.npz").write_text("x,y\n0.1,0\n")
    return tmp / "d.npz"


NAN_X = RNG.random((30, 4)).astype(np.float32)
NAN_X[3, 1] = np.nan
INF_X = RNG.random((9, 4)).astype(np.float32)
INF_X[0, 0] = np.inf

CASES = [
    # ---------------------------------------------------------------- the file itself
    Case("data file", "a missing .npz file", lambda tmp: load_npz(tmp / "nope.npz"),
         DataError, r"path='.*/nope\.npz' does not exist: expected an \.npz file"),
    Case("data file", "a folder instead of a file", lambda tmp: load_npz(tmp), DataError,
         r"path='.*' is not a file: expected an \.npz file"),
    Case("data file", "path=123 (not a path)", lambda tmp: load_npz(123), DataError,
         r"path=123 is not allowed: expected the path of an \.npz file"),
    Case("data file", "an empty file", _raw(b""), DataError,
         r"path='.*/d\.npz' cannot be read as \.npz: it is not a zip archive"),
    Case("data file", "a CSV text file named .npz", _raw(b"x,y\n0.1,0\n"), DataError,
         r"path='.*/d\.npz' cannot be read as \.npz: it is not a zip archive"),
    Case("data file", "random bytes", _raw(np.random.default_rng(1).bytes(300)), DataError,
         r"path='.*/d\.npz' cannot be read as \.npz"),
    Case("data file", "a truncated zip", _truncated, DataError,
         r"path='.*/d\.npz' cannot be read as \.npz"),
    Case("data file", "a single .npy array instead of an .npz", _npy, DataError,
         r"path='.*/d\.npy' holds a single array: expected an \.npz file"),
    Case("data file", "an object array (pickled; refused, never unpickled)", _object_array,
         DataError, r"cannot be read as \.npz: Object arrays cannot be loaded when "
         r"allow_pickle=False"),
    # ---------------------------------------------------------------- which arrays
    Case("data file", "no y_test array", _npz(y_test=None), DataError,
         r"path='.*/d\.npz' has no array 'y_test': expected x_train, y_train, x_test"),
    Case("data file", "no x_train array", _npz(x_train=None), DataError,
         r"has no array 'x_train'"),
    Case("data file", "an unknown array 'x_tset' (a typo)",
         _npz(y_test=None, x_test=None, x_tset=np.zeros((9, 4)), y_tset=np.zeros(9, int)),
         DataError, r"has an unknown array 'x_tset'.*did you mean 'x_test'"),
    Case("data file", "x_val without y_val", _npz(x_val=RNG.random((6, 4))), DataError,
         r"has no array 'y_val': expected x_val and y_val together"),
    # ---------------------------------------------------------------- values
    Case("data file", "NaN in x_train", _npz(x_train=NAN_X), DataError,
         r"x_train contains 1 NaN or Inf values: expected finite inputs"),
    Case("data file", "Inf in x_test", _npz(x_test=INF_X), DataError,
         r"x_test contains 1 NaN or Inf values"),
    Case("data file", "x_train of strings", _npz(x_train=np.full((30, 4), "a")), DataError,
         r"x_train has dtype <U1: expected numbers"),
    Case("data file", "x_train of complex numbers",
         _npz(x_train=RNG.random((30, 4)).astype(np.complex64)), DataError,
         r"x_train has dtype complex64: expected real numbers"),
    Case("data file", "float labels (0.5, 1.5, ...)", _npz(y_train=np.arange(30) % 3 + 0.5),
         DataError, r"y_train has dtype torch.float64: expected integer class ids"),
    Case("data file", "float labels with integer values (0.0, 1.0, ...)",
         _npz(y_test=(np.arange(9) % 3).astype(np.float32)), DataError,
         r"y_test has dtype torch.float32: expected integer class ids"),
    Case("data file", "negative labels", _npz(y_train=np.arange(30) % 3 - 1), DataError,
         r"y_train has labels in \[-1, 1\]: expected class ids in \[0, \d\]"),
    Case("data file", "bool labels", _npz(y_train=np.arange(30) % 2 == 0), DataError,
         r"y_train has dtype torch.bool: expected integer class ids"),
    Case("data file", "a test label no training example has",
         _npz(y_test=np.array([0, 1, 2, 0, 1, 2, 0, 1, 5])), DataError,
         r"y_train has no example of class 3: expected labels 0 \.\. K-1 \(K=6\)"),
    Case("data file", "labels of shape (n, 1)", _npz(y_train=(np.arange(30) % 3)[:, None]),
         DataError, r"y_train has shape \(30, 1\): expected \(30,\) to match x_train"),
    Case("data file", "a single class", _npz(y_train=np.zeros(30, int), y_test=np.zeros(9, int)),
         DataError, r"y_train has one class \(0\): expected at least 2 classes"),
    Case("data file", "one example of a class and no x_val",
         _npz(y_train=np.r_[np.zeros(29, int), [1]], y_test=np.arange(9) % 2), DataError,
         r"y_train has 1 example of class 1: splitting off a stratified validation set"),
    # ---------------------------------------------------------------- shapes
    Case("data file", "x_train and y_train of different lengths",
         _npz(y_train=np.arange(25) % 3), DataError,
         r"y_train has shape \(25,\): expected \(30,\) to match x_train of shape \(30, 4\)"),
    Case("data file", "x_test with another feature count than x_train",
         _npz(x_test=RNG.random((9, 5))), DataError,
         r"x_test has shape \(9, 5\): expected \(n, 4\) like x_train"),
    Case("data file", "x_val with another feature count than x_train",
         _npz(x_val=RNG.random((6, 3)), y_val=np.arange(6) % 3), DataError,
         r"x_val has shape \(6, 3\): expected \(n, 4\) like x_train"),
    Case("data file", "x_train a 1-D vector", _npz(x_train=RNG.random(30)), DataError,
         r"x_train has shape \(30,\): expected \(n, \*input_shape\)"),
    Case("data file", "empty x_train and y_train",
         _npz(x_train=np.zeros((0, 4)), y_train=np.zeros(0, int)), DataError,
         r"y_train is empty: expected at least one example"),
    Case("data file", "empty test split",
         _npz(x_test=np.zeros((0, 4)), y_test=np.zeros(0, int)), DataError,
         r"y_test is empty: expected at least one example"),
    # ---------------------------------------------------------------- bounds
    Case("data file", "bounds with three numbers", _npz(bounds=np.array([0.0, 1.0, 2.0])),
         ConfigError, r"bounds=\(0.0, 1.0, 2.0\) is not allowed: expected a pair"),
    Case("data file", "bounds reversed (1, 0)", _npz(bounds=np.array([1.0, 0.0])),
         ConfigError, r"bounds=\(1.0, 0.0\) is not allowed: expected lo < hi"),
    Case("data file", "bounds holding NaN", _npz(bounds=np.array([0.0, np.nan])),
         ConfigError, r"bounds\[1\]=nan is not allowed: expected a finite number"),
    Case("data file", "bounds of strings", _npz(bounds=np.array(["0", "1"])), DataError,
         r"bounds has dtype <U1: expected numbers"),
    Case("data file", "inputs outside the file's bounds", _npz(bounds=np.array([0.0, 0.5])),
         DataError, r"x_train has values in \[.*\]: expected values inside bounds \[0, 0.5\]"),
    Case("data file", "all inputs equal (no range for bounds)",
         _npz(x_train=np.ones((30, 4)), x_test=np.ones((9, 4))), ConfigError,
         r"bounds=\(1.0, 1.0\) is not allowed: expected lo < hi"),
    # ---------------------------------------------------------------- suite dataset
    Case("data file", "suite dataset {name: npz} with NaN in x_train",
         _suite_dataset(x_train=NAN_X), DataError, r"x_train contains 1 NaN or Inf values"),
    Case("data file", "suite dataset {name: npz} with a missing path",
         lambda tmp: load_dataset("npz", path=str(tmp / "nope.npz")), DataError,
         r"path='.*/nope\.npz' does not exist"),
    Case("data file", "suite dataset {name: npz} without path", lambda tmp: load_dataset("npz"),
         ConfigError, r"dataset 'npz' cannot be called with seed: missing a required "
         r"argument: 'path'"),
    # ---------------------------------------------------------------- CLI
    cli_case("data file", "poisonlab evaluate --data with NaN in x_test",
             _evaluate(x_test=INF_X), r"x_test contains 1 NaN or Inf values"),
    cli_case("data file", "poisonlab evaluate --data with float labels",
             _evaluate(y_train=np.arange(30) % 3 + 0.5),
             r"y_train has dtype torch.float64: expected integer class ids"),
    cli_case("data file", "poisonlab evaluate --data missing y_test",
             _evaluate(y_test=None), r"has no array 'y_test'"),
    cli_case("data file", "poisonlab evaluate --data with 5 features for a 4-feature model",
             _evaluate(x_train=RNG.random((30, 5)), x_test=RNG.random((9, 5))),
             r"(x has input shape \(5,\), which the model cannot take|do not fit the model)"),
    cli_case("data file", "poisonlab evaluate --data with x/y length mismatch",
             _evaluate(y_test=np.arange(7) % 3),
             r"y_test has shape \(7,\): expected \(9,\) to match x_test"),
    cli_case("data file", "poisonlab evaluate --data pointing at a text file",
             _evaluate(_path=_text_file), r"cannot be read as \.npz"),
]
