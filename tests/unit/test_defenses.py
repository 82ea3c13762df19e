"""Label-side defenses: smoothing, confidence penalty, DisturbLabel, GCE, SCE, bootstrapping."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from poisonlab import (
    ConfigError,
    Dataset,
    Defense,
    UnknownNameError,
    build_model,
    get_defense,
    train,
)
from poisonlab.defenses import (
    ConfidencePenalty,
    FlipAugment,
    LabelSmoothing,
    NoDefense,
    defenses,
)
from poisonlab.defenses.base import KINDS
from poisonlab.defenses.losses import (
    GCE,
    SCE,
    Bootstrap,
    bootstrap_targets,
    disturb_labels,
    entropy,
    generalized_cross_entropy,
    reverse_cross_entropy,
    smoothed_targets,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return 3 * torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


# --------------------------------------------------------------------------- smoothing


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25, 1.0])
def test_smoothed_targets_values(k: int, eps: float) -> None:
    y = torch.arange(2 * k) % k
    t = smoothed_targets(y, k, eps)
    assert t.shape == (2 * k, k)
    onehot = F.one_hot(y, k).bool()
    expected_true = torch.full_like(t[onehot], (1 - eps) + eps / k)
    expected_other = torch.full_like(t[~onehot], eps / k)
    torch.testing.assert_close(t[onehot], expected_true)
    torch.testing.assert_close(t[~onehot], expected_other)
    torch.testing.assert_close(t.sum(dim=1), torch.ones(2 * k))


def test_smoothed_targets_true_class_is_the_argmax_for_eps_below_one() -> None:
    y = torch.tensor([4, 0, 2])
    assert torch.equal(smoothed_targets(y, 5, 0.6).argmax(dim=1), y)


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("k", [2, 10])
def test_label_smoothing_loss_equals_torch_cross_entropy(eps: float, k: int) -> None:
    logits, y = _batch(64, k, seed=k)
    ours = LabelSmoothing(eps=eps).loss(logits, y, n_classes=k)
    ref = F.cross_entropy(logits, y, label_smoothing=eps)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_no_defense_loss_is_plain_cross_entropy() -> None:
    logits, y = _batch(32, 4, seed=1)
    assert torch.equal(NoDefense().loss(logits, y, n_classes=4), F.cross_entropy(logits, y))
    assert torch.equal(get_defense("none").loss(logits, y, n_classes=4), F.cross_entropy(logits, y))


# --------------------------------------------------------------------------- confidence penalty


def test_entropy_matches_the_definition() -> None:
    logits, _ = _batch(16, 5, seed=2)
    p = torch.softmax(logits, dim=1)
    torch.testing.assert_close(entropy(logits), -(p * p.log()).sum(dim=1))
    assert torch.allclose(entropy(torch.zeros(3, 5)), torch.full((3,), math.log(5)))


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
def test_confidence_penalty_loss_is_ce_minus_beta_entropy(beta: float) -> None:
    logits, y = _batch(32, 6, seed=3)
    p = torch.softmax(logits, dim=1)
    h = -(p * p.log()).sum(dim=1).mean()
    expected = F.cross_entropy(logits, y) - beta * h
    torch.testing.assert_close(ConfidencePenalty(beta=beta).loss(logits, y, n_classes=6), expected)


def _mean_entropy(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(entropy(model(x)).mean())


def test_confidence_penalty_raises_output_entropy_on_the_training_set(
    digits: Dataset, digits_mlp: torch.nn.Module
) -> None:
    # digits_mlp: plain cross-entropy, same architecture, init seed, epochs and train seed.
    penalised = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
    train(penalised, digits.x_train, digits.y_train,
          defense=get_defense("confidence_penalty", beta=1.0), epochs=10, seed=0)
    h_plain = _mean_entropy(digits_mlp, digits.x_train)
    h_penalised = _mean_entropy(penalised, digits.x_train)
    assert h_penalised > h_plain + 0.1


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_confidence_penalty_without_threshold_is_the_unhinged_loss_exactly() -> None:
    logits, y = _batch(32, 6, seed=3)
    unhinged = F.cross_entropy(logits, y) - 0.7 * entropy(logits).mean()
    assert torch.equal(ConfidencePenalty(beta=0.7).loss(logits, y, n_classes=6), unhinged)
    assert ConfidencePenalty(beta=0.7).threshold is None


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("threshold", [0.5, 1.0, 1.5])
def test_confidence_penalty_hinge_penalises_only_entropies_below_the_threshold(
    beta: float, threshold: float
) -> None:
    logits, y = _batch(64, 6, seed=5)
    h = entropy(logits)
    assert bool((h < threshold).any()) and bool((h > threshold).any())  # both sides present
    expected = F.cross_entropy(logits, y) + beta * torch.where(
        h < threshold, threshold - h, torch.zeros_like(h)).mean()
    got = ConfidencePenalty(beta=beta, threshold=threshold).loss(logits, y, n_classes=6)
    torch.testing.assert_close(got, expected)
    # the hinged term is a penalty: never below plain cross-entropy
    assert float(got) >= float(F.cross_entropy(logits, y))


def test_confidence_penalty_hinge_gradient_ignores_points_above_the_threshold() -> None:
    # one confident point (low entropy) and one uncertain point (entropy log 3)
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    ConfidencePenalty(beta=1.0, threshold=0.5).loss(logits, y, n_classes=3).backward()
    assert logits.grad is not None
    ce_logits = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(ce_logits, y).backward()
    assert ce_logits.grad is not None
    # above the threshold: cross-entropy's gradient only
    torch.testing.assert_close(logits.grad[1], ce_logits.grad[1])
    # below it: the entropy term pushes the confident logit down harder than CE alone
    assert float(logits.grad[0, 0]) > float(ce_logits.grad[0, 0])


def test_confidence_penalty_hinge_above_log_k_is_the_unhinged_loss_plus_a_constant() -> None:
    logits, y = _batch(32, 4, seed=6)
    gamma = math.log(4) + 0.25  # above every entropy, so the hinge is always active
    hinged = ConfidencePenalty(beta=0.5, threshold=gamma).loss(logits, y, n_classes=4)
    unhinged = ConfidencePenalty(beta=0.5).loss(logits, y, n_classes=4)
    torch.testing.assert_close(hinged, unhinged + 0.5 * gamma)


@pytest.mark.parametrize("k", [2, 10])
def test_confidence_penalty_with_threshold_zero_is_plain_cross_entropy(k: int) -> None:
    logits, y = _batch(64, k, seed=k)
    logits[0] = torch.tensor([80.0] + [0.0] * (k - 1))  # an entropy that rounds to 0
    got = ConfidencePenalty(beta=2.0, threshold=0.0).loss(logits, y, n_classes=k)
    assert torch.equal(got, F.cross_entropy(logits, y))


def test_confidence_penalty_hinge_raises_output_entropy_and_threshold_zero_is_ce(
    digits: Dataset, digits_mlp: torch.nn.Module
) -> None:
    h_plain = _mean_entropy(digits_mlp, digits.x_train)
    runs = {}
    for threshold in (None, 1.0, 0.0):
        model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
        train(model, digits.x_train, digits.y_train, epochs=10, seed=0,
              defense=get_defense("confidence_penalty", beta=1.0, threshold=threshold))
        runs[threshold] = model
    h_unhinged = _mean_entropy(runs[None], digits.x_train)
    h_hinged = _mean_entropy(runs[1.0], digits.x_train)
    # the hinge raises entropy, but stops pushing once it reaches the threshold
    assert h_plain + 0.1 < h_hinged < h_unhinged - 0.1
    # threshold 0 never penalises: the very same weights as plain cross-entropy
    assert _same_weights(runs[0.0], digits_mlp)


# --------------------------------------------------------------------------- DisturbLabel


@pytest.mark.parametrize(("alpha", "k"), [(0.1, 10), (0.3, 10), (0.5, 2), (0.9, 5)])
def test_disturb_labels_changes_about_alpha_k_minus_one_over_k(alpha: float, k: int) -> None:
    n, draws = 2000, 20
    gen = _gen(11)
    y = torch.arange(n) % k
    changed = 0
    redrawn = 0
    for _ in range(draws):
        y_new, mask = disturb_labels(y, k, alpha, gen)
        changed += int((y_new != y).sum())
        redrawn += int(mask.sum())
        # a label only ever changes where it was redrawn
        assert not bool(((y_new != y) & ~mask).any())
    total = n * draws
    for count, p in ((changed, alpha * (k - 1) / k), (redrawn, alpha)):
        sigma = math.sqrt(total * p * (1 - p))
        assert abs(count - total * p) < 5 * sigma


@pytest.mark.parametrize("k", [2, 7])
def test_disturb_labels_with_alpha_one_is_uniform_over_all_classes(k: int) -> None:
    n = 20000
    y = torch.zeros(n, dtype=torch.int64)
    y_new, mask = disturb_labels(y, k, 1.0, _gen(5))
    assert bool(mask.all())
    counts = torch.bincount(y_new, minlength=k).double()
    sigma = math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert float((counts - n / k).abs().max()) < 5 * sigma


def test_disturb_labels_with_alpha_zero_is_the_identity() -> None:
    y = torch.arange(100) % 4
    y_new, mask = disturb_labels(y, 4, 0.0, _gen(0))
    assert torch.equal(y_new, y)
    assert not bool(mask.any())


def test_disturb_labels_never_alters_its_input_and_stays_in_range() -> None:
    y = torch.arange(500) % 10
    y0 = y.clone()
    y_new, _ = disturb_labels(y, 10, 0.7, _gen(1))
    assert torch.equal(y, y0)
    assert y_new.dtype == torch.int64
    assert int(y_new.min()) >= 0
    assert int(y_new.max()) <= 9


def test_disturb_labels_is_reproducible_from_the_generator_seed() -> None:
    y = torch.arange(300) % 3
    a = disturb_labels(y, 3, 0.4, _gen(9))[0]
    b = disturb_labels(y, 3, 0.4, _gen(9))[0]
    c = disturb_labels(y, 3, 0.4, _gen(10))[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_flip_augment_transform_uses_disturb_labels() -> None:
    y = torch.arange(400) % 8
    out = FlipAugment(alpha=0.3).transform_labels(y, n_classes=8, generator=_gen(2))
    assert torch.equal(out, disturb_labels(y, 8, 0.3, _gen(2))[0])


def test_flip_augment_does_not_change_the_loss() -> None:
    logits, y = _batch(16, 3, seed=4)
    assert torch.equal(FlipAugment(alpha=0.5).loss(logits, y, n_classes=3),
                       F.cross_entropy(logits, y))


def test_disturb_labels_any_mode_draws_are_pinned() -> None:
    # The default DisturbLabel draws are part of stored results: they must never change.
    y = torch.arange(20) % 5
    y_new, redrawn = disturb_labels(y, 5, 0.5, _gen(0))
    assert y_new.tolist() == [1, 1, 1, 4, 4, 0, 4, 2, 4, 4, 1, 2, 3, 0, 0, 0, 1, 2, 1, 3]
    assert redrawn.int().tolist() == [1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1]
    assert torch.equal(disturb_labels(y, 5, 0.5, _gen(0), mode="any")[0], y_new)


def test_flip_augment_defaults_consume_the_generator_exactly_as_before() -> None:
    d = FlipAugment(alpha=0.3)
    assert (d.mode, d.resample) == ("any", "batch")
    x, y = torch.randn(50, 3, generator=_gen(0)), torch.arange(50) % 4
    g, ref = _gen(7), _gen(7)
    # prepare and epoch_labels are the identity and draw nothing in the default mode
    x2, y2 = d.prepare(x, y, n_classes=4, generator=g)
    assert x2 is x and y2 is y
    assert d.epoch_labels(y, n_classes=4, generator=g) is y
    assert torch.equal(g.get_state(), ref.get_state())
    out = d.transform_labels(y, n_classes=4, generator=g)
    assert torch.equal(out, disturb_labels(y, 4, 0.3, ref)[0])
    assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize(("alpha", "k"), [(0.1, 10), (0.3, 10), (0.5, 2), (0.9, 5), (1.0, 3)])
@pytest.mark.parametrize("mode", ["any", "other"])
def test_flip_augment_changes_the_documented_fraction_of_a_large_batch(
    alpha: float, k: int, mode: str
) -> None:
    n = 100_000
    y = torch.arange(n) % k
    out = FlipAugment(alpha=alpha, mode=mode).transform_labels(y, n_classes=k,
                                                               generator=_gen(13))
    p = alpha * (k - 1) / k if mode == "any" else alpha
    changed = int((out != y).sum())
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(changed - n * p) <= max(4 * sigma, 1e-9)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_disturb_labels_other_mode_moves_every_redrawn_label_uniformly(k: int) -> None:
    n = 30_000
    y = torch.zeros(n, dtype=torch.int64)
    y_new, redrawn = disturb_labels(y, k, 0.6, _gen(21), mode="other")
    assert torch.equal(y_new != y, redrawn)  # redrawn <=> changed
    moved = y_new[redrawn]
    counts = torch.bincount(moved, minlength=k).double()
    assert counts[0] == 0
    m = moved.numel()
    sigma = math.sqrt(m * (1 / (k - 1)) * (1 - 1 / (k - 1))) if k > 2 else 0.0
    assert float((counts[1:] - m / (k - 1)).abs().max()) <= 4 * sigma


def test_disturb_labels_other_mode_needs_two_classes() -> None:
    with pytest.raises(ConfigError, match=r"mode='other' is not allowed with n_classes=1"):
        disturb_labels(torch.zeros(4, dtype=torch.int64), 1, 0.5, _gen(0), mode="other")


def test_disturb_labels_rejects_an_unknown_mode() -> None:
    with pytest.raises(ConfigError, match=r"mode='othre' is not allowed.*did you mean 'other'"):
        disturb_labels(torch.zeros(4, dtype=torch.int64), 3, 0.5, _gen(0), mode="othre")


def test_flip_augment_hooks_draw_where_documented() -> None:
    k = 5
    x, y = torch.randn(400, 2, generator=_gen(1)), torch.arange(400) % k
    once, epoch, batch = (FlipAugment(alpha=0.5, resample=r) for r in ("once", "epoch", "batch"))
    g = _gen(3)
    # once: drawn in prepare only; x passes through untouched
    x1, y1 = once.prepare(x, y, n_classes=k, generator=g)
    assert x1 is x
    assert not torch.equal(y1, y)
    assert once.epoch_labels(y1, n_classes=k, generator=g) is y1
    assert once.transform_labels(y1, n_classes=k, generator=g) is y1
    # epoch: drawn in epoch_labels only, fresh each call
    x2, y2 = epoch.prepare(x, y, n_classes=k, generator=g)
    assert x2 is x and y2 is y
    e1 = epoch.epoch_labels(y, n_classes=k, generator=g)
    e2 = epoch.epoch_labels(y, n_classes=k, generator=g)
    assert not torch.equal(e1, y) and not torch.equal(e1, e2)
    assert epoch.transform_labels(e1, n_classes=k, generator=g) is e1
    # batch: drawn in transform_labels only
    x3, y3 = batch.prepare(x, y, n_classes=k, generator=g)
    assert x3 is x and y3 is y
    assert batch.epoch_labels(y, n_classes=k, generator=g) is y
    assert not torch.equal(batch.transform_labels(y, n_classes=k, generator=g), y)


@dataclass(frozen=True)
class _RecordingFlip(FlipAugment):
    """FlipAugment that records every batch the training loop hands to the objective."""

    seen: list[tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=list, compare=False, repr=False)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "mode": self.mode, "resample": self.resample}

    def objective(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  **kw: Any) -> torch.Tensor:
        self.seen.append((x.detach().clone(), y.clone()))
        return super().objective(model, x, y, **kw)


def _labels_per_epoch(
    resample: str, *, epochs: int = 3, n: int = 120, k: int = 4, batch_size: int = 32
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Train through train() and rebuild, per epoch, the label and input each point got."""
    g = _gen(17)
    x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None],  # column 0: the index
                   torch.randn(n, 3, generator=g)], dim=1)
    y = torch.arange(n) % k
    d = _RecordingFlip(alpha=0.5, resample=resample)
    model = torch.nn.Sequential(torch.nn.Linear(4, k))
    train(model, x.clone(), y, defense=d, epochs=epochs, batch_size=batch_size, seed=0)
    per_epoch = -(-n // batch_size)
    assert len(d.seen) == epochs * per_epoch
    labels, inputs = [], []
    for e in range(epochs):
        xs = torch.cat([xb for xb, _ in d.seen[e * per_epoch:(e + 1) * per_epoch]])
        ys = torch.cat([yb for _, yb in d.seen[e * per_epoch:(e + 1) * per_epoch]])
        order = xs[:, 0].long().argsort()
        assert torch.equal(xs[order, 0].long(), torch.arange(n))  # each point once per epoch
        labels.append(ys[order])
        inputs.append(xs[order])
    return x, labels, inputs


@pytest.mark.parametrize("resample", ["batch", "epoch", "once"])
def test_flip_augment_never_changes_x_through_train(resample: str) -> None:
    x, _, inputs = _labels_per_epoch(resample)
    for xe in inputs:
        assert torch.equal(xe, x)


def test_flip_augment_once_keeps_the_same_noisy_labels_for_every_epoch() -> None:
    _, labels, _ = _labels_per_epoch("once")
    y = torch.arange(120) % 4
    assert not torch.equal(labels[0], y)
    assert all(torch.equal(le, labels[0]) for le in labels[1:])


@pytest.mark.parametrize("resample", ["epoch", "batch"])
def test_flip_augment_epoch_and_batch_redraw_every_epoch(resample: str) -> None:
    _, labels, _ = _labels_per_epoch(resample)
    y = torch.arange(120) % 4
    assert all(not torch.equal(le, y) for le in labels)
    assert not torch.equal(labels[0], labels[1])
    assert not torch.equal(labels[1], labels[2])


def test_flip_augment_never_changes_the_loss_or_the_data_hooks_input() -> None:
    x = torch.randn(64, 1, 8, 8, generator=_gen(2))
    x0 = x.clone()
    y = torch.arange(64) % 10
    for mode in ("any", "other"):
        for resample in ("batch", "epoch", "once"):
            d = FlipAugment(alpha=1.0, mode=mode, resample=resample)
            x_out, _ = d.prepare(x, y, n_classes=10, generator=_gen(0))
            assert x_out is x
    assert torch.equal(x, x0)


# --------------------------------------------------------------------------- GCE


def _ce_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(z, y).backward()
    assert z.grad is not None
    return z.grad


def _loss_grad(d: Defense, logits: torch.Tensor, y: torch.Tensor, k: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.detach().clone().requires_grad_(True)
    loss = d.loss(z, y, n_classes=k)
    loss.backward()
    assert z.grad is not None
    return loss.detach(), z.grad


def test_gce_on_a_hand_computed_example() -> None:
    # p = (1/2, 1/4, 1/4) exactly, label 1: p_y = 1/4
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    y = torch.tensor([1])
    torch.testing.assert_close(GCE(q=0.5).loss(logits, y, n_classes=3), torch.tensor(1.0))
    torch.testing.assert_close(GCE(q=1.0).loss(logits, y, n_classes=3), torch.tensor(0.75))
    expected = (1 - 0.25 ** 0.7) / 0.7
    torch.testing.assert_close(GCE().loss(logits, y, n_classes=3), torch.tensor(expected))


def test_gce_tends_to_cross_entropy_as_q_goes_to_zero() -> None:
    logits, y = _batch(64, 10, seed=8)
    ce, ce_grad = F.cross_entropy(logits, y), _ce_grad(logits, y)
    loss_err, grad_err = [], []
    for q in (1e-1, 1e-2, 1e-3, 1e-4):
        loss, grad = _loss_grad(GCE(q=q), logits, y, 10)
        loss_err.append(abs(float(loss - ce)))
        grad_err.append(float((grad - ce_grad).abs().max()))
    # the error shrinks with q ...
    assert loss_err == sorted(loss_err, reverse=True)
    assert grad_err == sorted(grad_err, reverse=True)
    # ... and at q = 1e-4 loss and gradient are those of cross-entropy
    loss, grad = _loss_grad(GCE(q=1e-4), logits, y, 10)
    torch.testing.assert_close(loss, ce, rtol=2e-3, atol=0)
    torch.testing.assert_close(grad, ce_grad, rtol=2e-3, atol=1e-6)


def test_gce_gradient_is_cross_entropy_gradient_weighted_by_p_y_to_the_q() -> None:
    logits, y = _batch(32, 5, seed=9)
    q = 0.7
    _, grad = _loss_grad(GCE(q=q), logits, y, 5)
    p = torch.softmax(logits, dim=1)
    weight = p.gather(1, y[:, None]) ** q
    expected = weight * (p - F.one_hot(y, 5)) / y.shape[0]
    torch.testing.assert_close(grad, expected)


def test_gce_with_q_one_is_half_the_mean_absolute_error() -> None:
    logits, y = _batch(32, 6, seed=10)
    mae = (F.one_hot(y, 6) - torch.softmax(logits, dim=1)).abs().sum(dim=1).mean()
    torch.testing.assert_close(GCE(q=1.0).loss(logits, y, n_classes=6), mae / 2)


@pytest.mark.parametrize("q", [1e-6, 1e-3, 0.7, 1.0])
def test_gce_is_finite_and_bounded_by_one_over_q_even_for_extreme_logits(q: float) -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]],
                          requires_grad=True)
    y = torch.tensor([1, 1, 2])
    per_sample = generalized_cross_entropy(logits, y, q)
    assert bool(torch.isfinite(per_sample).all())
    assert bool((per_sample >= 0).all()) and bool((per_sample <= 1 / q).all())
    per_sample.mean().backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


