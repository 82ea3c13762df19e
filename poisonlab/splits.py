"""Given splits checked and completed: what :meth:`poisonlab.data.Dataset.from_splits`
does with a mapping of arrays (an .npz file, ``as_dataset``) before it builds a Dataset.

Each helper checks one thing and raises one :class:`~poisonlab.errors.DataError` line
naming the array: unknown or missing keys, inputs and labels that do not pair up, splits
of different input shapes, labels that are not 0..K-1 with every class in training,
inputs outside the bounds; and it splits a stratified validation set off the training
split when none is given.

>>> import numpy as np
>>> known_keys({"x_train": 0, "y_trian": 0}, "dataset 't'")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
poisonlab.errors.DataError: dataset 't' has an unknown array 'y_trian': ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ._validation import as_array, validate_bounds, validate_inputs, validate_labels
from .data_sources import materialise
from .errors import DataError

#: Fractions of the data held out for testing and for validation (calibration, tuning).
TEST_FRACTION = 0.25
VAL_FRACTION = 0.10
#: The arrays a mapping of splits (an .npz file) must and may hold.
SPLIT_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL_ARRAYS = ("x_val", "y_val", "bounds")
#: Keys of a mapping whose value is a map-style torch Dataset of (x_i, y_i) for that split.
SPLIT_DATASETS = ("train", "test", "val")


def read_split_datasets(arrays: Mapping[str, Any], where: str
                         ) -> tuple[Mapping[str, Any], tuple[float, float] | None]:
    """Replace ``train``/``test``/``val`` torch Datasets by ``x_*``/``y_*`` tensors.

    Returns the mapping and the bounds every such Dataset declares (``bounds`` attribute),
    or None when they declare none or differ.
    """
    given = [k for k in SPLIT_DATASETS if k in arrays]
    if not given:
        return arrays, None
    from torch.utils.data import Dataset as TorchDataset

    out = {k: v for k, v in arrays.items() if k not in SPLIT_DATASETS}
    declared = set()
    for key in given:
        v = arrays[key]
        if not isinstance(v, TorchDataset) or isinstance(v, torch.Tensor):
            raise DataError(f"{where}: {key} is a {type(v).__name__}: expected a map-style "
                            f"torch Dataset of (x, y) pairs (or arrays x_{key}, y_{key})")
        if f"x_{key}" in arrays or f"y_{key}" in arrays:
            raise DataError(f"{where} has both {key} and x_{key}/y_{key}: expected one of them")
        out[f"x_{key}"], out[f"y_{key}"] = materialise(v, name=f"x_{key}")
        b = getattr(v, "bounds", None)
        declared.add(tuple(float(e) for e in b) if isinstance(b, tuple | list) else None)
    one = declared.pop() if len(declared) == 1 else None
    return out, one  # type: ignore[return-value]


_EXPECTED = (f"expected {', '.join(SPLIT_ARRAYS)} (and optionally "
             f"{', '.join(OPTIONAL_ARRAYS)})")


def known_keys(arrays: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``arrays``, or DataError naming a key that is neither an array nor a split Dataset."""
    for key in arrays:
        if key not in SPLIT_ARRAYS + OPTIONAL_ARRAYS + SPLIT_DATASETS:
            from .registry import did_you_mean

            hint = did_you_mean(str(key), list(SPLIT_ARRAYS + OPTIONAL_ARRAYS))
            raise DataError(f"{where} has an unknown array {key!r}: {_EXPECTED}, or torch "
                            f"Datasets under train, test, val{hint}")
    return arrays


