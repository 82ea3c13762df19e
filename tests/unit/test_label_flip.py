"""Label-flip poisoning: exact budgets, flips to other classes, pairwise, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from poisonlab import ConfigError, DataError, LabelFlip, PoisonThreat, flip_labels


def _labels(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- random


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize(("n", "k"), [(100, 2), (1000, 10), (37, 3)])
def test_random_flip_changes_exactly_round_rate_n_labels(rate: float, n: int, k: int) -> None:
    y = _labels(n, k)
    res = flip_labels(y, rate=rate, n_classes=k, rng=0)
    assert res.n_flipped == round(rate * n)
    assert int((res.y_poisoned != y).sum()) == round(rate * n)


def test_flipped_mask_marks_exactly_the_changed_labels() -> None:
    y = _labels(500, 5)
    res = flip_labels(y, rate=0.3, n_classes=5, rng=1)
    assert res.flipped.dtype == torch.bool
    assert torch.equal(res.flipped, res.y_poisoned != y)
    assert torch.equal(res.y_poisoned[~res.flipped], y[~res.flipped])


@pytest.mark.parametrize("k", [2, 3, 10])
def test_random_flips_stay_in_range_and_keep_dtype(k: int) -> None:
    y = _labels(400, k)
    res = flip_labels(y, rate=0.5, n_classes=k, rng=2)
    assert res.y_poisoned.dtype == torch.int64
    assert int(res.y_poisoned.min()) >= 0
    assert int(res.y_poisoned.max()) < k


def test_random_flips_are_roughly_uniform_over_the_other_classes() -> None:
    k, n, rate = 5, 20000, 0.5
    y = torch.zeros(n, dtype=torch.int64)
    res = flip_labels(y, rate=rate, n_classes=k, rng=3)
    n_flip = round(rate * n)
    counts = torch.bincount(res.y_poisoned[res.flipped], minlength=k)
    assert int(counts[0]) == 0
    p = 1 / (k - 1)
    sigma = math.sqrt(n_flip * p * (1 - p))
    for c in range(1, k):
        assert abs(int(counts[c]) - n_flip * p) < 5 * sigma


def test_random_flip_positions_are_spread_over_the_whole_vector() -> None:
    n = 10000
    y = _labels(n, 4)
    res = flip_labels(y, rate=0.2, n_classes=4, rng=4)
    halves = res.flipped.view(2, -1).sum(dim=1).double()
    sigma = math.sqrt(n * 0.2 * 0.8 / 2)
    assert float((halves - halves.mean()).abs().max()) < 5 * sigma


def test_flip_labels_does_not_modify_its_input() -> None:
    y = _labels(300, 3)
    y0 = y.clone()
    flip_labels(y, rate=0.4, n_classes=3, rng=0)
    assert torch.equal(y, y0)


def test_numpy_labels_and_numpy_generators_are_accepted() -> None:
    y = np.arange(200) % 4
    a = flip_labels(y, rate=0.25, n_classes=4, rng=np.random.default_rng(7))
    b = flip_labels(torch.from_numpy(y), rate=0.25, n_classes=4, rng=7)
    assert torch.equal(a.y_poisoned, b.y_poisoned)
    assert a.seed == -1
    assert b.seed == 7


@pytest.mark.parametrize("strategy", ["random", "pairwise"])
def test_same_seed_gives_identical_flips(strategy: str) -> None:
    y = _labels(1000, 10)
    kw = {"source": 2, "target": 5} if strategy == "pairwise" else {}
    a = flip_labels(y, rate=0.05, n_classes=10, strategy=strategy, rng=11, **kw)
    b = flip_labels(y, rate=0.05, n_classes=10, strategy=strategy, rng=11, **kw)
    c = flip_labels(y, rate=0.05, n_classes=10, strategy=strategy, rng=12, **kw)
    assert torch.equal(a.y_poisoned, b.y_poisoned)
    assert not torch.equal(a.y_poisoned, c.y_poisoned)


def test_rate_zero_changes_nothing() -> None:
    y = _labels(100, 3)
    res = flip_labels(y, rate=0.0, n_classes=3, rng=0)
    assert torch.equal(res.y_poisoned, y)
    assert res.n_flipped == 0


# --------------------------------------------------------------------------- pairwise


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.09])
def test_pairwise_only_moves_source_to_target(rate: float) -> None:
    y = torch.arange(1000) % 10
    res = flip_labels(y, rate=rate, n_classes=10, strategy="pairwise", source=3, target=8, rng=0)
    assert res.n_flipped == round(rate * 1000)
    assert bool((y[res.flipped] == 3).all())
    assert bool((res.y_poisoned[res.flipped] == 8).all())
    assert torch.equal(res.y_poisoned[~res.flipped], y[~res.flipped])


def test_pairwise_can_relabel_the_whole_source_class() -> None:
    y = torch.arange(1000) % 10
    res = flip_labels(y, rate=0.1, n_classes=10, strategy="pairwise", source=0, target=1, rng=0)
    assert res.n_flipped == 100
    assert int((res.y_poisoned == 0).sum()) == 0


def test_pairwise_asking_for_more_flips_than_the_source_class_has_raises() -> None:
    y = torch.arange(1000) % 10  # 100 labels of class 3
    with pytest.raises(DataError, match=r"asks for 150 pairwise flips but source class 3 has 100"):
        flip_labels(y, rate=0.15, n_classes=10, strategy="pairwise", source=3, target=8)


@pytest.mark.parametrize(("source", "target", "name"), [(10, 1, "source"), (1, 12, "target")])
def test_pairwise_class_ids_beyond_n_classes_raise(source: int, target: int, name: str) -> None:
    y = torch.arange(100) % 10
    with pytest.raises(ConfigError, match=rf"{name}=1\d is not allowed: expected a class id"):
        flip_labels(y, rate=0.01, n_classes=10, strategy="pairwise", source=source, target=target)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"rate": 1.0}, ConfigError, r"rate=1.0 is not allowed"),
        ({"rate": -0.5}, ConfigError, r"rate=-0.5 is not allowed"),
        ({"n_classes": 1}, ConfigError, r"n_classes=1 is not allowed"),
        ({"rng": -2}, ConfigError, r"rng=-2 is not allowed"),
        ({"strategy": "randon"}, ConfigError, r"strategy='randon'.*did you mean 'random'"),
        ({"n_classes": 2}, DataError, r"y has labels in \[0, 2\]: expected class ids in \[0, 1\]"),
    ],
)
def test_bad_arguments_raise(
    kwargs: dict[str, object], error: type[Exception], pattern: str
) -> None:
    args: dict[str, object] = {"rate": 0.1, "n_classes": 3, "rng": 0, **kwargs}
    with pytest.raises(error, match=pattern):
        flip_labels(torch.arange(30) % 3, **args)  # type: ignore[arg-type]


def test_float_labels_raise() -> None:
    with pytest.raises(DataError, match=r"y has dtype torch.float32"):
        flip_labels(torch.zeros(10), rate=0.1, n_classes=2)


# --------------------------------------------------------------------------- LabelFlip


@pytest.mark.parametrize(
    "threat",
    [
        PoisonThreat(rate=0.2),
        PoisonThreat(rate=0.05, strategy="pairwise", source=1, target=7),
    ],
    ids=["random", "pairwise"],
)
@pytest.mark.parametrize("seed", [0, 5])
def test_label_flip_wrapper_matches_flip_labels(threat: PoisonThreat, seed: int) -> None:
    y = torch.arange(600) % 10
    out = LabelFlip(threat)(None, y, n_classes=10, seed=seed)
    ref = flip_labels(y, rate=threat.rate, n_classes=10, strategy=threat.strategy,
                      source=threat.source, target=threat.target, rng=seed)
    assert torch.equal(out.y_poisoned, ref.y_poisoned)
    assert torch.equal(out.flipped, ref.flipped)
    assert out.threat == threat
    assert out.seed == seed


def test_label_flip_requires_a_poison_threat() -> None:
    with pytest.raises(ConfigError, match=r"threat=0.2 is not allowed: expected a PoisonThreat"):
        LabelFlip(0.2)  # type: ignore[arg-type]


def test_label_flip_repr_names_the_threat() -> None:
    assert repr(LabelFlip(PoisonThreat(rate=0.2))) == "LabelFlip('random 0.2')"
