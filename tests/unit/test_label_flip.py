"""Label-flip poisoning: exact budgets, flips to other classes, every strategy (random,
pairwise, noise_matrix, margin, adversarial), per-class caps, reproducibility, errors."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from poisonlab import (
    ConfigError,
    DataError,
    Dataset,
    LabelFlip,
    PoisonThreat,
    SuiteError,
    build_model,
    flip_labels,
    get_defense,
    load_dataset,
    train,
)
from poisonlab.attacks.flip_strategies import largest_remainder, margins
from poisonlab.attacks.surrogates import (
    FlipSettings,
    _ModuleSurrogate,
    _SoftmaxRegression,
    fit_softmax_regression,
)


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


# =========================================================================== strategies
# noise_matrix, margin, adversarial, per-class caps (max_per_class)

STRATEGIES = ["random", "pairwise", "noise_matrix", "margin", "adversarial"]
# A 3-class matrix: class 0 flips to 1 and 2, class 1 only to 2, class 2 to 0.
MATRIX3 = ((0.5, 0.0, 0.25), (0.25, 0.5, 0.0), (0.25, 0.5, 0.75))


def _blobs(n: int, k: int, d: int = 4, seed: int = 0, spread: float = 2.0):
    """Overlapping Gaussian blobs, labels cycling 0..k-1 (n/k per class)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centers = torch.randn(k, d, generator=g) * spread
    return centers[y] + torch.randn(n, d, generator=g), y


def _strategy_kwargs(strategy: str) -> dict[str, object]:
    return {
        "random": {},
        "pairwise": {"source": 1, "target": 2},
        "noise_matrix": {"noise_matrix": MATRIX3},
        "margin": {},
        "adversarial": {"batch_size": 8},
    }[strategy]


def _flip(strategy: str, x, y, *, rate: float, rng: int = 0, **kw):  # type: ignore[no-untyped-def]
    args = {**_strategy_kwargs(strategy), **kw}
    return flip_labels(y, rate=rate, n_classes=3, strategy=strategy, x=x, rng=rng, **args)


# (strategy, rate, cap); pairwise flips only its source class, so 45 flips cannot fit a cap
# of 20 (that error is tested below).
BUDGETS = [
    (s, rate, cap)
    for s in STRATEGIES
    for rate, cap in [(0.0, None), (0.05, None), (0.1, None), (0.0, 0.2), (0.06, 0.2),
                      (0.15, 0.2)]
    if not (s == "pairwise" and rate == 0.15 and cap)
]


@pytest.mark.parametrize(("strategy", "rate", "cap"), BUDGETS)
def test_every_strategy_flips_exactly_round_rate_n_labels_within_caps(
    strategy: str, rate: float, cap: float | None
) -> None:
    x, y = _blobs(300, 3)  # 100 labels per class; cap 0.2 -> at most 20 flips per class
    res = _flip(strategy, x, y, rate=rate, max_per_class=cap)
    assert res.n_flipped == round(rate * 300)
    assert torch.equal(res.flipped, res.y_poisoned != y)
    assert res.y_poisoned.dtype == torch.int64
    assert int(res.y_poisoned.min()) >= 0 and int(res.y_poisoned.max()) < 3
    per_class = torch.bincount(y[res.flipped], minlength=3)
    if cap is not None:
        assert int(per_class.max()) <= 20
    # flip_counts[i, j]: true class j now labelled i
    assert res.flip_counts is not None
    assert int(res.flip_counts.sum()) == res.n_flipped
    assert int(res.flip_counts.diagonal().sum()) == 0
    assert torch.equal(res.flip_counts.sum(dim=0), per_class)
    assert torch.equal(res.flip_counts.sum(dim=1), torch.bincount(res.y_poisoned[res.flipped],
                                                                  minlength=3))


@pytest.mark.parametrize("strategy", ["random", "margin", "adversarial"])
def test_caps_that_cannot_hold_the_budget_raise(strategy: str) -> None:
    x, y = _blobs(300, 3)
    with pytest.raises(DataError, match=r"max_per_class=0.1 allows at most 30 flips .* asks "
                                        r"for 60 of 300: expected rate <= 0.1000"):
        _flip(strategy, x, y, rate=0.2, max_per_class=0.1)


