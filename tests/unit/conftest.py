"""Models shared by the attack contract, sanity and transfer tests, trained once per session.

``Case`` bundles a trained model with a second, independently trained model of the same
shape and classes (a transfer attack's surrogate), a small batch of test points and the
threat geometry. Two cases:

- ``digits_case``: the session's ``digits_mlp`` on 64 digits test points, bounds [0, 1].
- ``shifted_case``: a 3-class MLP on digits 0-2 rescaled into [-1, 2], so that a hard-coded
  ``clamp(0, 1)`` moves pixels at -1 (the digits' blank background) by a whole unit, far
  outside any eps-ball used here, and pixels at 2 must be kept inside the bounds.

Like ``digits_mlp`` these models are read-only: attacks never change weights, and a test
that needs to change a model's mode builds its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from poisonlab import Dataset, EvasionThreat, build_model, train

N_POINTS = 64
SHIFT_LO, SHIFT_HI = -1.0, 2.0


@dataclass(frozen=True, eq=False)
class Case:
    """A trained model, its surrogate, test points and the threat geometry for them."""

    name: str
    model: nn.Module
    surrogate: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    bounds: tuple[float, float]
    n_classes: int
    linf_eps: float
    l2_eps: float

    def eps(self, norm: str) -> float:
        return self.linf_eps if norm == "linf" else self.l2_eps

    def threat(self, norm: str, *, targeted: bool = False, eps: float | None = None
               ) -> EvasionThreat:
        return EvasionThreat(norm=norm, eps=self.eps(norm) if eps is None else eps,
                             bounds=self.bounds, targeted=targeted)

    def target(self) -> torch.Tensor:
        """A per-sample target class, never the true label."""
        return (self.y + 1) % self.n_classes


@pytest.fixture(scope="session")
def digits_surrogate(digits: Dataset) -> nn.Module:
    """An MLP trained like ``digits_mlp`` from another seed: the same task, other weights."""
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=1)
    return train(model, digits.x_train, digits.y_train, epochs=10, seed=1)


@pytest.fixture(scope="session")
def digits_case(digits: Dataset, digits_mlp: nn.Module, digits_surrogate: nn.Module) -> Case:
    return Case("digits", digits_mlp, digits_surrogate, digits.x_test[:N_POINTS],
                digits.y_test[:N_POINTS], digits.bounds, digits.n_classes, 0.1, 1.0)


def _shift(ds: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    keep = y < 3
    return SHIFT_LO + (SHIFT_HI - SHIFT_LO) * x[keep], y[keep]


@pytest.fixture(scope="session")
def shifted_case(digits: Dataset) -> Case:
    x_train, y_train = _shift(digits, "train")
    x_test, y_test = _shift(digits, "test")
    assert float(x_test.min()) == SHIFT_LO and float(x_test.max()) == SHIFT_HI
    models = []
    for seed in (0, 1):
        m = build_model("mlp", digits.input_shape, 3, seed=seed, hidden=[32])
        models.append(train(m, x_train, y_train, epochs=20, seed=seed))
    # eps are the digits case's, scaled to the 3x wider range
    return Case("shifted", models[0], models[1], x_test[:N_POINTS], y_test[:N_POINTS],
                (SHIFT_LO, SHIFT_HI), 3, 0.3, 3.0)
