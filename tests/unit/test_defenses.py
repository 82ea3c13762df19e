"""Label-side defenses: smoothing targets and loss, confidence penalty, DisturbLabel."""

from __future__ import annotations

import math

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
from poisonlab.defenses.losses import disturb_labels, entropy, smoothed_targets


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


# --------------------------------------------------------------------------- get_defense


@pytest.mark.parametrize(
    ("name", "params", "cls"),
    [
        ("none", {}, NoDefense),
        ("flip_augment", {"alpha": 0.2}, FlipAugment),
        ("label_smoothing", {"eps": 0.1}, LabelSmoothing),
        ("confidence_penalty", {"beta": 0.5}, ConfidencePenalty),
    ],
)
def test_get_defense_builds_the_registered_class(
    name: str, params: dict[str, float], cls: type[Defense]
) -> None:
    d = get_defense(name, **params)
    assert type(d) is cls
    assert d.name == name
    assert d.params() == params
    assert d.to_dict() == {"name": name, "params": params}


def test_defense_label_names_its_parameters() -> None:
    assert get_defense("label_smoothing", eps=0.1).label == "label_smoothing(eps=0.1)"
    assert get_defense("none").label == "none"


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


def test_every_registered_defense_builds_with_defaults() -> None:
    for name in defenses:
        assert isinstance(get_defense(name), Defense)
