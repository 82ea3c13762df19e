"""Image folders and ``.npy`` arrays on disk as :class:`~poisonlab.data.Dataset` objects.

:func:`load_image_folder` and :func:`load_arrays` turn a folder into a Dataset for training
and the harness (``poisonlab evaluate``, suites; registered as the ``image_folder`` and
``npy`` datasets): the splits are read batch by batch through the lazy sources of
:mod:`poisonlab.data_sources`, checked per batch (NaN, shape, labels) and materialised as
float32 tensors, which costs ``4 * n * prod(input_shape)`` bytes for each split (CIFAR-10's
10000 test images: 123 MB; 50000 ImageNet images at 224x224: 30 GB, too much: evaluate a
subset, or attack the lazy view through the Python API).

>>> ds = load_image_folder("photos", seed=0)  # doctest: +SKIP
>>> ds.x_test.shape, ds.bounds  # doctest: +SKIP
(torch.Size([200, 3, 32, 32]), (0.0, 1.0))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ._validation import validate_bool, validate_bounds, validate_seed
from .data import Dataset
from .data_sources import (
    SPLITS,
    ImageFolderDataset,
    _npy_paths,
    materialise,
    open_arrays,
)
from .errors import DataError


def _one_class(where: str, k: int, classes: Sequence[str]) -> None:
    if k < 2:
        raise DataError(f"{where} has one class ({classes[0]!r}): expected at least 2 classes")


def load_image_folder(root: str | Path, *, seed: int = 0, size: Sequence[int] | None = None,
                      mode: str | None = None, test_only: bool = False,
                      progress: bool = True) -> Any:
    """Load an image folder as a :class:`~poisonlab.data.Dataset` with bounds ``(0, 1)``.

    Parameters
    ----------
    root : str or Path
        A folder with ``train/`` and ``test/`` (and optional ``val/``) sub-folders, each in
        ``ImageFolder`` layout (one sub-folder per class). Class ids are the sorted class
        folder names of ``train/``; ``test/`` and ``val/`` may lack a class but hold no
        other. Without ``val/`` a stratified validation part of the training images is split
        off, seeded by ``seed`` (as for ``.npz``).
    seed : int >= 0
    size : (H, W), optional
        Resize every image; default: all images must share one size.
    mode : "RGB" | "L", optional
        Convert every image; default: all images must be RGB, or all L.
    test_only : bool
        Allow a ``root`` that is itself one ``ImageFolder`` (class folders directly, no
        ``test/``): it is the test split, and the training and validation splits are empty
        (``poisonlab evaluate``: the metrics that need them are NaN; see README).
    progress : bool
        Bars while the headers are scanned and the pixels read.

    Returns
    -------
    Dataset named ``"image_folder"``; ``meta`` holds ``source``, ``classes`` and ``layout``
    (``"splits"`` or ``"test-only"``).

    Raises
    ------
    DataError
        A missing split, no classes, one class, an empty class folder, a file that is not
        an image, images of different sizes or modes (one line naming the folder or file).
    """
    seed = validate_seed("seed", seed)
    validate_bool("test_only", test_only)
    base = Path(root)
    if not base.is_dir():  # the same one-line message as a class folder's
        ImageFolderDataset(base, size=size, mode=mode, progress=progress)
    subs = {d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")}
    where = f"root={str(root)!r}"
    if "test" not in subs:
        if "train" in subs or "val" in subs or not test_only:
            raise DataError(f"{where} has no test/ folder: expected train/ and test/ (and "
                            "optionally val/), each with one sub-folder of images per class")
        test = ImageFolderDataset(base, size=size, mode=mode, progress=progress)
        _one_class(where, len(test.classes), test.classes)
        x, y = materialise(test, name="x_test", progress=progress)
        return _test_only_dataset(x, y, n_classes=len(test.classes), bounds=test.bounds,
                                  name="image_folder", seed=seed,
                                  meta={"source": str(root), "classes": test.classes})
    other = sorted(subs - set(SPLITS))
    if other:
        raise DataError(f"{where} has a folder {other[0]!r} beside test/: expected only "
                        "train/, val/ and test/ (each with one sub-folder per class)")
    if "train" not in subs and not test_only:
        raise DataError(f"{where} has no train/ folder: expected train/ and test/ (and "
                        "optionally val/)")
    kw = {"size": size, "mode": mode, "progress": progress}
    parts: dict[str, ImageFolderDataset] = {}
    if "train" in subs:
        parts["train"] = ImageFolderDataset(base / "train", **kw)  # type: ignore[arg-type]
        _one_class(f"root={str(base / 'train')!r}", len(parts["train"].classes),
                   parts["train"].classes)
    parts["test"] = ImageFolderDataset(base / "test", classes=parts["train"].classes
                                       if "train" in parts else None, **kw)  # type: ignore[arg-type]
    classes = parts["train"].classes if "train" in parts else parts["test"].classes
    if "val" in subs:
        parts["val"] = ImageFolderDataset(base / "val", classes=classes, **kw)  # type: ignore[arg-type]
    shapes = {s: p.input_shape for s, p in parts.items()}
    first = next(iter(shapes))
    for s, shp in shapes.items():
        if shp != shapes[first]:
            raise DataError(f"{where}: the {s}/ images have shape {shp} (C, H, W) but the "
                            f"{first}/ images {shapes[first]}: expected one shape (or give "
                            "size: [H, W] and mode:)")
    meta = {"source": str(root), "classes": list(classes), "layout": "splits"}
    if "train" not in parts:
        _one_class(where, len(classes), classes)
        x, y = materialise(parts["test"], name="x_test", progress=progress)
        return _test_only_dataset(x, y, n_classes=len(classes), bounds=(0.0, 1.0),
                                  name="image_folder", seed=seed, meta=meta)
    arrays: dict[str, Any] = {}
    for s, p in parts.items():
        arrays[f"x_{s}"], arrays[f"y_{s}"] = materialise(p, name=f"x_{s}", progress=progress)
    # Every class folder of train/ holds an image, so the labels cover 0 .. K-1.
    return Dataset.from_splits(arrays, name="image_folder", seed=seed, bounds=(0.0, 1.0),
                               source=where, meta=meta)


def load_arrays(path: str | Path, *, seed: int = 0, scale: float | None = None,
                bounds: Sequence[float] | None = None, channels_last: bool = False,
                test_only: bool = False, progress: bool = True) -> Any:
    """Load ``.npy`` split arrays (memory-mapped) as a :class:`~poisonlab.data.Dataset`.

    Parameters
    ----------
    path : str or Path
        A folder holding ``x_train.npy``, ``y_train.npy``, ``x_test.npy``, ``y_test.npy``
        (optionally ``x_val.npy``, ``y_val.npy``), or the prefix of such file names
        (``"data/cifar_"`` reads ``data/cifar_x_test.npy``). Each is opened with
        ``np.load(f, mmap_mode="r", allow_pickle=False)`` and read a batch at a time.
    seed : int >= 0
        Seeds the validation split when there is no ``x_val.npy``.
    scale : float > 0, optional
        The scale rule of this module: uint8 inputs are divided by 255 by default and have
        bounds ``(0, 255 / scale)``; other dtypes are divided by ``scale`` (default 1).
    bounds : (lo, hi), optional
        Overrides the bounds (default: as the scale rule says, else the data's min and max).
    channels_last : bool
        The inputs are stored (n, H, W, C): they become (C, H, W).
    test_only : bool
        Allow a folder with only ``x_test.npy`` and ``y_test.npy`` (``poisonlab evaluate``):
        the training and validation splits are empty.
    progress : bool

    Returns
    -------
    Dataset named ``"npy"`` with ``meta["source"]`` the path.

    Raises
    ------
    DataError
        A missing split, an unreadable file, shapes or lengths that do not match, NaN/Inf
        (checked batch by batch), empty arrays, labels that are not ``0 .. K-1``, one class.
    """
    seed = validate_seed("seed", seed)
    validate_bool("test_only", test_only)
    where, files = _npy_paths(path)
    if not files:
        raise DataError(f"{where} holds no x_test.npy: expected a folder (or a path prefix) "
                        "with x_train.npy, y_train.npy, x_test.npy, y_test.npy (np.save)")
    needed = ("test",) if test_only else ("train", "test")
    for s in SPLITS:
        have = [k for k in (f"x_{s}", f"y_{s}") if k in files]
        if (s in needed and len(have) < 2) or len(have) == 1:
            missing = next(k for k in (f"x_{s}", f"y_{s}") if k not in files)
            raise DataError(f"{where} has no {missing}.npy: expected x_train.npy, y_train.npy, "
                            "x_test.npy, y_test.npy (and optionally x_val.npy, y_val.npy)")
    parts = {s: open_arrays(path, s, scale=scale, channels_last=channels_last)
             for s in SPLITS if f"x_{s}" in files}
    dtypes = {p.x.dtype for p in parts.values()}
    if len(dtypes) > 1:
        raise DataError(f"{where} holds inputs of dtypes {sorted(map(str, dtypes))}: expected "
                        "one dtype for every split (the scale rule depends on it)")
    own = next(iter(parts.values())).bounds
    b = validate_bounds("bounds", tuple(bounds)) if bounds is not None else own
    arrays: dict[str, Any] = {}
    for s, p in parts.items():
        arrays[f"x_{s}"], arrays[f"y_{s}"] = materialise(p, name=f"x_{s}", progress=progress)
    meta = {"source": str(path), "scale": next(iter(parts.values())).scale}
    if "train" not in parts:
        y = arrays["y_test"]
        k = int(y.max()) + 1
        if k < 2:
            raise DataError(f"{where}: y_test has one class (0): expected at least 2 classes")
        x = arrays["x_test"]
        if b is None:
            b = validate_bounds("bounds", (float(x.min()), float(x.max())))
        return _test_only_dataset(x, y, n_classes=k, bounds=b, name="npy", seed=seed,
                                  meta=meta)
    return Dataset.from_splits(arrays, name="npy", seed=seed, bounds=b, source=where,
                               meta=meta)


def _test_only_dataset(x: torch.Tensor, y: torch.Tensor, *, n_classes: int,
                       bounds: tuple[float, float], name: str, seed: int,
                       meta: dict[str, Any]) -> Any:
    """A Dataset whose only split is the test set (empty train and validation splits)."""
    lo, hi = bounds
    if float(x.min()) < lo or float(x.max()) > hi:
        raise DataError(f"x_test has values in [{float(x.min()):g}, {float(x.max()):g}]: "
                        f"expected values inside bounds [{lo:g}, {hi:g}]")
    if int(y.max()) >= n_classes:
        raise DataError(f"y_test has labels in [{int(y.min())}, {int(y.max())}]: expected "
                        f"class ids in [0, {n_classes - 1}]")
    empty_x = torch.empty((0, *x.shape[1:]), dtype=torch.float32)
    empty_y = torch.empty(0, dtype=torch.int64)
    return Dataset(x_train=empty_x, y_train=empty_y, x_val=empty_x, y_val=empty_y,
                   x_test=x, y_test=y, n_classes=n_classes, input_shape=tuple(x.shape[1:]),
                   bounds=bounds, name=name, seed=seed,
                   meta={**meta, "layout": "test-only"})


def image_folder_dataset(*, seed: int, root: str, size: Sequence[int] | None = None,
                         mode: str | None = None) -> Dataset:
    """The ``image_folder`` dataset: :func:`load_image_folder` on ``root``."""
    return load_image_folder(root, seed=seed, size=size, mode=mode)


def npy_dataset(*, seed: int, path: str, scale: float | None = None,
                bounds: Sequence[float] | None = None, channels_last: bool = False) -> Dataset:
    """The ``npy`` dataset: :func:`load_arrays` on ``path``."""
    return load_arrays(path, seed=seed, scale=scale, bounds=bounds,
                       channels_last=channels_last)


__all__ = ["image_folder_dataset", "load_arrays", "load_image_folder", "npy_dataset"]