# --------------------------------------------------------------------------- SCE


def test_reverse_cross_entropy_is_minus_a_times_one_minus_p_y() -> None:
    logits, y = _batch(32, 7, seed=11)
    p_y = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(reverse_cross_entropy(logits, y), 4.0 * (1 - p_y))
    torch.testing.assert_close(reverse_cross_entropy(logits, y, log_zero=-9.0), 9.0 * (1 - p_y))
    # the definition: -sum_k p_k log q_k with log 0 := A
    logq = torch.where(F.one_hot(y, 7).bool(), 0.0, -4.0)
    torch.testing.assert_close(reverse_cross_entropy(logits, y),
                               -(torch.softmax(logits, dim=1) * logq).sum(dim=1))


def test_sce_on_a_hand_computed_example() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    y = torch.tensor([1])
    # CE = log 4, RCE = 4 * (1 - 1/4) = 3
    expected = 0.1 * math.log(4) + 1.0 * 3.0
    torch.testing.assert_close(SCE().loss(logits, y, n_classes=3), torch.tensor(expected))
    torch.testing.assert_close(SCE(alpha=1.0, beta=0.5, log_zero=-2.0).loss(logits, y,
                                                                              n_classes=3),
                               torch.tensor(math.log(4) + 0.5 * 2.0 * 0.75))


