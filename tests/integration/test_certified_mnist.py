"""Issue 22's acceptance floor on mnist5k (3250 training images): DPA with k = 50 keeps a
clean accuracy of at least 0.85 with a median certified radius of at least 0.5% of the
training set (17 flips). Patch k-means features (label-free) give 0.918 and 20 flips on
the development machine (docs/certified.md); the issue's reference, PCA-30 with
scikit-learn's logistic regression, gave 0.850 and 14."""

from __future__ import annotations

import pytest

import poisonlab as pl

pytestmark = pytest.mark.slow


def test_dpa_on_mnist5k_clears_the_issue_floor() -> None:
    ds = pl.load_dataset("mnist5k", seed=0)
    assert len(ds.x_train) == 3250
    d = pl.get_defense("dpa", k=50, features="patch_kmeans")
    model = pl.train(pl.build_model("logistic", ds.input_shape, ds.n_classes, seed=0),
                     ds.x_train, ds.y_train, defense=d, seed=0)
    c = pl.certify(model, ds.x_test)
    accuracy = float((c.prediction == ds.y_test).float().mean())
    assert accuracy >= 0.85
    assert c.median_radius(ds.y_test) >= 17  # 0.5% of 3250 is 16.25
    assert c.certified_accuracy(17, ds.y_test) >= 0.5
