"""Metrics (design section 4) on tiny inputs whose values are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab import ConfigError, DataError, metrics
from poisonlab.metrics import (
    ALPHA_GRID,
    ALPHA_STAR_LEVEL,
    RAY_ALPHAS,
    accuracy,
    aggregate,
    alpha_star,
    attack_success_rate,
    auroc,
    brier,
    ece,
    gaussian_noise,
    max_softmax,
    nll,
    offmanifold_auroc,
    offmanifold_confidence,
    poisoning_success_rate,
    predict_proba,
    ray_confidence,
    uniform_noise,
)

# --------------------------------------------------------------------------- accuracy


def test_accuracy_by_hand() -> None:
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75


def test_accuracy_accepts_tensors() -> None:
    assert accuracy(torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)


def test_accuracy_of_nothing_is_nan() -> None:
    assert math.isnan(accuracy(np.array([], dtype=int), np.array([], dtype=int)))


def test_accuracy_shape_mismatch_raises() -> None:
    with pytest.raises(DataError, match=r"pred has shape \(3,\): expected \(2,\)"):
        accuracy(np.zeros(3), np.zeros(2))


# --------------------------------------------------------------------------- evasion success

Y = np.array([0, 1, 2, 3])
PRED_CLEAN = np.array([0, 1, 2, 0])  # sample 3 is wrong before the attack
PRED_ADV = np.array([1, 1, 0, 0])


def test_untargeted_success_counts_only_points_correct_when_clean() -> None:
    # eligible: 0, 1, 2 (sample 3 misclassified clean); fooled: 0 and 2
    assert attack_success_rate(PRED_CLEAN, PRED_ADV, Y) == pytest.approx(2 / 3)


def test_targeted_success_counts_points_whose_label_is_not_the_target() -> None:
    # target 1: eligible 0, 2, 3 (sample 1 already has label 1); predicted 1: sample 0 only
    assert attack_success_rate(PRED_CLEAN, PRED_ADV, Y, target=1) == pytest.approx(1 / 3)


def test_targeted_success_ignores_clean_correctness() -> None:
    # target 0: eligible 1, 2, 3; predicted 0 after the attack: 2 and 3 (3 was already 0)
    assert attack_success_rate(PRED_CLEAN, PRED_ADV, Y, target=0) == pytest.approx(2 / 3)


def test_targeted_success_with_a_per_sample_target() -> None:
    target = np.array([1, 1, 0, 2])  # eligible 0, 2, 3 -> hits at 0 and 2
    assert attack_success_rate(PRED_CLEAN, PRED_ADV, Y, target=target) == pytest.approx(2 / 3)


def test_success_is_nan_when_no_point_is_eligible() -> None:
    y = np.array([1, 1])
    assert math.isnan(attack_success_rate(np.array([0, 0]), np.array([0, 0]), y))
    assert math.isnan(attack_success_rate(np.array([1, 1]), np.array([0, 0]), y, target=1))


# --------------------------------------------------------------------------- poisoning success

PY = np.array([0, 0, 1, 1, 2])
P_CLEAN_MODEL = np.array([0, 0, 1, 2, 2])  # eligible: 0, 1, 2, 4
P_POISONED_MODEL = np.array([0, 1, 2, 1, 0])


def test_indiscriminate_poisoning_success_by_hand() -> None:
    # among eligible 0, 1, 2, 4 the poisoned model is wrong at 1, 2 and 4
    assert poisoning_success_rate(P_CLEAN_MODEL, P_POISONED_MODEL, PY) == pytest.approx(3 / 4)


def test_pairwise_poisoning_success_by_hand() -> None:
    # class-1 test points: 2 and 3; predicted as 2 by the poisoned model: point 2 only
    rate = poisoning_success_rate(P_CLEAN_MODEL, P_POISONED_MODEL, PY, source=1, target=2)
    assert rate == pytest.approx(1 / 2)


def test_pairwise_poisoning_success_ignores_the_clean_model() -> None:
    a = poisoning_success_rate(P_CLEAN_MODEL, P_POISONED_MODEL, PY, source=0, target=1)
    b = poisoning_success_rate(np.zeros(5, int), P_POISONED_MODEL, PY, source=0, target=1)
    assert a == b == pytest.approx(1 / 2)


def test_pairwise_poisoning_success_is_nan_without_source_points() -> None:
    rate = poisoning_success_rate(P_CLEAN_MODEL, P_POISONED_MODEL, PY, source=7, target=1)
    assert math.isnan(rate)


# --------------------------------------------------------------------------- calibration


def test_ece_docstring_example() -> None:
    # 15 bins: 0.9 (correct) and 0.6 (wrong) fall in different bins.
    # ece = 1/2 * |1 - 0.9| + 1/2 * |0 - 0.6| = 0.35
    value = ece(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))
    assert value == pytest.approx(0.35)


def test_ece_two_bins_by_hand() -> None:
    probs = np.array([
        [0.90, 0.05, 0.05],  # conf 0.90, pred 0, correct   -> bin (0.5, 1]
        [0.70, 0.20, 0.10],  # conf 0.70, pred 0, wrong     -> bin (0.5, 1]
        [0.40, 0.35, 0.25],  # conf 0.40, pred 0, correct   -> bin (0, 0.5]
        [0.30, 0.25, 0.45],  # conf 0.45, pred 2, wrong     -> bin (0, 0.5]
    ])
    y = np.array([0, 1, 0, 1])
    # high bin: acc 1/2, conf 0.8   -> |0.5 - 0.8|   * 2/4 = 0.15
    # low bin:  acc 1/2, conf 0.425 -> |0.5 - 0.425| * 2/4 = 0.0375
    assert ece(probs, y, n_bins=2) == pytest.approx(0.1875)


def test_ece_one_bin_is_the_gap_between_mean_confidence_and_accuracy() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    y = np.array([0, 1, 1])  # correct, wrong, correct; mean conf 0.8
    assert ece(probs, y, n_bins=1) == pytest.approx(abs(2 / 3 - 0.8))


def test_ece_with_15_bins_by_hand() -> None:
    probs = np.array([[0.95, 0.05], [0.93, 0.07], [0.62, 0.38], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    # confidences 0.95 (correct), 0.93 (wrong), 0.62 (correct), 0.8 (correct) fall in bins
    # 14, 13, 9 and 11 of 15: each sits alone in its bin, so ece = mean |correct - conf|
    expected = (0.05 + 0.93 + 0.38 + 0.2) / 4
    assert ece(probs, y) == pytest.approx(expected)


def test_ece_accepts_tensors_and_equals_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(50, 4, generator=g), dim=1)
    y = torch.randint(0, 4, (50,), generator=g)
    assert ece(probs, y) == pytest.approx(ece(probs.numpy(), y.numpy()))


def test_perfect_one_hot_predictions_have_zero_calibration_error() -> None:
    y = np.array([2, 0, 1, 1])
    probs = np.eye(3)[y]
    assert ece(probs, y) == 0.0
    assert brier(probs, y) == 0.0
    assert nll(probs, y) == pytest.approx(0.0, abs=1e-12)


def test_ece_rejects_bad_shapes_and_labels() -> None:
    with pytest.raises(DataError, match=r"probs has shape \(3,\)"):
        ece(np.ones(3) / 3, np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"y has labels outside \[0, 1\]"):
        ece(np.array([[0.5, 0.5]]), np.array([2]))


@pytest.mark.parametrize("n_bins", [0, -1, 2.5])
def test_ece_rejects_a_bad_bin_count(n_bins: object) -> None:
    with pytest.raises(ConfigError, match=rf"n_bins={n_bins!r} is not allowed"):
        ece(np.array([[0.5, 0.5]]), np.array([0]), n_bins=n_bins)  # type: ignore[arg-type]


def test_nll_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    y = np.array([0, 2])
    assert nll(probs, y) == pytest.approx(-(math.log(0.7) + math.log(0.4)) / 2)


def test_nll_floors_zero_probabilities() -> None:
    assert nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-12))


def test_brier_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    y = np.array([0, 2])
    # (0.09 + 0.04 + 0.01 + 0.01 + 0.25 + 0.36) / 2
    assert brier(probs, y) == pytest.approx(0.38)


# --------------------------------------------------------------------------- auroc


def test_auroc_by_hand() -> None:
    # pairs won: 0.9 beats both, 0.8 beats both, 0.4 beats 0.1 only -> 5 of 6
    assert auroc([0.9, 0.8, 0.4], [0.5, 0.1]) == pytest.approx(5 / 6)


@pytest.mark.parametrize(
    ("pos", "neg", "expected"),
    [
        ([0.5], [0.5], 0.5),
        ([0.3, 0.3, 0.3], [0.3, 0.3], 0.5),
        ([0.9, 0.5], [0.5, 0.1], 0.875),  # (2 + 1 + 0.5 + 1) / 4: tie counts one half
        ([1.0, 2.0], [0.0, -1.0], 1.0),
        ([0.0, -1.0], [1.0, 2.0], 0.0),
    ],
)
def test_auroc_counts_ties_as_one_half(pos: list[float], neg: list[float], expected: float) -> None:
    assert auroc(np.array(pos), np.array(neg)) == pytest.approx(expected)


def test_auroc_of_an_empty_side_is_nan() -> None:
    assert math.isnan(auroc([], [0.1]))
    assert math.isnan(auroc([0.1], []))


# --------------------------------------------------------------------------- aggregate


def test_aggregate_mean_sample_std_and_n() -> None:
    out = aggregate([1.0, 2.0, 3.0, 6.0])
    assert out["mean"] == pytest.approx(3.0)
    assert out["std"] == pytest.approx(math.sqrt(14 / 3))  # ddof = 1
    assert out["n"] == 4


def test_aggregate_drops_nan() -> None:
    assert aggregate([1.0, float("nan"), 3.0]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)),
                                                     "n": 2}


def test_aggregate_single_value_has_zero_std() -> None:
    assert aggregate([0.25]) == {"mean": 0.25, "std": 0.0, "n": 1}


def test_aggregate_of_nothing_finite() -> None:
    out = aggregate([float("nan")])
    assert out["n"] == 0
    assert math.isnan(out["mean"])
    assert math.isnan(out["std"])


# --------------------------------------------------------------------------- off-manifold


def _linear(weight: list[list[float]]) -> nn.Module:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer.eval()


W2 = [[1.0, 0.5, -0.2], [-1.0, 0.3, 0.4]]


def test_max_softmax_rises_along_rays_for_a_bias_free_linear_model() -> None:
    model = _linear(W2)
    u = uniform_noise(9, (3,), (0.0, 1.0), seed=0)
    confs = ray_confidence(model, u)
    assert list(confs) == list(RAY_ALPHAS)
    values = list(confs.values())
    assert values == sorted(values)
    assert values[-1] > values[0]


def _first_grid_point_at_or_above(t: float) -> float:
    above = ALPHA_GRID[t <= ALPHA_GRID]
    return float(above[0]) if len(above) else float(ALPHA_GRID[-1])


def test_alpha_star_matches_a_direct_computation() -> None:
    # Two classes, logits = alpha * W u: max-softmax = sigmoid(alpha * |d|) with d the logit
    # gap at alpha = 1, so it reaches 0.999 once alpha >= ln(999) / |d|.
    model = _linear(W2)
    u = uniform_noise(9, (3,), (0.0, 1.0), seed=4)
    w = torch.tensor(W2, dtype=torch.float64)
    gap = (u.double() @ (w[0] - w[1])).abs().numpy()
    threshold = math.log(ALPHA_STAR_LEVEL / (1 - ALPHA_STAR_LEVEL)) / gap
    # no threshold sits on a grid point, so float32 rounding cannot move the answer
    rel = np.abs(threshold[:, None] / ALPHA_GRID[None, :] - 1)
    assert rel.min() > 1e-3
    first = np.array([_first_grid_point_at_or_above(t) for t in threshold])
    assert alpha_star(model, u) == pytest.approx(float(np.median(first)), rel=1e-12)
    assert 1.0 < alpha_star(model, u) < 1e4


def test_alpha_star_is_capped_at_the_grid_end_for_a_humble_model() -> None:
    model = _linear([[0.0, 0.0], [0.0, 0.0]])  # always uniform
    u = uniform_noise(5, (2,), (0.0, 1.0), seed=0)
    assert alpha_star(model, u) == pytest.approx(1e4)


def test_alpha_star_is_one_for_a_model_confident_everywhere() -> None:
    class Confident(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([20.0, 0.0]).expand(x.shape[0], 2)

    assert alpha_star(Confident(), uniform_noise(5, (2,), (0.0, 1.0), seed=0)) == 1.0


def test_offmanifold_auroc_is_one_for_a_model_confident_only_on_data() -> None:
    model = _linear([[10.0] * 4, [-10.0] * 4])
    g = torch.Generator().manual_seed(0)
    clean = 0.9 + 0.1 * torch.rand(50, 4, generator=g)   # logit gap ~ 80: max-softmax ~ 1
    noise = 0.01 * torch.rand(50, 4, generator=g)        # logit gap < 0.8: near uniform
    assert float(max_softmax(model, clean).min()) > 0.999
    assert float(max_softmax(model, noise).max()) < 0.7
    assert offmanifold_auroc(model, clean, noise) == 1.0


def test_offmanifold_confidence_of_a_uniform_model_is_one_over_k() -> None:
    model = _linear([[0.0] * 3] * 4)
    noise = uniform_noise(20, (3,), (0.0, 1.0), seed=0)
    assert offmanifold_confidence(model, noise) == pytest.approx(0.25)


def test_uniform_noise_is_seeded_inside_the_bounds_and_leaves_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = uniform_noise(200, (1, 4, 4), (-2.0, 3.0), seed=4)
    b = uniform_noise(200, (1, 4, 4), (-2.0, 3.0), seed=4)
    c = uniform_noise(200, (1, 4, 4), (-2.0, 3.0), seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a.shape == (200, 1, 4, 4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= -2.0
    assert float(a.max()) <= 3.0
    assert float(a.max() - a.min()) > 4.5  # it actually spans the box


def test_gaussian_noise_follows_the_training_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    x_train = torch.stack([torch.full((3,), 5.0), torch.full((3,), 7.0)]).repeat(50, 1)
    x_train = x_train + 0.01 * torch.randn(x_train.shape, generator=g)
    noise = gaussian_noise(4000, x_train, seed=1)
    assert noise.shape == (4000, 3)
    torch.testing.assert_close(noise.mean(dim=0), x_train.mean(dim=0), atol=0.1, rtol=0)
    torch.testing.assert_close(noise.std(dim=0), x_train.std(dim=0), atol=0.1, rtol=0)
    assert torch.equal(noise, gaussian_noise(4000, x_train, seed=1))


def test_predict_proba_rows_sum_to_one_and_mode_is_restored() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.9)).train()
    x = torch.rand(10, 3, generator=torch.Generator().manual_seed(0))
    p1, p2 = predict_proba(model, x), predict_proba(model, x)
    torch.testing.assert_close(p1.sum(dim=1), torch.ones(10))
    assert torch.equal(p1, p2)  # evaluated in eval mode: dropout off
    assert model.training
    assert model[1].training


def test_predict_proba_batches_give_the_same_result() -> None:
    model = _linear(W2)
    x = uniform_noise(25, (3,), (0.0, 1.0), seed=2)
    torch.testing.assert_close(predict_proba(model, x, batch_size=4), predict_proba(model, x))


def test_every_reported_metric_has_a_direction() -> None:
    for name in ("clean_accuracy", "robust_accuracy", "attack_success_rate", "ece", "nll",
                 "brier", "alpha_star", "offmanifold_auroc", "offmanifold_confidence"):
        assert name in metrics.HIGHER_IS_BETTER
    assert metrics.HIGHER_IS_BETTER["alpha_star"] is True
    assert metrics.HIGHER_IS_BETTER["ece"] is False
