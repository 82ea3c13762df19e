"""Real data on disk: image folders and memory-mapped ``.npy`` arrays, read lazily.

Two sources, each a map-style :class:`torch.utils.data.Dataset` whose items are
``(x_i, y_i)``: ``x_i`` a float32 tensor of shape ``input_shape``, ``y_i`` an int class id.
An attack or a security curve takes one as ``x`` (with ``y=None``) and reads it one batch
at a time, so the test set is never copied whole into float32 there.

- :class:`ImageFolderDataset`: torchvision's ``ImageFolder`` layout, one sub-folder per
  class (class ids are the sorted folder names), images read with Pillow. Pixels become
  float32 ``(C, H, W)`` in ``[0, 1]`` (uint8 / 255), so an eps is in the units people quote
  (8/255). All images share one size and mode (RGB or L), or ``size=(H, W)`` resizes and
  ``mode=`` converts them. Hidden files (names starting with ``.``) are skipped; any other
  file must be an image.
- :class:`ArrayDataset`: a view of ``x`` (n, *input_shape) and ``y`` (n,) arrays, e.g. the
  ``np.memmap`` :func:`open_arrays` opens (``np.load(path, mmap_mode="r",
  allow_pickle=False)``; an ``.npz`` archive cannot be memory-mapped, hence ``.npy`` files).

The scale rule (arrays and images alike): an input array of dtype uint8 holds pixel values;
it is divided by ``scale`` (default 255) and its bounds are ``(0, 255 / scale)``, i.e.
``(0, 1)``. An array of any other dtype is divided by ``scale`` (default 1: as stored) and
its bounds are the ``bounds`` given, else the data's minimum and maximum (as for ``.npz``).

:mod:`poisonlab.data_folders` turns such a folder into a :class:`~poisonlab.data.Dataset`
(the ``image_folder`` and ``npy`` datasets) for training and the harness.

>>> ds = ImageFolderDataset("photos/test")  # doctest: +SKIP
>>> x0, y0 = ds[0]; ds.classes, x0.shape  # doctest: +SKIP
(['cat', 'dog'], torch.Size([3, 32, 32]))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from ._validation import (
    validate_bool,
    validate_choice,
    validate_int_sequence,
    validate_scalar,
)
from .errors import DataError, first_line

#: Images are read in these Pillow modes; others are converted only when ``mode=`` says so.
IMAGE_MODES = ("RGB", "L")
#: The split folders of an image folder / the split arrays of an array folder.
SPLITS = ("train", "val", "test")
#: Items read and checked at once when a split is materialised.
LOAD_BATCH = 256


def _progress(total: int, desc: str, progress: bool) -> Any:
    """A bar over ``total`` items that appears after half a second, silent when stderr is not
    a terminal (tqdm's ``disable=None``), as the run's bars are."""
    return tqdm(total=total, desc=desc, unit="img", leave=False, delay=0.5,
                disable=None if progress else True)


def _scale_for(dtype: np.dtype, scale: float | None) -> float:
    """The divisor of the scale rule: ``scale``, else 255 for uint8 and 1 otherwise."""
    if scale is None:
        return 255.0 if dtype == np.uint8 else 1.0
    return float(validate_scalar("scale", scale, lo=0, lo_closed=False))


def to_float(arr: np.ndarray, scale: float) -> np.ndarray:
    """A float32 copy of ``arr`` divided by ``scale`` (uint8 ``k`` becomes ``float32(k) / 255``).

    Always a copy, never a view of ``arr`` (a read-only memory map stays untouched).

    >>> to_float(np.array([0, 51, 255], dtype=np.uint8), 255.0).tolist()
    [0.0, 0.20000000298023224, 1.0]
    """
    out = np.array(arr, dtype=np.float32)
    if scale != 1.0:
        out /= np.float32(scale)
    return out


# --------------------------------------------------------------------------- arrays


class ArrayDataset(TorchDataset):  # type: ignore[type-arg]
    """A map-style view of ``x`` (n, *input_shape) and labels ``y`` (n,), read lazily.

    ``x`` stays as given (an ``np.memmap`` stays on disk): item ``i`` is read and converted
    to float32 on access, with the scale rule of this module. No copy of ``x`` is made.

    Parameters
    ----------
    x : numpy array (or np.memmap), shape (n, *input_shape), numeric
    y : array of integer class ids, shape (n,); read into memory (int64)
    scale : float > 0, optional
        Divides the inputs; default 255 for uint8 ``x``, 1 otherwise.
    channels_last : bool
        ``x`` is stored (n, H, W, C) (as numpy images usually are): items are ``(C, H, W)``.
    name : str
        How error messages name the inputs (the labels are ``y`` with the same suffix).

    Attributes
    ----------
    targets : ndarray (n,) int64, the labels (torchvision's name, read by the attack core)
    input_shape : tuple of int
    scale : float
    bounds : (lo, hi) or None; ``(0, 255 / scale)`` for uint8 inputs, else None (unknown
        until :meth:`value_range` reads the data)

    Raises
    ------
    DataError
        A non-numeric or complex ``x``, fewer than 2 dimensions, no samples, labels that are
        not integers or do not match ``x`` in length.

    >>> d = ArrayDataset(np.full((4, 1, 2, 2), 51, dtype=np.uint8), np.array([0, 1, 0, 1]))
    >>> x0, y0 = d[1]; x0.dtype, round(float(x0.max()), 6), y0, d.bounds
    (torch.float32, 0.2, 1, (0.0, 1.0))
    """

    def __init__(self, x: Any, y: Any, *, scale: float | None = None,
                 channels_last: bool = False, name: str = "x") -> None:
        name_y = "y" + name[1:] if name.startswith("x") else f"{name} labels"
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray):
            raise DataError(f"{name} is a {type(x).__name__}: expected a numpy array "
                            "(or np.memmap)")
        if x.dtype.kind not in "iuf":
            raise DataError(f"{name} has dtype {x.dtype}: expected int, uint or float inputs")
        if x.ndim < (3 if channels_last else 2):
            raise DataError(f"{name} has shape {x.shape}: expected (n, *input_shape)"
                            + (" with channels last (n, H, W, C)" if channels_last else ""))
        if x.shape[0] == 0:
            raise DataError(f"{name} is empty (shape {x.shape}): expected at least one example")
        y_arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if y_arr.dtype.kind not in "iu":
            raise DataError(f"{name_y} has dtype {y_arr.dtype}: expected integer class ids")
        if y_arr.shape != (x.shape[0],):
            raise DataError(f"{name_y} has shape {y_arr.shape}: expected ({x.shape[0]},) to "
                            f"match {name} of shape {x.shape}")
        if y_arr.min() < 0:
            raise DataError(f"{name_y} has labels in [{int(y_arr.min())}, {int(y_arr.max())}]: "
                            "expected class ids >= 0")
        self.x = x
        self.targets = y_arr.astype(np.int64)
        self.scale = _scale_for(x.dtype, scale)
        self.channels_last = validate_bool("channels_last", channels_last)
        self.name = name
        self.bounds: tuple[float, float] | None = (
            (0.0, 255.0 / self.scale) if x.dtype == np.uint8 else None)
        shape = tuple(int(s) for s in x.shape[1:])
        self.input_shape = (shape[-1], *shape[:-1]) if channels_last else shape

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def _convert(self, arr: np.ndarray) -> torch.Tensor:
        if self.channels_last:
            arr = np.moveaxis(arr, -1, 1 if arr.ndim == self.x.ndim else 0)
        return torch.from_numpy(np.ascontiguousarray(to_float(arr, self.scale)))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._convert(np.asarray(self.x[i])), int(self.targets[i])

    def batch(self, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``sl`` at once (one contiguous read): float32 (m, *input_shape), int64 (m,)."""
        return self._convert(np.asarray(self.x[sl])), torch.from_numpy(self.targets[sl])

    def value_range(self, *, batch_size: int = 4096, progress: bool = False
                    ) -> tuple[float, float]:
        """The minimum and maximum of the (scaled) inputs, read ``batch_size`` rows at a time.

        Raises
        ------
        DataError
            NaN or Inf in the inputs (naming the first bad row).
        """
        lo, hi = np.inf, -np.inf
        with _progress(len(self), f"scan {self.name}", progress) as bar:
            for start in range(0, len(self), batch_size):
                chunk = self.batch(slice(start, start + batch_size))[0]
                _check_finite(chunk, self.name, start)
                lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
                bar.update(chunk.shape[0])
        return lo, hi


def _check_finite(x: torch.Tensor, name: str, start: int) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        row = start + int(bad.nonzero()[0, 0])
        raise DataError(f"{name} contains NaN or Inf values (first in example {row}): "
                        "expected finite inputs")


def _npy_paths(path: str | Path) -> tuple[str, dict[str, Path]]:
    """The split ``.npy`` files of a folder (``DIR/x_test.npy``) or a prefix
    (``data/cifar_`` -> ``data/cifar_x_test.npy``), and how messages name the source."""
    p = Path(path)
    stem = (lambda k: p / f"{k}.npy") if p.is_dir() else (lambda k: Path(f"{path}{k}.npy"))
    found = {f"{a}_{s}": stem(f"{a}_{s}") for s in SPLITS for a in "xy"}
    return f"path={str(path)!r}", {k: v for k, v in found.items() if v.is_file()}


def _load_npy(key: str, file: Path) -> np.ndarray:
    try:
        arr = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{key}: {str(file)!r} cannot be read as .npy: {first_line(e)}"
                        ) from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{key}: {str(file)!r} is not a single .npy array: expected one array "
                        "per file (np.save)")
    return arr