def test_pairwise_cap_applies_to_the_source_class() -> None:
    y = torch.arange(300) % 3
    ok = flip_labels(y, rate=0.03, n_classes=3, strategy="pairwise", source=1, target=2,
                     max_per_class=0.1)
    assert ok.n_flipped == 9
    with pytest.raises(DataError, match=r"asks for 15 pairwise flips but max_per_class=0.1 "
                                        r"allows 10 of source class 1's 100"):
        flip_labels(y, rate=0.05, n_classes=3, strategy="pairwise", source=1, target=2,
                    max_per_class=0.1)


def test_noise_matrix_budget_beyond_the_flippable_classes_raises() -> None:
    y = torch.arange(300) % 3
    # Only class 0 has off-diagonal mass: at most its 100 labels (20 under a 0.2 cap).
    matrix = ((0.5, 0.0, 0.0), (0.5, 1.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(DataError, match=r"asks for 105 flips but the classes noise_matrix "
                                        r"lets flip \(\[0\]\) hold 100 labels"):
        flip_labels(y, rate=0.35, n_classes=3, strategy="noise_matrix", noise_matrix=matrix)
    with pytest.raises(DataError, match=r"hold 20 labels under max_per_class=0.2"):
        flip_labels(y, rate=0.1, n_classes=3, strategy="noise_matrix", noise_matrix=matrix,
                    max_per_class=0.2)


# --------------------------------------------------------------------------- noise_matrix

# Columns (true class j) with exactly representable entries, so the expected split is exact.
MATRIX4 = (
    (0.5, 0.25, 0.0, 0.0625),
    (0.25, 0.75, 0.0, 0.0625),
    (0.125, 0.0, 1.0, 0.125),
    (0.125, 0.0, 0.0, 0.75),
)


def _hamilton(total: int, weights: list[float]) -> list[int]:
    """Reference largest-remainder split (no capacities), ties to the lower index."""
    w = [Fraction(v) for v in weights]
    quotas = [total * v / sum(w) for v in w]
    share = [math.floor(q) for q in quotas]
    for j in sorted(range(len(w)), key=lambda j: (share[j] - quotas[j], j))[:total - sum(share)]:
        share[j] += 1
    return share


def test_noise_matrix_counts_are_the_largest_remainder_allocation() -> None:
    y = torch.tensor([0] * 40 + [1] * 30 + [2] * 20 + [3] * 10)
    res = flip_labels(y, rate=0.23, n_classes=4, strategy="noise_matrix",
                      noise_matrix=MATRIX4, rng=0)
    n_j = [40, 30, 20, 10]
    per_source = _hamilton(23, [n_j[j] * (1 - MATRIX4[j][j]) for j in range(4)])
    assert per_source == [15, 6, 0, 2]  # quotas 15.33, 5.75, 0, 1.92
    counts = res.flip_counts
    assert counts is not None
    for j in range(4):
        expected = [0] * 4
        if per_source[j]:
            expected = _hamilton(per_source[j],
                                 [0.0 if i == j else MATRIX4[i][j] for i in range(4)])
        assert counts[:, j].tolist() == expected, f"source class {j}"
    assert counts[:, 0].tolist() == [0, 7, 4, 4]  # quotas 7.5, 3.75, 3.75: ties to lower id


def test_noise_matrix_caps_clamp_a_class_and_resplit_the_rest() -> None:
    y = torch.tensor([0] * 40 + [1] * 30 + [2] * 20 + [3] * 10)
    res = flip_labels(y, rate=0.23, n_classes=4, strategy="noise_matrix",
                      noise_matrix=MATRIX4, max_per_class=0.3, rng=0)
    # class 0 wants 15 > its cap 12; the other 11 go 8.25 : 2.75 -> 8, 3
    assert res.flip_counts is not None
    assert res.flip_counts.sum(dim=0).tolist() == [12, 8, 0, 3]


def test_noise_matrix_never_flips_a_class_with_a_zero_off_diagonal_column() -> None:
    y = _labels(2000, 4, seed=3)
    for seed in range(5):
        res = flip_labels(y, rate=0.3, n_classes=4, strategy="noise_matrix",
                          noise_matrix=MATRIX4, rng=seed)
        assert not bool(res.flipped[y == 2].any())
        assert res.n_flipped == 600


def test_noise_matrix_picks_which_points_flip_at_random() -> None:
    y = _labels(1000, 4)
    a = flip_labels(y, rate=0.2, n_classes=4, strategy="noise_matrix", noise_matrix=MATRIX4,
                    rng=0)
    b = flip_labels(y, rate=0.2, n_classes=4, strategy="noise_matrix", noise_matrix=MATRIX4,
                    rng=1)
    assert torch.equal(a.flip_counts, b.flip_counts)  # the counts are fixed by the matrix
    assert not torch.equal(a.flipped, b.flipped)  # the points are not


def test_largest_remainder_never_exceeds_capacity() -> None:
    assert largest_remainder(10, [3, 1, 0], [4, 10, 10]) == [4, 6, 0]
    assert largest_remainder(0, [1, 1], [0, 0]) == [0, 0]
    with pytest.raises(DataError, match=r"total=5 is not allowed.*hold 4"):
        largest_remainder(5, [1, 0], [4, 10])


# --------------------------------------------------------------------------- margin


def test_margin_flips_the_top_margin_points_to_their_runner_up() -> None:
    x, y = _blobs(240, 4, spread=1.5)
    res = flip_labels(y, rate=0.15, n_classes=4, strategy="margin", x=x, rng=0)
    surrogate = fit_softmax_regression(x, y, n_classes=4)
    with torch.no_grad():
        p = torch.softmax(surrogate(x.double()), dim=1)
    rows = torch.arange(len(y))
    others = p.clone()
    others[rows, y] = -1.0
    margin = p[rows, y] - others.max(dim=1).values
    runner_up = others.argmax(dim=1)
    assert res.n_flipped == 36
    assert float(margin[res.flipped].min()) >= float(margin[~res.flipped].max())
    assert torch.equal(res.y_poisoned[res.flipped], runner_up[res.flipped])


def test_margin_with_a_cap_takes_the_top_points_of_each_class_with_room() -> None:
    x, y = _blobs(300, 3, spread=1.5)
    res = flip_labels(y, rate=0.2, n_classes=3, strategy="margin", x=x, max_per_class=0.25)
    surrogate = fit_softmax_regression(x, y, n_classes=3)
    with torch.no_grad():
        p = torch.softmax(surrogate(x.double()), dim=1)
    margin = p[torch.arange(300), y] - p.masked_fill(
        torch.nn.functional.one_hot(y, 3).bool(), -1.0).max(dim=1).values
    for c in range(3):
        in_c = y == c
        taken = res.flipped & in_c
        assert int(taken.sum()) <= 25
        if int(taken.sum()) < 25:  # a class below its cap lost no better point to the cap
            assert float(margin[taken].min()) >= float(margin[in_c & ~res.flipped].max())


def test_margins_helper_breaks_ties_to_the_lower_class() -> None:
    m, r = margins(torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25]]), torch.tensor([0, 0]))
    assert r.tolist() == [1, 1]
    assert m.tolist() == pytest.approx([-0.2, 0.25])


