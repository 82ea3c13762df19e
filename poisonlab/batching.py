"""Batches: how much of an input set runs through a model at once.

``batch_size`` changes memory and speed, never a number: every attack, security curve,
metric and sanity check that runs a model over a data set processes it in slices of
``batch_size`` samples, draws its randomness per sample (see
:class:`~poisonlab.attacks.base.SampleRNG`), and gathers per-sample outcomes slice by
slice, so peak memory grows with the batch size and not with the number of samples (the
inputs themselves aside). ``batch_size=None`` runs everything at once.

Inputs are tensors (or arrays) of shape (n, *input_shape) with labels (n,), or a map-style
:class:`torch.utils.data.Dataset` whose items are ``(x_i, y_i)`` pairs, read one batch at a
time (:class:`Source`).

The float32 limit: CPU kernels may pick other reduction orders for other
batch shapes, so logits can differ by a few 1e-6 between a batch of 7 and one of 300.
Sign-step (linf) FGSM and PGD are bit-identical across batch sizes on the test models;
other metrics agree within 1e-5 and counts (accuracy, success rate) are identical there.

>>> [(s.start, s.stop) for s in iter_slices(10, 4)]
[(0, 4), (4, 8), (8, 10)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ._validation import validate_inputs, validate_scalar
from .errors import ConfigError, DataError

#: The default for every ``batch_size``: bounded memory, near-full speed on a CPU.
DEFAULT_BATCH_SIZE = 256


def validate_batch_size(name: str, value: Any) -> int | None:
    """``value`` as an int >= 1, or None (everything at once); ConfigError otherwise."""
    if value is None:
        return None
    return int(validate_scalar(name, value, lo=1, integer=True))


def iter_slices(n: int, batch_size: int | None) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``, each at most ``batch_size`` long."""
    step = n if batch_size is None else batch_size
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


def is_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a map-style torch Dataset (and not a tensor or array)."""
    return isinstance(obj, TorchDataset) and not isinstance(obj, torch.Tensor)


@dataclass(frozen=True, eq=False)
class Source:
    """An input set read by index: tensors held whole, or a map-style Dataset read lazily.

    ``take(ix)`` returns ``(x, y)`` for the sample ids ``ix`` (an int64 tensor): float
    inputs (n, *input_shape) and int64 labels (n,), checked for shape, finiteness and
    integrality on each read when the source is a Dataset (tensors are checked once, whole).
    """

    x: Any
    y: torch.Tensor | None
    n: int

    @staticmethod
    def of(x: Any, y: Any, *, name: str = "x") -> Source:
        if is_dataset(x):
            if y is not None:
                raise ConfigError(
                    f"y= is not allowed with {name} a torch Dataset: its items are (x, y) pairs"
                )
            try:
                n = len(x)
            except TypeError as exc:
                raise DataError(
                    f"{name} is a {type(x).__name__} without len(): expected a map-style "
                    "Dataset (__getitem__ and __len__)"
                ) from exc
            if n == 0:
                raise DataError(f"{name} is an empty Dataset: expected at least one sample")
            return Source(x, None, int(n))
        x_t, y_t = validate_inputs(x, y)
        return Source(x_t, y_t, int(x_t.shape[0]))

    @property
    def lazy(self) -> bool:
        return self.y is None

    def take(self, ix: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        if self.y is not None:
            return self.x[ix], self.y[ix]
        ids = (range(self.n)[ix] if isinstance(ix, slice) else ix.tolist())
        items = [self.x[int(i)] for i in ids]
        try:
            xs = torch.stack([torch.as_tensor(np.asarray(it[0])) for it in items])
            ys = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64)
        except (TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise DataError(
                f"x is a Dataset whose items are not (input, label) pairs of one shape: {exc}"
            ) from exc
        return validate_inputs(xs, ys)

    def labels(self) -> torch.Tensor:
        """All labels (n,): a lazy Dataset's ``targets`` attribute (torchvision's
        convention) if it has one, else read through the Dataset once."""
        if self.y is not None:
            return self.y
        targets = getattr(self.x, "targets", None)
        if targets is not None and len(targets) == self.n:
            return validate_inputs(torch.zeros(self.n, 1), torch.as_tensor(np.asarray(targets)),
                                name_y="targets")[1]
        return torch.cat([self.take(s)[1] for s in iter_slices(self.n, DEFAULT_BATCH_SIZE)])