def test_sce_is_the_weighted_sum_and_finite_for_extreme_logits() -> None:
    logits, y = _batch(64, 10, seed=12)
    expected = 0.3 * F.cross_entropy(logits, y) + 2.0 * reverse_cross_entropy(logits, y).mean()
    torch.testing.assert_close(SCE(alpha=0.3, beta=2.0).loss(logits, y, n_classes=10), expected)
    extreme = torch.tensor([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    loss = SCE().loss(extreme, torch.tensor([1, 0]), n_classes=3)
    loss.backward()
    assert bool(torch.isfinite(loss)) and extreme.grad is not None
    assert bool(torch.isfinite(extreme.grad).all())
    # the reverse term is bounded by -A: a confidently wrong point costs at most 4
    assert float(reverse_cross_entropy(extreme.detach(), torch.tensor([1, 0]))[0]) <= 4.0


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_targets_sum_to_one_and_weight_the_label_by_beta() -> None:
    logits, y = _batch(32, 5, seed=14)
    for mode in ("soft", "hard"):
        t = bootstrap_targets(logits, y, 5, beta=0.7, mode=mode)
        torch.testing.assert_close(t.sum(dim=1), torch.ones(32))
        assert bool((t.gather(1, y[:, None]) >= 0.7 - 1e-6).all())
    hard = bootstrap_targets(logits, y, 5, beta=0.7, mode="hard")
    pred = logits.argmax(dim=1)
    expected = 0.7 * F.one_hot(y, 5) + 0.3 * F.one_hot(pred, 5)
    torch.testing.assert_close(hard, expected.float())


def test_bootstrap_on_a_hand_computed_example() -> None:
    # p = (1/2, 1/4, 1/4) exactly, label 1, predicted class 0
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    y = torch.tensor([1])
    h = 1.5 * math.log(2)  # entropy of p
    soft = Bootstrap().loss(logits, y, n_classes=3)  # beta 0.95
    torch.testing.assert_close(soft, torch.tensor(0.95 * math.log(4) + 0.05 * h))
    hard = Bootstrap(mode="hard").loss(logits, y, n_classes=3)  # beta 0.8
    torch.testing.assert_close(hard, torch.tensor(0.8 * math.log(4) + 0.2 * math.log(2)))


def test_bootstrap_soft_is_ce_plus_minimum_entropy_regularisation_gradient_included() -> None:
    logits, y = _batch(32, 6, seed=15)
    beta = 0.9
    loss, grad = _loss_grad(Bootstrap(beta=beta), logits, y, 6)
    z = logits.detach().clone().requires_grad_(True)
    ref = beta * F.cross_entropy(z, y) + (1 - beta) * entropy(z).mean()
    ref.backward()
    assert z.grad is not None
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad, z.grad)
    # not the detached variant, whose gradient is just beta times cross-entropy's
    assert float((grad - beta * _ce_grad(logits, y)).abs().max()) > 1e-3


def test_bootstrap_hard_differs_from_soft_as_documented() -> None:
    logits, y = _batch(256, 4, seed=16)
    right = logits.argmax(dim=1) == y
    assert bool(right.any()) and bool((~right).any())
    hard = Bootstrap(mode="hard", beta=0.8)
    soft = Bootstrap(mode="soft", beta=0.8)
    per_hard = torch.stack([hard.loss(logits[i:i + 1], y[i:i + 1], n_classes=4)
                            for i in range(256)])
    per_soft = torch.stack([soft.loss(logits[i:i + 1], y[i:i + 1], n_classes=4)
                            for i in range(256)])
    ce = F.cross_entropy(logits, y, reduction="none")
    # hard: where the model predicts the label, exactly cross-entropy ...
    torch.testing.assert_close(per_hard[right], ce[right])
    # ... elsewhere weight 1 - beta on the predicted class, which costs less than the label
    ce_pred = F.cross_entropy(logits, logits.argmax(dim=1), reduction="none")
    torch.testing.assert_close(per_hard[~right], 0.8 * ce[~right] + 0.2 * ce_pred[~right])
    assert bool((per_hard[~right] < ce[~right]).all())
    # soft: beta * CE + (1 - beta) * H(p), whatever the model predicts
    torch.testing.assert_close(per_soft, 0.8 * ce + 0.2 * entropy(logits))
    assert not torch.allclose(per_soft, per_hard)


def test_bootstrap_with_beta_one_is_cross_entropy() -> None:
    logits, y = _batch(32, 5, seed=18)
    for mode in ("soft", "hard"):
        torch.testing.assert_close(Bootstrap(beta=1.0, mode=mode).loss(logits, y, n_classes=5),
                                   F.cross_entropy(logits, y))


def test_bootstrap_default_beta_follows_the_mode() -> None:
    assert Bootstrap().beta is None
    assert Bootstrap().effective_beta == 0.95
    assert Bootstrap(mode="hard").effective_beta == 0.8
    assert Bootstrap(beta=0.6, mode="hard").effective_beta == 0.6
    assert get_defense("bootstrap", mode="hard").label == "bootstrap(beta=0.8, mode=hard)"


@pytest.mark.parametrize("name", ["gce", "sce", "bootstrap"])
def test_robust_losses_train_a_digits_mlp(name: str, digits: Dataset) -> None:
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
    train(model, digits.x_train, digits.y_train, defense=get_defense(name), epochs=3, seed=0)
    with torch.no_grad():
        acc = float((model(digits.x_test).argmax(dim=1) == digits.y_test).float().mean())
    assert acc > 0.5


# --------------------------------------------------------------------------- get_defense


@pytest.mark.parametrize(
    ("name", "params", "cls", "recorded"),
    [
        ("none", {}, NoDefense, {}),
        ("flip_augment", {"alpha": 0.2}, FlipAugment,
         {"alpha": 0.2, "mode": "any", "resample": "batch"}),
        ("flip_augment", {"alpha": 0.2, "mode": "other", "resample": "once"}, FlipAugment,
         {"alpha": 0.2, "mode": "other", "resample": "once"}),
        ("label_smoothing", {"eps": 0.1}, LabelSmoothing, {"eps": 0.1}),
        ("confidence_penalty", {"beta": 0.5}, ConfidencePenalty,
         {"beta": 0.5, "threshold": None}),
        ("confidence_penalty", {"beta": 0.5, "threshold": 1}, ConfidencePenalty,
         {"beta": 0.5, "threshold": 1.0}),
        ("gce", {}, GCE, {"q": 0.7}),
        ("sce", {}, SCE, {"alpha": 0.1, "beta": 1.0, "log_zero": -4.0}),
        ("bootstrap", {}, Bootstrap, {"beta": 0.95, "mode": "soft"}),
        ("bootstrap", {"mode": "hard"}, Bootstrap, {"beta": 0.8, "mode": "hard"}),
        ("bootstrap", {"beta": 0.5, "mode": "hard"}, Bootstrap, {"beta": 0.5, "mode": "hard"}),
    ],
)
def test_get_defense_builds_the_registered_class(
    name: str, params: dict[str, Any], cls: type[Defense], recorded: dict[str, Any]
) -> None:
    d = get_defense(name, **params)
    assert type(d) is cls
    assert d.name == name
    assert d.params() == recorded
    assert d.to_dict() == {"name": name, "params": recorded}
    # what a result records rebuilds the same defense
    assert get_defense(name, **recorded).params() == recorded


@pytest.mark.parametrize(
    ("cls", "kind"),
    [(NoDefense, "none"), (FlipAugment, "labels"), (LabelSmoothing, "loss"),
     (ConfidencePenalty, "loss"), (GCE, "loss"), (SCE, "loss"), (Bootstrap, "loss")],
)
def test_defense_kind(cls: type[Defense], kind: str) -> None:
    assert cls.kind == kind
    assert kind in KINDS


def test_defense_label_names_its_parameters() -> None:
    assert get_defense("label_smoothing", eps=0.1).label == "label_smoothing(eps=0.1)"
    assert get_defense("none").label == "none"
    # parameters added later show only off their default, so existing labels read the same
    assert get_defense("flip_augment", alpha=0.1).label == "flip_augment(alpha=0.1)"
    assert get_defense("flip_augment", alpha=0.1, resample="once").label == \
        "flip_augment(alpha=0.1, resample=once)"
    assert get_defense("flip_augment", mode="other").label == "flip_augment(alpha=0.1, mode=other)"
    assert get_defense("confidence_penalty").label == "confidence_penalty(beta=1)"
    assert get_defense("confidence_penalty", threshold=0.5).label == \
        "confidence_penalty(beta=1, threshold=0.5)"
    assert get_defense("gce").label == "gce(q=0.7)"
    assert get_defense("sce").label == "sce(alpha=0.1, beta=1, log_zero=-4)"


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("flip_augment", {"alpha": 1.5}, r"alpha=1.5 is not allowed: expected a value in \[0, 1\]"),
        ("flip_augment", {"alpha": -0.1}, r"alpha=-0.1 is not allowed"),
        ("label_smoothing", {"eps": -0.1},
         r"eps=-0.1 is not allowed: expected a value in \[0, 1\]"),
        ("label_smoothing", {"eps": 1.5}, r"eps=1.5 is not allowed"),
        ("confidence_penalty", {"beta": -1}, r"beta=-1 is not allowed"),
        ("confidence_penalty", {"beta": float("inf")}, r"beta=inf is not allowed"),
        ("label_smoothing", {"eps": "0.1"}, r"eps='0.1' is not allowed: expected a number"),
        ("flip_augment", {"mode": "othr"},
         r"mode='othr' is not allowed: expected one of any, other \(did you mean 'other'\?\)"),
        ("flip_augment", {"resample": "epcoh"},
         r"resample='epcoh' is not allowed: expected one of batch, epoch, once "
         r"\(did you mean 'epoch'\?\)"),
        ("flip_augment", {"mode": None}, r"mode=None is not allowed: expected one of any, other"),
        ("confidence_penalty", {"threshold": -0.5},
         r"threshold=-0.5 is not allowed: expected a value in \[0, inf\)"),
        ("confidence_penalty", {"threshold": float("nan")}, r"threshold=nan is not allowed"),
        ("gce", {"q": 0}, r"q=0 is not allowed: expected a value in \(0, 1\]"),
        ("gce", {"q": 0.0}, r"q=0.0 is not allowed: expected a value in \(0, 1\]"),
        ("gce", {"q": 1.5}, r"q=1.5 is not allowed: expected a value in \(0, 1\]"),
        ("gce", {"q": -0.1}, r"q=-0.1 is not allowed"),
        ("gce", {"q": "0.7"}, r"q='0.7' is not allowed: expected a number"),
        ("sce", {"alpha": -0.1}, r"alpha=-0.1 is not allowed: expected a value in \[0, inf\)"),
        ("sce", {"beta": -1.0}, r"beta=-1.0 is not allowed: expected a value in \[0, inf\)"),
        ("sce", {"log_zero": 0.0},
         r"log_zero=0.0 is not allowed: expected a value in \(-inf, 0\)"),
        ("sce", {"alpha": 0, "beta": 0}, r"alpha=0 and beta=0 is not allowed"),
        ("bootstrap", {"beta": 1.5}, r"beta=1.5 is not allowed: expected a value in \[0, 1\]"),
        ("bootstrap", {"beta": -0.2}, r"beta=-0.2 is not allowed"),
        ("bootstrap", {"mode": "hrad"},
         r"mode='hrad' is not allowed: expected one of soft, hard \(did you mean 'hard'\?\)"),
    ],
)
def test_get_defense_rejects_out_of_range_values(
    name: str, params: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        get_defense(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("label_smoothing", {"epsilon": 0.1},
         r"defense 'label_smoothing' got unknown parameter 'epsilon'.*did you mean 'eps'"),
        ("flip_augment", {"alpah": 0.1}, r"unknown parameter 'alpah'.*did you mean 'alpha'"),
        ("none", {"eps": 0.1}, r"defense 'none' got unknown parameter 'eps': expected one of"),
        ("gce", {"k": 0.5}, r"defense 'gce' got unknown parameter 'k': expected one of q"),
        ("sce", {"A": -4}, r"defense 'sce' got unknown parameter 'A'"),
        ("bootstrap", {"betta": 0.9}, r"unknown parameter 'betta'.*did you mean 'beta'"),
        ("confidence_penalty", {"gamma": 1.0}, r"unknown parameter 'gamma'"),
    ],
)
def test_get_defense_rejects_unknown_parameters(
    name: str, params: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        get_defense(name, **params)


def test_get_defense_unknown_name() -> None:
    with pytest.raises(UnknownNameError, match=r"defense='confidence'.*did you mean"):
        get_defense("confidence")


#: Defenses that cannot exist without a setting: a composition needs its members.
REQUIRED = {"compose": {"defenses": ["flip_augment", "label_smoothing"]}}
#: Short names registered for a defense, and the name it records.
ALIASES = {"dpa": "partition_aggregation"}


@pytest.mark.parametrize("name", defenses.names())
def test_every_registered_defense_builds_with_defaults(name: str) -> None:
    d = get_defense(name, **REQUIRED.get(name, {}))
    assert isinstance(d, Defense)
    assert d.name == ALIASES.get(name, name)
    json.dumps(d.to_dict())  # recorded in results as JSON
    assert d.kind in KINDS
