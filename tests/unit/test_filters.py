"""Data-filter defenses: kNN label sanitisation (Paudice et al. 2018) and confident learning.

The noisy sets are digits' training labels with random flips from ``flip_labels``; the
bounds asserted below sit a little under the figures measured with these seeds (noted next
to each), so they test the algorithms, not luck.
"""

from __future__ import annotations

import random
import sys
from typing import Any, cast

import numpy as np
import pytest
import torch

from poisonlab import ConfigError, DataError, Dataset, build_model, get_defense, train
from poisonlab.attacks.label_flip import flip_labels
from poisonlab.defenses import filters
from poisonlab.defenses.filters import (
    CL_FILTERS,
    ConfidentLearning,
    KNNSanitize,
    confident_learning_issues,
    knn_sanitize,
)

K = 10


@pytest.fixture(scope="module")
def noisy30(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits training labels with 30% random flips: (y_noisy, flipped)."""
    r = flip_labels(digits.y_train, rate=0.3, n_classes=K, rng=0)
    return r.y_poisoned, r.flipped


@pytest.fixture(scope="module")
def cl_found(digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor]
             ) -> filters.LabelIssues:
    return confident_learning_issues(digits.x_train, noisy30[0], n_classes=K, seed=0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


RngStates = tuple[torch.Tensor, np.ndarray, int, object]


def _rng_states() -> RngStates:
    """The global torch, numpy (MT19937 key and position) and Python RNG states."""
    np_state = cast(tuple[Any, ...], np.random.get_state())
    return torch.get_rng_state(), np_state[1].copy(), int(np_state[2]), random.getstate()


def _assert_rng_unchanged(before: RngStates) -> None:
    after = _rng_states()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]


# --------------------------------------------------------------------------- kNN: the rule


def _reference_knn(x: torch.Tensor, y: torch.Tensor, k: int, eta: float,
                   n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented rule point by point: exact squared distances, ties by index."""
    flat = x.reshape(len(x), -1).double()
    y_new, changed = y.clone(), torch.zeros(len(y), dtype=torch.bool)
    for i in range(len(x)):
        d = ((flat - flat[i]) ** 2).sum(dim=1).tolist()
        others = sorted((j for j in range(len(x)) if j != i), key=lambda j: (d[j], j))
        votes = torch.bincount(y[others[:k]], minlength=n_classes).tolist()
        top = max(range(n_classes), key=lambda c: (votes[c], -c))
        if votes[top] / k >= eta and votes[int(y[i])] < votes[top]:
            y_new[i], changed[i] = top, True
    return y_new, changed


@pytest.mark.parametrize(("k", "eta"), [(1, 1.0), (3, 0.5), (4, 0.5), (5, 0.3), (9, 0.6)])
def test_knn_sanitize_matches_the_rule_point_by_point(
    k: int, eta: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Points on a small integer grid: many duplicates and equidistant neighbours, so the
    # tie rules (neighbours by index, votes to the lowest class) decide many points.
    g = _gen(3)
    x = torch.randint(0, 3, (70, 2), generator=g).float()
    y = torch.randint(0, 4, (70,), generator=g)
    monkeypatch.setattr(filters, "_CHUNK_ELEMENTS", 150)  # several chunks of two rows
    y_new, changed = knn_sanitize(x, y, k=k, eta=eta, n_classes=4)
    ref_y, ref_changed = _reference_knn(x, y, k, eta, 4)
    assert torch.equal(changed, ref_changed)
    assert torch.equal(y_new, ref_y)
    assert 0 < int(changed.sum()) < 70


def test_knn_sanitize_does_not_depend_on_the_chunk_size(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = knn_sanitize(digits.x_train, noisy30[0], n_classes=K)
    monkeypatch.setattr(filters, "_CHUNK_ELEMENTS", 50_000)  # 42 rows per chunk
    chunked = knn_sanitize(digits.x_train, noisy30[0], n_classes=K)
    assert torch.equal(whole.y, chunked.y)
    assert torch.equal(whole.changed, chunked.changed)


def _star(labels: list[int], centre: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Point 0 at the origin labelled ``centre``; point i at unit vector e_i, label labels[i-1].

    Every other point is at distance 1 from point 0 (and sqrt 2 from each other).
    """
    m = len(labels)
    x = torch.cat([torch.zeros(1, m), torch.eye(m)])
    return x, torch.tensor([centre, *labels])


@pytest.mark.parametrize(("eta", "relabelled"), [(0.3, True), (0.31, False)])
def test_knn_sanitize_threshold_is_a_fraction_of_the_k_votes_inclusive(
    eta: float, relabelled: bool
) -> None:
    x, y = _star([1, 1, 1, 2, 2, 3, 3, 4, 4, 5], centre=0)  # 3 of 10 votes for class 1
    y_new, changed = knn_sanitize(x, y, k=10, eta=eta, n_classes=6)
    assert bool(changed[0]) is relabelled
    assert int(y_new[0]) == (1 if relabelled else 0)


def test_knn_sanitize_tied_votes_go_to_the_lowest_class_unless_the_own_label_is_tied() -> None:
    x, y = _star([3, 1, 3, 1], centre=2)
    y_new, changed = knn_sanitize(x, y, k=4, eta=0.5, n_classes=4)
    assert bool(changed[0]) and int(y_new[0]) == 1
    x, y = _star([3, 1, 3, 1], centre=3)  # its own label holds as many votes: kept
    y_new, changed = knn_sanitize(x, y, k=4, eta=0.5, n_classes=4)
    assert not bool(changed[0]) and int(y_new[0]) == 3


def test_knn_sanitize_takes_equidistant_neighbours_by_index() -> None:
    x, y = _star([1, 1, 2, 2], centre=0)  # all four at distance 1: k=2 takes points 1 and 2
    assert int(knn_sanitize(x, y, k=2, eta=1.0, n_classes=3).y[0]) == 1
    x, y = _star([2, 2, 1, 1], centre=0)
    assert int(knn_sanitize(x, y, k=2, eta=1.0, n_classes=3).y[0]) == 2


def test_knn_sanitize_excludes_the_point_but_counts_its_duplicates() -> None:
    x = torch.tensor([[0.0], [0.0], [0.0], [9.0], [9.0]])
    y = torch.tensor([1, 0, 0, 1, 1])
    # point 0's two duplicates outvote it; point 1 sees {0: 1, 1: 1} and keeps its label
    y_new, changed = knn_sanitize(x, y, k=2, eta=0.5, n_classes=2)
    assert y_new.tolist() == [0, 0, 0, 1, 1]
    assert changed.tolist() == [True, False, False, False, False]


# --------------------------------------------------------------------------- kNN: on digits


def test_knn_relabel_restores_most_flipped_labels(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor]
) -> None:
    y_noisy, flipped = noisy30
    y_new, changed = knn_sanitize(digits.x_train, y_noisy, k=10, eta=0.5, n_classes=K)
    before = float((y_noisy == digits.y_train).float().mean())
    after = float((y_new == digits.y_train).float().mean())
    assert before == pytest.approx(0.70, abs=0.001)
    assert after >= 0.94  # measured 0.963
    assert float(flipped[changed].float().mean()) >= 0.95  # measured 0.970 of changes are flips


def test_knn_drop_keeps_a_much_cleaner_subset(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor]
) -> None:
    y_noisy = noisy30[0]
    x_kept, y_kept = KNNSanitize(action="drop").prepare(digits.x_train, y_noisy, n_classes=K,
                                                        generator=_gen())
    _, changed = knn_sanitize(digits.x_train, y_noisy, n_classes=K)
    keep = ~changed
    assert torch.equal(x_kept, digits.x_train[keep])
    assert torch.equal(y_kept, y_noisy[keep])
    assert float((y_kept == digits.y_train[keep]).float().mean()) >= 0.95  # measured 0.969
    assert len(y_kept) >= 0.65 * len(y_noisy)  # measured 0.714 kept


def test_knn_sanitize_leaves_clean_labels_nearly_untouched(digits: Dataset) -> None:
    y_new, changed = knn_sanitize(digits.x_train, digits.y_train, n_classes=K)
    assert float(changed.float().mean()) <= 0.03  # measured 0.017 (ambiguous digits)
    assert torch.equal(y_new[~changed], digits.y_train[~changed])


def test_knn_sanitize_prepare_relabels_without_touching_inputs(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor]
) -> None:
    y_noisy = noisy30[0]
    y_copy = y_noisy.clone()
    before = _rng_states()
    x_out, y_out = KNNSanitize().prepare(digits.x_train, y_noisy, n_classes=K, generator=_gen())
    _assert_rng_unchanged(before)
    assert x_out is digits.x_train
    assert torch.equal(y_noisy, y_copy)
    assert torch.equal(y_out, knn_sanitize(digits.x_train, y_copy, n_classes=K).y)
    again = KNNSanitize().prepare(digits.x_train, y_noisy, n_classes=K, generator=_gen(1))
    assert torch.equal(again[1], y_out)  # deterministic, whatever the generator


def test_knn_sanitize_accepts_numpy_and_multi_dimensional_inputs(digits: Dataset) -> None:
    x, y = digits.x_train[:200], digits.y_train[:200]
    from_tensor = knn_sanitize(x, y, n_classes=K)
    from_numpy = knn_sanitize(x.reshape(200, -1).numpy(), y.numpy(), n_classes=K)
    assert torch.equal(from_tensor.y, from_numpy.y)


def test_train_with_knn_sanitize_runs_both_actions(digits: Dataset) -> None:
    y_noisy = flip_labels(digits.y_train, rate=0.4, n_classes=K, rng=0).y_poisoned
    for action in ("relabel", "drop"):
        model = build_model("logistic", digits.input_shape, K, seed=0)
        train(model, digits.x_train, y_noisy, defense=get_defense("knn_sanitize", action=action),
              epochs=1, seed=0)


def _test_accuracy(model: torch.nn.Module, ds: Dataset) -> float:
    with torch.no_grad():
        return float((model(ds.x_test).argmax(dim=1) == ds.y_test).float().mean())


@pytest.mark.slow
def test_knn_sanitize_recovers_accuracy_lost_to_40_percent_random_flips(digits: Dataset) -> None:
    # Measured (MLP, 30 epochs, seeds 0-2): plain 0.929 0.929 0.929, sanitised 0.944 0.949
    # 0.949, clean labels 0.971 0.967 0.973. Symmetric noise costs digits only ~4 points.
    plain: list[float] = []
    sanitised: list[float] = []
    for seed in (0, 1, 2):
        y_noisy = flip_labels(digits.y_train, rate=0.4, n_classes=K, rng=seed).y_poisoned
        for defense, out in ((get_defense("none"), plain),
                             (get_defense("knn_sanitize"), sanitised)):
            model = build_model("mlp", digits.input_shape, K, seed=seed)
            train(model, digits.x_train, y_noisy, defense=defense, epochs=30, seed=seed)
            out.append(_test_accuracy(model, digits))
    assert np.mean(sanitised) >= np.mean(plain) + 0.01


# --------------------------------------------------------------------------- kNN: errors


def test_knn_sanitize_refuses_k_not_below_n() -> None:
    x, y = torch.randn(5, 3, generator=_gen()), torch.tensor([0, 1, 0, 1, 0])
    with pytest.raises(DataError, match=r"k=5 is not allowed with 5 training points: "
                                        r"expected k <= 4"):
        knn_sanitize(x, y, k=5, n_classes=2)
    with pytest.raises(DataError, match=r"k=10 is not allowed with 5 training points"):
        KNNSanitize().prepare(x, y, n_classes=2, generator=_gen())
    assert knn_sanitize(x, y, k=4, n_classes=2).y.shape == (5,)


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"k": 0}, r"k=0 is not allowed: expected a value in \[1, inf\)"),
        ({"k": 2.5}, r"k=2.5 is not allowed: expected an integer"),
        ({"k": True}, r"k=True is not allowed: expected an integer"),
        ({"eta": 0.0}, r"eta=0.0 is not allowed: expected a value in \(0, 1\]"),
        ({"eta": 1.5}, r"eta=1.5 is not allowed: expected a value in \(0, 1\]"),
        ({"eta": float("nan")}, r"eta=nan is not allowed: expected a finite number"),
        ({"action": "relabl"}, r"action='relabl' is not allowed: expected one of relabel, drop"
                               r".*did you mean 'relabel'"),
    ],
)
def test_knn_sanitize_validates_its_parameters(params: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        KNNSanitize(**params)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=pattern):
        get_defense("knn_sanitize", **params)


def test_knn_sanitize_function_validates_its_arguments() -> None:
    x, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ConfigError, match=r"eta=0 is not allowed"):
        knn_sanitize(x, y, k=1, eta=0, n_classes=2)
    with pytest.raises(ConfigError, match=r"n_classes=1 is not allowed: expected a value in "
                                          r"\[2, inf\)"):
        knn_sanitize(x, y, k=1, n_classes=1)
    with pytest.raises(DataError, match=r"y has labels in \[0, 3\]"):
        knn_sanitize(x, torch.tensor([0, 1, 3, 1]), k=1, n_classes=3)
    with pytest.raises(DataError, match=r"x contains 1 NaN or Inf"):
        knn_sanitize(torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0], [2.0, 2.0]]), y,
                     k=1, n_classes=2)


def test_get_defense_builds_the_filters_with_their_parameters() -> None:
    d = get_defense("knn_sanitize", k=5, eta=0.6, action="drop")
    assert isinstance(d, KNNSanitize)
    assert (d.kind, d.params()) == ("filter", {"k": 5, "eta": 0.6, "action": "drop"})
    c = get_defense("confident_learning", cv=3)
    assert isinstance(c, ConfidentLearning) and c.kind == "filter"
    assert c.to_dict() == {"name": "confident_learning", "params": {
        "cv": 3, "filter_by": "prune_by_noise_rate", "frac_noise": 1.0, "model": "logistic",
        "epochs": 20, "lr": 0.01, "weight_decay": 0.01}}
    with pytest.raises(ConfigError, match=r"unknown parameter 'kk'.*did you mean 'k'"):
        get_defense("knn_sanitize", kk=3)
    with pytest.raises(ConfigError, match=r"unknown parameter 'folds'"):
        get_defense("confident_learning", folds=3)


# --------------------------------------------------------------------------- confident learning


def test_confident_learning_drops_mostly_flipped_points(
    noisy30: tuple[torch.Tensor, torch.Tensor], cl_found: filters.LabelIssues
) -> None:
    _, flipped = noisy30
    issues = cl_found.issues
    assert issues.dtype == torch.bool and issues.shape == flipped.shape
    # measured with seed 0: 335 dropped, precision 0.940, recall 0.900, clean kept 0.976
    assert float(flipped[issues].float().mean()) >= 0.88  # base rate of flips: 0.30
    assert float(issues[flipped].float().mean()) >= 0.80
    assert float((~issues[~flipped]).float().mean()) >= 0.95


def test_confident_learning_probabilities_are_out_of_sample_and_informative(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor], cl_found: filters.LabelIssues
) -> None:
    p = cl_found.pred_probs
    assert p.shape == (len(digits.y_train), K) and p.dtype == torch.float64
    torch.testing.assert_close(p.sum(dim=1), torch.ones(len(p), dtype=torch.float64))
    # trained on 30% wrong labels, the held-out argmax still finds the true digit
    assert float((p.argmax(dim=1) == digits.y_train).float().mean()) >= 0.88


def test_confident_learning_is_deterministic_and_leaves_the_global_rng_alone(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor], cl_found: filters.LabelIssues
) -> None:
    before = _rng_states()
    again = confident_learning_issues(digits.x_train, noisy30[0], n_classes=K, seed=_gen(0))
    _assert_rng_unchanged(before)
    assert torch.equal(again.issues, cl_found.issues)  # a Generator seeded 0 == seed=0
    assert torch.equal(again.pred_probs, cl_found.pred_probs)
    other = confident_learning_issues(digits.x_train, noisy30[0], n_classes=K, seed=1)
    assert not torch.equal(other.pred_probs, cl_found.pred_probs)


def test_confident_learning_passes_filter_by_to_cleanlab(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor]
) -> None:
    # "predicted_neq_given" flags exactly the points whose held-out argmax is not their label
    found = confident_learning_issues(digits.x_train, noisy30[0], n_classes=K, cv=3, epochs=5,
                                      filter_by="predicted_neq_given", seed=0)
    assert torch.equal(found.issues, found.pred_probs.argmax(dim=1) != noisy30[0])


def test_confident_learning_prepare_drops_the_issues(
    digits: Dataset, noisy30: tuple[torch.Tensor, torch.Tensor], cl_found: filters.LabelIssues
) -> None:
    x_kept, y_kept = ConfidentLearning().prepare(digits.x_train, noisy30[0], n_classes=K,
                                                 generator=_gen(0))
    keep = ~cl_found.issues
    assert torch.equal(x_kept, digits.x_train[keep])
    assert torch.equal(y_kept, noisy30[0][keep])


@pytest.mark.filterwarnings("ignore:May not flag all label issues in class:UserWarning")
def test_confident_learning_finds_flips_beside_a_class_no_point_carries() -> None:
    # Two well-separated clusters, 3 flipped labels, and a third class nobody carries.
    g = _gen(0)
    x = torch.cat([torch.randn(30, 2, generator=g) - 3, torch.randn(30, 2, generator=g) + 3])
    y = torch.tensor([0] * 30 + [1] * 30)
    y[[0, 1, 40]] = torch.tensor([1, 1, 0])
    # 48 points per training fold: one step per epoch, so many epochs
    found = confident_learning_issues(x, y, n_classes=3, epochs=300, seed=0)
    assert found.issues.nonzero().flatten().tolist() == [0, 1, 40]
    single = confident_learning_issues(x, torch.zeros(60, dtype=torch.long), n_classes=3,
                                       cv=2, epochs=1, seed=0)
    assert not bool(single.issues.any())


def test_train_with_confident_learning(digits: Dataset,
                                       noisy30: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = build_model("logistic", digits.input_shape, K, seed=0)
    defense = get_defense("confident_learning", cv=2, epochs=2)
    before = _rng_states()
    train(model, digits.x_train, noisy30[0], defense=defense, epochs=1, seed=0)
    _assert_rng_unchanged(before)


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"cv": 1}, r"cv=1 is not allowed: expected a value in \[2, inf\)"),
        ({"cv": 2.5}, r"cv=2.5 is not allowed: expected an integer"),
        ({"filter_by": "prune_by_noise"}, r"filter_by='prune_by_noise' is not allowed: "
                                          r"expected one of prune_by_noise_rate.*did you mean"),
        ({"frac_noise": 0.0}, r"frac_noise=0.0 is not allowed: expected a value in \(0, 1\]"),
        ({"frac_noise": 1.2}, r"frac_noise=1.2 is not allowed"),
        ({"model": "mlpp"}, r"model='mlpp'.*did you mean 'mlp'"),
        ({"epochs": 0}, r"epochs=0 is not allowed"),
        ({"lr": 0.0}, r"lr=0.0 is not allowed: expected a value in \(0, inf\)"),
        ({"weight_decay": -1e-3}, r"weight_decay=-0.001 is not allowed"),
    ],
)
def test_confident_learning_validates_its_parameters(
    params: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        ConfidentLearning(**params)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=pattern):
        confident_learning_issues(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), n_classes=2,
                                  **params)  # type: ignore[arg-type]


def test_confident_learning_lists_every_cleanlab_filter() -> None:
    for method in CL_FILTERS:
        assert ConfidentLearning(filter_by=method).filter_by == method


def test_confident_learning_refuses_more_folds_than_points() -> None:
    x, y = torch.randn(4, 2, generator=_gen()), torch.tensor([0, 1, 0, 1])
    with pytest.raises(DataError, match=r"cv=5 is not allowed with 4 training points: "
                                        r"expected cv <= 4"):
        ConfidentLearning().prepare(x, y, n_classes=2, generator=_gen())


def test_confident_learning_without_cleanlab_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    with pytest.raises(ConfigError, match=r"needs the cleanlab package: pip install"):
        ConfidentLearning()
    with pytest.raises(ConfigError, match=r"needs the cleanlab package"):
        confident_learning_issues(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), n_classes=2)
