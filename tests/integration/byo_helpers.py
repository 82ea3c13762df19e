"""User code for the bring-your-own model and data tests, named as "module:attr"."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn


def make_net(input_shape: tuple[int, ...], n_classes: int, hidden: int = 16) -> nn.Module:
    """A small MLP: the kind of factory a user writes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, n_classes))


def blobs(*, seed: int, n: int = 240) -> dict[str, Any]:
    """Three Gaussian blobs in [0, 1]^2 as a mapping of splits (no validation part)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.25, 0.25], [0.75, 0.3], [0.5, 0.75]])
    y = np.arange(n) % 3
    x = np.clip(centers[y] + rng.normal(0, 0.06, (n, 2)), 0, 1).astype(np.float32)
    k = n * 3 // 4
    return {"x_train": x[:k], "y_train": y[:k], "x_test": x[k:], "y_test": y[k:],
            "bounds": np.array([0.0, 1.0])}


class NotAStateDict:
    """Pickled into a weights file: torch.load(weights_only=True) must refuse it."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


class _Diverges(nn.Module):
    """A linear model whose training loss is NaN from the first batch (a poisoned scale)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Any) -> Any:
        out = self.inner(x)
        return out * float("nan") if self.training else out


def diverging_net(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A model whose loss goes NaN in training: its cells must fail, recorded, not crash."""
    return _Diverges(nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes)))


def broken_loader(*, seed: int) -> dict[str, Any]:
    """A user's dataset function that fails: the suite must be refused before any cell."""
    raise ValueError(f"cannot reach the data share (seed {seed})")


class _FailsInTraining(nn.Module):
    """Passes poisonlab's probe (one input, eval mode), then raises on a training batch."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Any) -> Any:
        if self.training and x.shape[0] > 1:
            raise ValueError("this layer cannot take a batch")
        return self.inner(x)


def failing_net(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A model whose own code raises during training: its cells fail, the run goes on."""
    return _FailsInTraining(nn.Sequential(nn.Flatten(),
                                          nn.Linear(math.prod(input_shape), n_classes)))


def failing_factory(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A factory that raises its own error."""
    raise RuntimeError(f"no GPU kernel for {n_classes} classes")
