"""Shared fixtures: the digits split and one small MLP trained on it, built once per session.

Tests must treat ``digits`` and ``digits_mlp`` as read-only (attacks never change weights;
a test that needs to change a model's mode or weights builds its own).
"""

from __future__ import annotations

import pytest
import torch

from poisonlab import Dataset, build_model, load_dataset, train


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def digits_mlp(digits: Dataset) -> torch.nn.Module:
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
    return train(model, digits.x_train, digits.y_train, epochs=10, seed=0)