def required_keys(arrays: Mapping[str, Any], where: str) -> None:
    """DataError when a required split is missing, or only one of x_val and y_val given."""
    for key in SPLIT_ARRAYS:
        if key not in arrays:
            raise DataError(f"{where} has no array {key!r}: {_EXPECTED}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing = "y_val" if "x_val" in arrays else "x_val"
        raise DataError(f"{where} has no array {missing!r}: expected x_val and y_val "
                        "together, or neither")


def split_array(arrays: Mapping[str, Any], key: str, where: str) -> Any:
    """``arrays[key]`` as it is (a tensor) or as a numeric numpy array."""
    v = arrays[key]
    if isinstance(v, torch.Tensor):
        return v
    try:
        return as_array(key, v)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


def read_parts(arrays: Mapping[str, Any], names: list[str], where: str
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], tuple[int, ...]]:
    """The splits' inputs (float32, contiguous) and labels, and the shared input shape."""
    xs: dict[str, torch.Tensor] = {}
    ys: dict[str, torch.Tensor] = {}
    for part in names:
        x_t, y_t = validate_inputs(split_array(arrays, f"x_{part}", where),
                                   split_array(arrays, f"y_{part}", where),
                                   name_x=f"x_{part}", name_y=f"y_{part}")
        if not len(y_t):
            raise DataError(f"y_{part} is empty: expected at least one example")
        xs[part], ys[part] = x_t.float().contiguous(), y_t
    shape = tuple(xs["train"].shape[1:])
    for part in names[1:]:
        if tuple(xs[part].shape[1:]) != shape:
            raise DataError(f"x_{part} has shape {tuple(xs[part].shape)}: expected "
                            f"(n, {', '.join(map(str, shape))}) like x_train")
    return xs, ys, shape


def classes(ys: dict[str, torch.Tensor], names: list[str]) -> tuple[int, torch.Tensor]:
    """The number of classes K and the training split's count per class; DataError unless
    the labels are 0..K-1 with K >= 2 and every class in the training split."""
    k = int(max(int(y.max()) for y in ys.values())) + 1
    for part in names:
        validate_labels(ys[part], n_classes=k, name=f"y_{part}")
    if int(ys["train"].unique().numel()) < 2:
        raise DataError(f"y_train has one class ({int(ys['train'][0])}): expected at "
                        "least 2 classes")
    counts = torch.bincount(ys["train"], minlength=k)
    if k < 2 or int(counts.min()) == 0:
        missing_class = int(counts.argmin()) if k >= 2 else 1
        raise DataError(f"y_train has no example of class {missing_class}: expected labels "
                        f"0 .. K-1 (K={max(k, 2)}) with every class in the training set")
    return k, counts


def bounds_of(xs: dict[str, torch.Tensor], names: list[str],
               bounds: Sequence[float] | None) -> tuple[float, float]:
    """``bounds`` (default the min and max over every split), checked to hold each split."""
    if bounds is None:
        lo = min(float(x.min()) for x in xs.values())
        hi = max(float(x.max()) for x in xs.values())
        b = validate_bounds("bounds", (lo, hi))
    else:
        b = validate_bounds("bounds", tuple(bounds))
    for part in names:
        x = xs[part]
        if x.min() < b[0] or x.max() > b[1]:
            raise DataError(f"x_{part} has values in [{float(x.min()):g}, "
                            f"{float(x.max()):g}]: expected values inside bounds "
                            f"[{b[0]:g}, {b[1]:g}]")
    return b


def split_validation(xs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor],
                      counts: torch.Tensor, k: int, seed: int) -> None:
    """Split a stratified validation set off the training split, in place."""
    y_np = ys["train"].numpy()
    if int(counts.min()) < 2:
        raise DataError(f"y_train has {int(counts.min())} example of class "
                        f"{int(counts.argmin())}: splitting off a stratified validation "
                        "set needs at least 2 per class (or give x_val, y_val)")
    n_val = max(k, round(len(y_np) * VAL_FRACTION / (1 - TEST_FRACTION)))
    if len(y_np) - n_val < k:
        raise DataError(f"y_train has {len(y_np)} examples: too few to split off a "
                        f"stratified validation set for {k} classes (give x_val, y_val)")
    train, val = train_test_split(np.arange(len(y_np)), test_size=n_val,
                                  stratify=y_np, random_state=seed)
    train, val = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(val))
    xs["val"], ys["val"] = xs["train"][val].contiguous(), ys["train"][val].contiguous()
    xs["train"] = xs["train"][train].contiguous()
    ys["train"] = ys["train"][train].contiguous()