def open_arrays(path: str | Path, split: str = "test", *, scale: float | None = None,
                channels_last: bool = False) -> ArrayDataset:
    """Open one split of an array folder as a lazy :class:`ArrayDataset` over ``np.memmap``.

    Parameters
    ----------
    path : str or Path
        A folder holding ``x_{split}.npy`` and ``y_{split}.npy`` (written by ``np.save``),
        or a path prefix: ``"data/cifar_"`` reads ``data/cifar_x_test.npy``.
    split : "train" | "val" | "test"
    scale, channels_last
        As for :class:`ArrayDataset`.

    Raises
    ------
    DataError
        A missing or unreadable file, an array that is not numeric, shapes that differ.
    """
    validate_choice("split", split, SPLITS)
    where, files = _npy_paths(path)
    for key in (f"x_{split}", f"y_{split}"):
        if key not in files:
            raise DataError(f"{where} has no {key}.npy: expected x_{split}.npy and "
                            f"y_{split}.npy (a folder, or a prefix of the file names)")
    x = _load_npy(f"x_{split}", files[f"x_{split}"])
    y = _load_npy(f"y_{split}", files[f"y_{split}"])
    return ArrayDataset(x, np.asarray(y), scale=scale, channels_last=channels_last,
                        name=f"x_{split}")