# --------------------------------------------------------------------------- adversarial


def _surrogate_val_loss(ds: Dataset, y_train: torch.Tensor) -> float:
    model = fit_softmax_regression(ds.x_train, y_train, n_classes=ds.n_classes)
    with torch.no_grad():
        logits = model(ds.x_val.double())
    return float(torch.nn.functional.cross_entropy(logits, ds.y_val))


def test_adversarial_raises_the_surrogate_validation_loss_more_than_random(
    digits: Dataset,
) -> None:
    kw = {"rate": 0.1, "n_classes": digits.n_classes, "rng": 0}
    adv = flip_labels(digits.y_train, strategy="adversarial", x=digits.x_train,
                      x_val=digits.x_val, y_val=digits.y_val, batch_size=24, **kw)
    rnd = flip_labels(digits.y_train, strategy="random", **kw)
    assert adv.n_flipped == rnd.n_flipped == 117
    clean_loss = _surrogate_val_loss(digits, digits.y_train)
    rnd_loss = _surrogate_val_loss(digits, rnd.y_poisoned)
    adv_loss = _surrogate_val_loss(digits, adv.y_poisoned)
    assert clean_loss < rnd_loss
    assert adv_loss > 1.5 * rnd_loss, (clean_loss, rnd_loss, adv_loss)


def test_adversarial_without_validation_data_uses_the_clean_training_labels() -> None:
    x, y = _blobs(150, 3, spread=1.5)
    default = flip_labels(y, rate=0.1, n_classes=3, strategy="adversarial", x=x, batch_size=5)
    explicit = flip_labels(y, rate=0.1, n_classes=3, strategy="adversarial", x=x, x_val=x,
                           y_val=y.clone(), batch_size=5)
    assert torch.equal(default.y_poisoned, explicit.y_poisoned)


