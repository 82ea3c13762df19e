"""The issue's label-noise claim, measured: on digits with 40% random flips, losses built
for noisy labels (GCE, SCE) lose less accuracy than plain cross-entropy, and kNN label
sanitisation recovers accuracy. Defaults of each defense, nothing tuned on the test set.

Measured here (MLP, 30 epochs, seeds 0-2, test accuracy clean -> 40% flips, mean):
none 0.962 -> 0.932 (drop 0.030), gce 0.962 -> 0.950 (0.012), sce 0.962 -> 0.953 (0.009),
knn_sanitize 0.954 -> 0.940. The assertions compare means over the three seeds. The drops
are smaller than the 26 (CE) vs 8.5 (GCE) points of the MNIST-subset experiment quoted in
issue 4: digits is easier and a 30-epoch MLP has not memorised the noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab import build_model, get_defense, load_dataset, train
from poisonlab.attacks.label_flip import flip_labels

SEEDS = (0, 1, 2)
DEFENSES = ("none", "gce", "sce", "knn_sanitize")


def _accuracy(defense: str, seed: int, noisy: bool) -> float:
    ds = load_dataset("digits", seed=seed)
    y = ds.y_train
    if noisy:
        y = flip_labels(y, rate=0.4, n_classes=ds.n_classes, rng=seed).y_poisoned
    model = build_model("mlp", ds.input_shape, ds.n_classes, seed=seed)
    train(model, ds.x_train, y, defense=get_defense(defense), epochs=30, seed=seed)
    with torch.no_grad():
        return float((model(ds.x_test).argmax(1) == ds.y_test).double().mean())


@pytest.fixture(scope="module")
def accuracies() -> dict[tuple[str, bool], float]:
    return {(d, noisy): float(np.mean([_accuracy(d, s, noisy) for s in SEEDS]))
            for d in DEFENSES for noisy in (False, True)}


@pytest.mark.slow
def test_noise_robust_losses_lose_less_than_cross_entropy_at_40_percent_flips(
    accuracies: dict[tuple[str, bool], float],
) -> None:
    drop = {d: accuracies[d, False] - accuracies[d, True] for d in DEFENSES}
    assert drop["none"] > 0.01  # the noise hurts plain training at all
    assert min(drop["gce"], drop["sce"]) < drop["none"]


@pytest.mark.slow
def test_knn_sanitisation_recovers_accuracy_at_40_percent_flips(
    accuracies: dict[tuple[str, bool], float],
) -> None:
    assert accuracies["knn_sanitize", True] > accuracies["none", True]