# --------------------------------------------------------------------------- images


def _header(f: Path) -> tuple[tuple[int, int], str]:
    """An image file's ``(H, W)`` and Pillow mode, from its header (no pixels decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as img:
            return (img.height, img.width), img.mode
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"image {str(f)!r} cannot be read by Pillow ({first_line(e)}): "
                        "expected only image files in the class folders (hidden files are "
                        "skipped)") from None


class ImageFolderDataset(TorchDataset):  # type: ignore[type-arg]
    """The images of a folder in torchvision's ``ImageFolder`` layout, read lazily.

    ``root/<class>/<image>``: one sub-folder per class; class ``i`` is the ``i``-th folder
    name in sorted order (or in ``classes``). Files in sub-folders of a class folder count
    for that class; hidden files and folders (``.DS_Store``) are skipped. Building the
    dataset reads every image's header (size and mode, not the pixels); an item is decoded
    on access into float32 ``(C, H, W)`` in ``[0, 1]`` (uint8 / 255).

    Parameters
    ----------
    root : str or Path
    size : (H, W), optional
        Resize every image to it (bilinear). Default: every image must have the same size.
    mode : "RGB" | "L", optional
        Convert every image to it. Default: every image must be RGB, or every image L.
    classes : sequence of str, optional
        The class names in id order, e.g. a training folder's: this folder's class folders
        must be among them (a class may be absent). Default: the sorted folder names.
    progress : bool
        Show a bar while the headers are read (after half a second, when stderr is a
        terminal).

    Attributes
    ----------
    classes : list of str; samples : list of (Path, int); targets : ndarray (n,) int64
    input_shape : (C, H, W); bounds : (0.0, 1.0)

    Raises
    ------
    DataError
        One line naming the folder or file: no such folder, no class folders, an empty
        class folder, a file Pillow cannot read, an image of another size or mode.

    >>> ImageFolderDataset("nowhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    poisonlab.errors.DataError: root='nowhere' does not exist: expected a folder with one ...
    """

    bounds = (0.0, 1.0)

    def __init__(self, root: str | Path, *, size: Sequence[int] | None = None,
                 mode: str | None = None, classes: Sequence[str] | None = None,
                 progress: bool = True) -> None:
        self.root = Path(root)
        where = f"root={str(root)!r}"
        what = "expected a folder with one sub-folder of images per class"
        if not self.root.exists():
            raise DataError(f"{where} does not exist: {what}")
        if not self.root.is_dir():
            raise DataError(f"{where} is not a folder: {what}")
        self.size = None if size is None else validate_int_sequence("size", size, length=2)
        self.mode = None if mode is None else validate_choice("mode", mode, IMAGE_MODES)
        progress = validate_bool("progress", progress)
        found = sorted(d.name for d in self.root.iterdir()
                       if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise DataError(f"{where} has no class folders: {what}")
        if classes is None:
            self.classes = found
        else:
            self.classes = list(classes)
            extra = [c for c in found if c not in self.classes]
            if extra:
                raise DataError(f"{where} has a class folder {extra[0]!r} that the training "
                                f"folder lacks: expected classes among {self.classes}")
        self.samples: list[tuple[Path, int]] = []
        for c in found:
            files = sorted(f for f in (self.root / c).rglob("*") if f.is_file()
                           and not any(part.startswith(".")
                                       for part in f.relative_to(self.root).parts))
            if not files:
                raise DataError(f"{where}: class folder {c!r} holds no files: expected at "
                                "least one image per class")
            self.samples += [(f, self.classes.index(c)) for f in files]
        self.targets = np.array([t for _, t in self.samples], dtype=np.int64)
        first = (self.samples[0][0], *_header(self.samples[0][0]))
        with _progress(len(self.samples), f"scan {self.root.name or root}", progress) as bar:
            for f, _ in self.samples:
                hw, img_mode = _header(f)
                if self.mode is None and img_mode not in IMAGE_MODES:
                    raise DataError(f"image {str(f)!r} has mode {img_mode!r}: expected RGB or "
                                    "L (or give mode: RGB or mode: L to convert)")
                if self.mode is None and img_mode != first[2]:
                    raise DataError(f"image {str(f)!r} has mode {img_mode!r} but "
                                    f"{str(first[0])!r} has {first[2]!r}: expected one mode "
                                    "for all images (or give mode: RGB or mode: L)")
                if self.size is None and hw != first[1]:
                    raise DataError(f"image {str(f)!r} is {hw[0]}x{hw[1]} (HxW) but "
                                    f"{str(first[0])!r} is {first[1][0]}x{first[1][1]}: "
                                    "expected one size for all images (or give size: [H, W] "
                                    "to resize)")
                bar.update(1)
        self._mode = self.mode or first[2]
        h, w = self.size or first[1]
        self.input_shape = (3 if self._mode == "RGB" else 1, h, w)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        f, target = self.samples[i]
        try:
            with Image.open(f) as file:
                img: Image.Image = file.convert(self._mode) if file.mode != self._mode else file
                _, h, w = self.input_shape
                if (img.height, img.width) != (h, w):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except OSError as e:  # truncated or corrupt pixel data
            raise DataError(f"image {str(f)!r} cannot be decoded ({first_line(e)}): expected "
                            "a readable image") from None
        arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
        return torch.from_numpy(np.ascontiguousarray(to_float(arr, 255.0))), target


# --------------------------------------------------------------------------- materialise


def _batches(data: Any, n: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, x, y)`` for consecutive batches of ``LOAD_BATCH`` items of ``data``."""
    for start in range(0, n, LOAD_BATCH):
        stop = min(start + LOAD_BATCH, n)
        if isinstance(data, ArrayDataset):
            x, y = data.batch(slice(start, stop))
        else:
            items = [data[i] for i in range(start, stop)]
            try:
                x = torch.stack([torch.as_tensor(np.asarray(it[0])) for it in items])
                y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64)
            except (TypeError, ValueError, IndexError, RuntimeError) as e:
                raise DataError(f"items {start}..{stop - 1} are not (input, label) pairs of "
                                f"one shape ({first_line(e)})") from None
        yield start, x, y