@pytest.mark.parametrize("surrogate", ["mlp", "module", "factory"])
def test_module_surrogates_run_deterministically_and_leave_the_given_module_alone(
    surrogate: str,
) -> None:
    x, y = _blobs(120, 3, spread=1.5)
    given = build_model("mlp", (4,), 3, seed=5, hidden=[16])
    before = {k: v.clone() for k, v in given.state_dict().items()}
    sur: object = {"mlp": "mlp", "module": given,
                   "factory": lambda s: build_model("mlp", (4,), 3, seed=s, hidden=[16])}[surrogate]
    flip = LabelFlip(PoisonThreat(rate=0.1, strategy="adversarial"), surrogate=sur,  # type: ignore[arg-type]
                     batch_size=6, epochs=5, refit_epochs=2, damping=0.01, cg_steps=20)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = flip(x, y, n_classes=3, seed=3)
    b = flip(x, y, n_classes=3, seed=3)
    assert a.n_flipped == 12
    assert torch.equal(a.y_poisoned, b.y_poisoned)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    m = LabelFlip(PoisonThreat(rate=0.1, strategy="margin"), surrogate=sur, epochs=5)(  # type: ignore[arg-type]
        x, y, n_classes=3, seed=3)
    assert m.n_flipped == 12
    for k, v in given.state_dict().items():
        assert torch.equal(v, before[k])


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_flips_and_the_global_rngs_are_untouched(strategy: str) -> None:
    x, y = _blobs(300, 3)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    a = _flip(strategy, x, y, rate=0.1, rng=4)
    b = _flip(strategy, x, y, rate=0.1, rng=4)
    assert torch.equal(a.y_poisoned, b.y_poisoned)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]


@pytest.mark.parametrize("strategy", ["margin", "adversarial"])
def test_logistic_surrogate_strategies_use_no_randomness(strategy: str) -> None:
    x, y = _blobs(300, 3)
    a = _flip(strategy, x, y, rate=0.1, rng=0)
    b = _flip(strategy, x, y, rate=0.1, rng=1)
    assert torch.equal(a.y_poisoned, b.y_poisoned)


# Captured from the implementation before noise_matrix/margin/adversarial/caps were added:
# sha256 (first 16 hex digits) of y_poisoned as int64 bytes, y = randint(0, 10, (1000,)) with
# torch.Generator().manual_seed(0).
BEFORE = {
    ("random", 0.05, 0): "6a2fc19547c68da2", ("random", 0.2, 0): "ab1fbf0274d580fc",
    ("random", 0.5, 0): "9dfeef696ea1b1d1", ("pairwise", 0.05, 0): "81bb3e9d5b5b0419",
    ("random", 0.05, 1): "f62d896899a85d58", ("random", 0.2, 1): "4d10a11834c744b7",
    ("random", 0.5, 1): "2b2ce50bf5660707", ("pairwise", 0.05, 1): "70587a81d4fe3a4d",
    ("random", 0.05, 7): "0cb10238b00b01a3", ("random", 0.2, 7): "031d40d0a93cf1d9",
    ("random", 0.5, 7): "5710fe140e77eec1", ("pairwise", 0.05, 7): "968bf3b66e24fea6",
}


@pytest.mark.parametrize(("strategy", "rate", "seed"), sorted(BEFORE))
def test_random_and_pairwise_flips_are_unchanged(strategy: str, rate: float, seed: int) -> None:
    y = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(0))
    kw = {"source": 3, "target": 8} if strategy == "pairwise" else {}
    res = flip_labels(y, rate=rate, n_classes=10, strategy=strategy, rng=seed, **kw)
    digest = hashlib.sha256(res.y_poisoned.numpy().astype(np.int64).tobytes()).hexdigest()
    assert digest[:16] == BEFORE[(strategy, rate, seed)]


def test_small_random_and_pairwise_flips_are_unchanged() -> None:
    y = torch.arange(20) % 3
    r = flip_labels(y, rate=0.3, n_classes=3, rng=0)
    assert r.y_poisoned.tolist() == [2, 1, 2, 0, 0, 1, 0, 1, 1, 0, 0, 2, 2, 1, 2, 0, 1, 2, 0, 1]
    p = flip_labels(y, rate=0.1, n_classes=3, strategy="pairwise", source=1, target=2, rng=0)
    assert p.y_poisoned.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 2, 2, 0, 2, 2, 0, 1]


# --------------------------------------------------------------------------- PoisonThreat


def test_new_threat_ids_name_the_matrix_and_the_cap() -> None:
    t = PoisonThreat(rate=0.2, strategy="noise_matrix", noise_matrix=MATRIX3)
    other = PoisonThreat(rate=0.2, strategy="noise_matrix",
                         noise_matrix=((0.5, 0.0, 0.25), (0.5, 0.5, 0.0), (0.0, 0.5, 0.75)))
    assert t.id.startswith("noise_matrix[") and t.id.endswith("] 0.2")
    assert len(t.id) == len("noise_matrix[12345678] 0.2")
    assert t.id != other.id
    assert PoisonThreat(rate=0.2, max_per_class=0.3).id == "random 0.2 cap=0.3"
    assert PoisonThreat(rate=0.1, strategy="pairwise", source=3, target=8,
                        max_per_class=0.5).id == "pairwise 3->8 0.1 cap=0.5"
    assert PoisonThreat(rate=0.2, strategy="margin").id == "margin 0.2"
    assert PoisonThreat(rate=0.2, strategy="adversarial").id == "adversarial 0.2"


def test_noise_matrix_is_stored_as_hashable_tuples_and_dumped_as_lists() -> None:
    t = PoisonThreat(rate=0.2, strategy="noise_matrix", noise_matrix=np.array(MATRIX3))
    assert t.noise_matrix == MATRIX3
    assert all(isinstance(v, float) for row in t.noise_matrix for v in row)
    assert t == PoisonThreat(rate=0.2, strategy="noise_matrix",
                             noise_matrix=[list(r) for r in MATRIX3])
    assert len({t, PoisonThreat(rate=0.2, strategy="noise_matrix", noise_matrix=MATRIX3)}) == 1
    d = t.to_dict()
    assert d["noise_matrix"] == [list(r) for r in MATRIX3]
    assert d["max_per_class"] is None
    assert json.loads(json.dumps(d)) == d
    plain = PoisonThreat(rate=0.2).to_dict()
    assert plain["noise_matrix"] is None and plain["max_per_class"] is None
    assert plain["id"] == "random 0.2"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"strategy": "noise_matrix"}, r"noise_matrix=None is not allowed: strategy "
                                       r"'noise_matrix' needs a K x K matrix"),
        ({"strategy": "noise_matrix", "noise_matrix": [[1.0]]},
         r"noise_matrix has 1 rows: expected a square K x K matrix with K >= 2"),
        ({"strategy": "noise_matrix", "noise_matrix": [[1, 0, 0], [0, 1, 0]]},
         r"noise_matrix row 0 has 3 entries: expected 2"),
        ({"strategy": "noise_matrix", "noise_matrix": [0.5, 0.5]},
         r"noise_matrix=\[0.5, 0.5\] is not allowed: expected a square K x K matrix"),
        ({"strategy": "noise_matrix", "noise_matrix": [[1.2, 0.0], [-0.2, 1.0]]},
         r"noise_matrix\[1\]\[0\]=-0.2 is not allowed: expected a value in \[0, inf\)"),
        ({"strategy": "noise_matrix", "noise_matrix": [[float("nan"), 0.0], [1.0, 1.0]]},
         r"noise_matrix\[0\]\[0\]=nan is not allowed: expected a finite number"),
        ({"strategy": "noise_matrix", "noise_matrix": [[0.9, 0.0], [0.2, 1.0]]},
         r"noise_matrix column 0 sums to 1.1: expected every column to sum to 1"),
        ({"strategy": "noise_matrix", "noise_matrix": [[1.0, 0.0], [0.0, 1.0]]},
         r"is not allowed with rate=0.1: expected some off-diagonal mass"),
        ({"noise_matrix": [[0.5, 0.5], [0.5, 0.5]]},
         r"only strategy 'noise_matrix' takes a matrix \(strategy is 'random'\)"),
        ({"max_per_class": 0}, r"max_per_class=0 is not allowed: expected a value in \(0, 1\]"),
        ({"max_per_class": 1.5}, r"max_per_class=1.5 is not allowed"),
        ({"strategy": "margin", "source": 1}, r"only strategy 'pairwise' takes class ids"),
        ({"strategy": "margn"}, r"strategy='margn'.*did you mean 'margin'"),
        ({"strategy": "adversarail"}, r"strategy='adversarail'.*did you mean 'adversarial'"),
    ],
)
def test_bad_poison_threats_raise(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        PoisonThreat(rate=0.1, **kwargs)  # type: ignore[arg-type]


def test_identity_matrix_is_allowed_at_rate_zero_and_column_sums_have_a_tolerance() -> None:
    PoisonThreat(rate=0.0, strategy="noise_matrix", noise_matrix=[[1, 0], [0, 1]])
    t = PoisonThreat(rate=0.1, strategy="noise_matrix",
                     noise_matrix=[[0.9 + 5e-7, 0.5], [0.1, 0.5]])
    assert t.noise_matrix is not None


# --------------------------------------------------------------------------- bad input (new)


def test_noise_matrix_must_match_n_classes() -> None:
    with pytest.raises(ConfigError, match=r"noise_matrix is 3x3: expected 4x4 to match "
                                          r"n_classes=4"):
        flip_labels(torch.arange(40) % 4, rate=0.1, n_classes=4, strategy="noise_matrix",
                    noise_matrix=MATRIX3)


@pytest.mark.parametrize("strategy", ["margin", "adversarial"])
def test_surrogate_strategies_need_x(strategy: str) -> None:
    with pytest.raises(ConfigError, match=rf"x=None is not allowed: strategy '{strategy}' "
                                          r"needs the training inputs"):
        LabelFlip(PoisonThreat(rate=0.1, strategy=strategy))(None, torch.arange(30) % 3,
                                                              n_classes=3)


def test_surrogate_strategies_check_the_inputs() -> None:
    x, y = _blobs(30, 3)
    with pytest.raises(DataError, match=r"y has shape \(30,\): expected \(29,\)"):
        flip_labels(y, rate=0.1, n_classes=3, strategy="margin", x=x[:29])
    x[3, 1] = float("nan")
    with pytest.raises(DataError, match=r"x contains 1 NaN or Inf values"):
        flip_labels(y, rate=0.1, n_classes=3, strategy="margin", x=x)


def test_validation_data_is_checked() -> None:
    x, y = _blobs(60, 3)
    flip = LabelFlip(PoisonThreat(rate=0.1, strategy="adversarial"))
    with pytest.raises(ConfigError, match=r"y_val=None is not allowed with x_val given"):
        flip(x, y, n_classes=3, x_val=x)
    with pytest.raises(DataError, match=r"x_val has input shape \(2,\): expected \(4,\)"):
        flip(x, y, n_classes=3, x_val=x[:, :2], y_val=y)
    with pytest.raises(DataError, match=r"y_val has dtype torch.float32"):
        flip(x, y, n_classes=3, x_val=x, y_val=y.float())


def test_validation_labels_out_of_range_raise() -> None:
    x, y = _blobs(60, 3)
    with pytest.raises(DataError, match=r"y_val has labels in \[0, 4\]: expected class ids"):
        LabelFlip(PoisonThreat(rate=0.1, strategy="adversarial"))(
            x, y, n_classes=3, x_val=x, y_val=y * 2)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"batch_size": 0}, r"batch_size=0 is not allowed: expected a value in \[1, inf\)"),
        ({"batch_size": 2.5}, r"batch_size=2.5 is not allowed: expected an integer"),
        ({"l2": 0.0}, r"l2=0.0 is not allowed: expected a value in \(0, inf\)"),
        ({"damping": -1.0}, r"damping=-1.0 is not allowed"),
        ({"epochs": 0}, r"epochs=0 is not allowed"),
        ({"refit_epochs": 0}, r"refit_epochs=0 is not allowed"),
        ({"lr": 0}, r"lr=0 is not allowed"),
        ({"cg_steps": 0}, r"cg_steps=0 is not allowed"),
        ({"surrogate": "mpl"}, r"surrogate='mpl' is not allowed: expected one of .*"
                               r"did you mean 'mlp'"),
        ({"surrogate": 3}, r"surrogate=3 is not allowed: expected a model name"),
    ],
)
def test_bad_label_flip_settings_raise_in_the_constructor(
    kwargs: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        LabelFlip(PoisonThreat(rate=0.1, strategy="adversarial"), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=pattern):  # the pure function checks them too
        flip_labels(torch.arange(30) % 3, rate=0.1, n_classes=3, **kwargs)  # type: ignore[arg-type]


def test_bad_surrogate_factories_and_widths_raise() -> None:
    x, y = _blobs(60, 3)
    threat = PoisonThreat(rate=0.1, strategy="margin")
    with pytest.raises(ConfigError, match=r"surrogate\(seed\) returned int: expected an "
                                          r"nn.Module"):
        LabelFlip(threat, surrogate=lambda s: 3)(x, y, n_classes=3)  # type: ignore[arg-type,return-value]
    wide = build_model("logistic", (4,), 5, seed=0)
    with pytest.raises(DataError, match=r"surrogate returns 5 logits: expected n_classes=3"):
        LabelFlip(threat, surrogate=wide)(x, y, n_classes=3)


def test_label_flip_seed_is_checked_by_name() -> None:
    with pytest.raises(ConfigError, match=r"seed=-1 is not allowed"):
        LabelFlip(PoisonThreat(rate=0.1))(None, torch.arange(30) % 3, n_classes=3, seed=-1)


# --------------------------------------------------------------------------- LabelFlip (new)


def test_label_flip_and_flip_labels_share_their_defaults() -> None:
    core = inspect.signature(flip_labels).parameters
    cls = inspect.signature(LabelFlip.__init__).parameters
    for name in ("surrogate", "batch_size", "l2", "damping", "epochs", "refit_epochs", "lr",
                 "cg_steps"):
        assert core[name].default == cls[name].default, name


def test_label_flip_repr_names_non_default_settings() -> None:
    flip = LabelFlip(PoisonThreat(rate=0.2, strategy="adversarial"), batch_size=8)
    assert repr(flip) == "LabelFlip('adversarial 0.2', batch_size=8)"


def test_label_flip_keeps_the_threat_it_was_given() -> None:
    threat = PoisonThreat(rate=0.1, knowledge="white-box")
    out = LabelFlip(threat)(None, torch.arange(30) % 3, n_classes=3)
    assert out.threat is threat


def test_label_flip_matches_flip_labels_for_the_new_strategies() -> None:
    x, y = _blobs(150, 3)
    for strategy in ("noise_matrix", "margin", "adversarial"):
        kw = _strategy_kwargs(strategy)
        threat = PoisonThreat(rate=0.1, strategy=strategy,
                              noise_matrix=kw.pop("noise_matrix", None))  # type: ignore[arg-type]
        out = LabelFlip(threat, **kw)(x, y, n_classes=3, seed=2)  # type: ignore[arg-type]
        ref = flip_labels(y, rate=0.1, n_classes=3, strategy=strategy, x=x, rng=2,
                          noise_matrix=threat.noise_matrix, **kw)  # type: ignore[arg-type]
        assert torch.equal(out.y_poisoned, ref.y_poisoned), strategy


# --------------------------------------------------------------------------- harness


# The harness is imported inside these tests so that the strategy tests above do not depend
# on the rest of the harness importing cleanly.


def _suite_with(poisoning: list[dict[str, object]]) -> dict[str, object]:
    return {
        "name": "lf", "datasets": [{"name": "blobs", "n_samples": 300}],
        "models": [{"name": "mlp", "hidden": [8]}], "defenses": ["none"],
        "training": {"epochs": 2, "batch_size": 64, "lr": 0.01},
        "threat_model": {"poisoning": poisoning}, "seeds": [0],
        "metrics": ["accuracy", "poisoning"],
    }


def test_suites_accept_noise_matrices_and_caps() -> None:
    from poisonlab.harness.suite import parse_suite

    suite = parse_suite(_suite_with([
        {"strategy": "noise_matrix", "rate": 0.2,
         "noise_matrix": [list(r) for r in MATRIX3]},
        {"strategy": "random", "rate": 0.2, "max_per_class": 0.3},
        {"strategy": "random", "rate": 0.2},
        {"strategy": "adversarial", "rate": 0.1},
    ]))
    assert suite.poisoning[0].noise_matrix == MATRIX3
    assert [p.id for p in suite.poisoning][1:] == ["random 0.2 cap=0.3", "random 0.2",
                                                   "adversarial 0.1"]
    assert suite.to_dict()["poisoning"][0]["noise_matrix"] == [list(r) for r in MATRIX3]


def test_suites_name_a_misspelled_poisoning_key() -> None:
    from poisonlab.harness.suite import parse_suite

    with pytest.raises(SuiteError, match=r"threat_model.poisoning\[0\]: unknown key "
                                         r"'max_per_clas'.*did you mean 'max_per_class'"):
        parse_suite(_suite_with([{"strategy": "random", "rate": 0.2, "max_per_clas": 0.3}]))
    with pytest.raises(SuiteError, match=r"threat_model.poisoning\[0\]: noise_matrix column 1 "
                                         r"sums to 0.5"):
        parse_suite(_suite_with([{"strategy": "noise_matrix", "rate": 0.2,
                                  "noise_matrix": [[0.5, 0.5], [0.5, 0.0]]}]))


def test_suite_cells_with_the_new_strategies_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness passes the validation split to LabelFlip and records the flips."""
    import importlib

    from poisonlab.harness.suite import parse_suite

    evaluate = importlib.import_module("poisonlab.harness.measure")
    got_val: list[bool] = []

    class Spy(LabelFlip):
        def __call__(self, x, y, **kw):  # type: ignore[no-untyped-def]
            got_val.append(kw.get("x_val") is not None and kw.get("y_val") is not None)
            return super().__call__(x, y, **kw)

    monkeypatch.setattr(evaluate, "LabelFlip", Spy)
    blobs_k = load_dataset("blobs", seed=0, n_samples=300).n_classes
    eye = [[1.0 if i == j else 0.0 for j in range(blobs_k)] for i in range(blobs_k)]
    eye[0][0], eye[1][0] = 0.5, 0.5  # only class 0 flips, to class 1
    suite = parse_suite(_suite_with([
        {"strategy": "adversarial", "rate": 0.1},
        {"strategy": "noise_matrix", "rate": 0.05, "noise_matrix": eye},
    ]))
    for cell in suite.cells():
        if cell.poisoning is None:
            continue
        rec = evaluate.measure_cell(suite, cell).to_record()
        assert rec["status"] == "ok", rec["error"]
        info = rec["poisoning_info"]
        assert info["n_flipped"] == round(cell.poisoning.rate * info["n_train"])
    assert got_val == [True, True]


# --------------------------------------------------------------------------- acceptance


def _victim_accuracy(ds: Dataset, y_train: torch.Tensor, seed: int) -> float:
    model = build_model("mlp", ds.input_shape, ds.n_classes, seed=seed)
    train(model, ds.x_train, y_train, defense=get_defense("none"), epochs=30, seed=seed)
    with torch.no_grad():
        return float((model(ds.x_test).argmax(dim=1) == ds.y_test).float().mean())


@pytest.mark.slow
def test_optimised_flips_cost_a_victim_mlp_more_accuracy_than_random_flips() -> None:
    """Digits, rate 0.2, logistic surrogate: margin and adversarial beat random flips."""
    drops: dict[str, list[float]] = {"random": [], "margin": [], "adversarial": []}
    for seed in (0, 1, 2):
        ds = load_dataset("digits", seed=seed)
        clean = _victim_accuracy(ds, ds.y_train, seed)
        for strategy in drops:
            out = LabelFlip(PoisonThreat(rate=0.2, strategy=strategy))(
                ds.x_train, ds.y_train, n_classes=ds.n_classes, seed=seed,
                x_val=ds.x_val, y_val=ds.y_val)
            assert out.n_flipped == round(0.2 * len(ds.y_train))
            drops[strategy].append(clean - _victim_accuracy(ds, out.y_poisoned, seed))
    mean = {k: float(np.mean(v)) for k, v in drops.items()}
    assert mean["margin"] > mean["random"], drops
    assert mean["adversarial"] > mean["random"], drops
    assert mean["adversarial"] > mean["random"] + 0.05, drops  # measured: ~0.20 vs ~0.01


def test_module_influence_agrees_with_the_exact_linear_solve() -> None:
    """CG on double-backward Hessian-vector products == the Cholesky solve, on a linear model."""
    x, y = _blobs(90, 3, spread=1.5)
    x = x.double()
    exact = _SoftmaxRegression(x, 3, l2=1e-2, damping=0.0)
    exact.fit(y)
    module = _ModuleSurrogate(exact.module(), x, settings=FlipSettings(l2=1e-2, cg_steps=500),
                              gen=np.random.default_rng(0))
    assert torch.allclose(module.proba(), exact.proba())
    a = exact.influence(y, x[:30], y[:30])
    b = module.influence(y, x[:30], y[:30])
    assert float((a - b).abs().max()) < 1e-5 * float(a.abs().max())