def materialise(data: Any, *, name: str = "x", progress: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a map-style Dataset of ``(x_i, y_i)`` items into float32 and int64 tensors.

    Reads ``LOAD_BATCH`` items at a time into one preallocated float32 tensor (peak memory:
    that tensor plus one batch), checking each batch for NaN/Inf, shape and integer labels.

    Parameters
    ----------
    data : torch Dataset with ``__len__`` and ``__getitem__``
    name : str
        How messages name the split (``"x_test"``; the labels are ``y_test``).
    progress : bool

    Returns
    -------
    x : Tensor (n, *input_shape) float32; y : Tensor (n,) int64

    Raises
    ------
    DataError
        An empty dataset, items that are not pairs, inputs of another shape, NaN/Inf,
        labels that are not integers >= 0. The message names ``name`` and the example.
    """
    name_y = "y" + name[1:] if name.startswith("x") else f"{name} labels"
    try:
        n = len(data)
    except TypeError:
        raise DataError(f"{name} is a {type(data).__name__} without len(): expected a "
                        "map-style Dataset (__getitem__ and __len__)") from None
    if n == 0:
        raise DataError(f"{name} is an empty Dataset: expected at least one example")
    batches = _batches(data, n)
    start, x, y = next(batches)
    x_out = torch.empty((n, *x.shape[1:]), dtype=torch.float32)
    y_out = torch.empty(n, dtype=torch.int64)
    with _progress(n, f"load {name}", progress) as bar:
        while True:
            if torch.is_complex(x) or x.dtype == torch.bool:
                raise DataError(f"{name} has dtype {x.dtype}: expected real numbers")
            if x.dtype == torch.uint8:  # raw pixels (a PIL image, no transform): refuse, as
                # the attack core would read them unscaled
                raise DataError(f"{name} has items of dtype uint8 (raw pixels): expected float "
                                "inputs (add a transform such as torchvision's ToTensor, or "
                                "use ArrayDataset, which divides uint8 by 255)")
            if x.shape[1:] != x_out.shape[1:]:
                raise DataError(f"{name}: example {start} has shape {tuple(x.shape[1:])}: "
                                f"expected {tuple(x_out.shape[1:])} like example 0")
            x = x.float()
            _check_finite(x, name, start)
            if y.dim() != 1 or y.shape[0] != x.shape[0] or (y.numel() and int(y.min()) < 0):
                raise DataError(f"{name_y}: labels {start}..{start + x.shape[0] - 1} are not "
                                "class ids >= 0")
            x_out[start:start + x.shape[0]] = x
            y_out[start:start + x.shape[0]] = y
            bar.update(x.shape[0])
            nxt = next(batches, None)
            if nxt is None:
                break
            start, x, y = nxt
    return x_out, y_out


__all__ = ["ArrayDataset", "ImageFolderDataset", "materialise", "open_arrays", "to_float"]
