"""Temperature scaling, distillation and composition of defenses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab import ConfigError, Dataset, build_model, get_defense, train
from poisonlab.defenses.base import Defense
from poisonlab.defenses.compose import Compose
from poisonlab.defenses.distillation import Distillation, distillation_loss
from poisonlab.defenses.posthoc import TemperatureScaled, TemperatureScaling, fit_temperature
from poisonlab.metrics import nll, predict_proba


@pytest.fixture(scope="module")
def overconfident(digits: Dataset) -> nn.Module:
    """An MLP trained long enough on few points to be over-confident on the rest."""
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=1)
    return train(model, digits.x_train[:300], digits.y_train[:300], epochs=60, seed=1)


# --------------------------------------------------------------------------- temperature


def test_temperature_scaling_keeps_every_argmax_and_never_raises_validation_nll(
    digits: Dataset, overconfident: nn.Module
) -> None:
    scaled = TemperatureScaling().post_hoc(overconfident, digits.x_val, digits.y_val)
    assert isinstance(scaled, TemperatureScaled)
    for x in (digits.x_val, digits.x_test, torch.rand(200, *digits.input_shape)):
        with torch.no_grad():
            assert torch.equal(scaled(x).argmax(1), overconfident(x).argmax(1))
    before = nll(predict_proba(overconfident, digits.x_val), digits.y_val)
    after = nll(predict_proba(scaled, digits.x_val), digits.y_val)
    assert after <= before
    assert float(scaled.temperature) > 1.0  # over-confident: it softens
    assert after < before - 0.01  # and the fit is worth something


def test_fitted_temperature_is_the_nll_minimiser(digits: Dataset,
                                                 overconfident: nn.Module) -> None:
    with torch.no_grad():
        z = overconfident(digits.x_val).double()
    t = fit_temperature(z, digits.y_val)
    grid = torch.exp(torch.linspace(-3, 3, 601, dtype=torch.float64))
    losses = torch.stack([F.cross_entropy(z / g, digits.y_val) for g in grid])
    best = float(grid[losses.argmin()])
    assert abs(t - best) / best < 0.02
    assert float(F.cross_entropy(z / t, digits.y_val)) <= float(losses.min()) + 1e-9


def test_temperature_one_is_kept_when_scaling_cannot_help() -> None:
    # A perfectly calibrated-looking set where every temperature but 1 is worse would be
    # contrived; instead: if the unscaled NLL is already minimal the answer is exactly 1.
    z = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert fit_temperature(z, torch.tensor([0, 1])) == 1.0


def test_train_returns_the_scaled_model_and_needs_the_validation_split(
    digits: Dataset,
) -> None:
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    with pytest.raises(ConfigError, match=r"x_val=None is not allowed.*validation split"):
        train(model, digits.x_train, digits.y_train, defense=TemperatureScaling(), epochs=1)
    out = train(model, digits.x_train, digits.y_train, defense=TemperatureScaling(), epochs=2,
                seed=0, x_val=digits.x_val, y_val=digits.y_val)
    assert isinstance(out, TemperatureScaled) and out.model is model
    assert not out.training


def test_temperature_scaling_validates_its_interval() -> None:
    with pytest.raises(ConfigError, match="t_min=0"):
        TemperatureScaling(t_min=0)
    with pytest.raises(ConfigError, match=r"t_max=0.01"):
        TemperatureScaling(t_min=0.05, t_max=0.01)


# --------------------------------------------------------------------------- distillation


def test_distillation_loss_is_t_squared_soft_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    expected = -(F.softmax(t / 3, 1) * F.log_softmax(s / 3, 1)).sum(1).mean() * 9
    torch.testing.assert_close(distillation_loss(s, t, 3.0), expected)


def test_a_student_learns_its_teacher(digits: Dataset, digits_mlp: nn.Module) -> None:
    student = build_model("mlp", digits.input_shape, digits.n_classes, seed=5)
    # Random labels: everything the student knows comes from the teacher (alpha = 1).
    noise = torch.randint(0, digits.n_classes, digits.y_train.shape,
                          generator=torch.Generator().manual_seed(0))
    train(student, digits.x_train, noise, defense=Distillation(T=2.0, teacher=digits_mlp),
          epochs=15, seed=0)
    with torch.no_grad():
        agree = (student(digits.x_test).argmax(1) == digits_mlp(digits.x_test).argmax(1))
    assert float(agree.double().mean()) > 0.85


def test_distillation_needs_a_trained_teacher_and_valid_settings(digits: Dataset) -> None:
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    declared = get_defense("distillation", teacher={"defense": "label_smoothing"})
    assert isinstance(declared, Distillation) and declared.needs_teacher
    with pytest.raises(ConfigError, match=r"teacher=.*not trained"):
        train(model, digits.x_train, digits.y_train, defense=declared, epochs=1)
    with pytest.raises(ConfigError, match="T=0"):
        Distillation(T=0)
    with pytest.raises(ConfigError, match=r"alpha=1.5"):
        Distillation(alpha=1.5)
    with pytest.raises(ConfigError, match="teacher: unknown key 'defence'"):
        Distillation(teacher={"defence": "none"})


# --------------------------------------------------------------------------- compose


def test_compose_runs_each_kind_once_in_order(digits: Dataset) -> None:
    both = Compose(defenses=["flip_augment", {"name": "label_smoothing", "eps": 0.2},
                             "temperature_scaling"])
    assert [m.name for m in both.members()] == ["flip_augment", "label_smoothing",
                                                "temperature_scaling"]
    assert both.label == "flip_augment(alpha=0.1) + label_smoothing(eps=0.2) + " \
        "temperature_scaling(t_min=0.05, t_max=20)"
    logits, y = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    torch.testing.assert_close(both.loss(logits, y, n_classes=10),
                               get_defense("label_smoothing", eps=0.2).loss(logits, y,
                                                                            n_classes=10))
    assert both.needs_validation
    # the composed label transform is flip_augment's, drawing the same randomness
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    y_big = torch.zeros(1000, dtype=torch.long)
    assert torch.equal(both.transform_labels(y_big, n_classes=10, generator=g1),
                       get_defense("flip_augment").transform_labels(y_big, n_classes=10,
                                                                    generator=g2))


def test_compose_of_one_defense_trains_exactly_like_it(digits: Dataset) -> None:
    weights = []
    for d in (get_defense("label_smoothing", eps=0.1),
              Compose(defenses=[{"name": "label_smoothing", "eps": 0.1}])):
        m = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
        train(m, digits.x_train, digits.y_train, defense=d, epochs=3, seed=0)
        weights.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_compose_refuses_two_of_a_single_kind_and_bad_entries() -> None:
    with pytest.raises(ConfigError, match="at most one loss defense"):
        Compose(defenses=["label_smoothing", "confidence_penalty"])
    with pytest.raises(ConfigError, match="at most one posthoc defense"):
        Compose(defenses=["temperature_scaling", "temperature_scaling"])
    with pytest.raises(ConfigError, match="non-empty list"):
        Compose(defenses=[])
    with pytest.raises(ConfigError, match=r"defenses\[1\]=3 is not allowed"):
        Compose(defenses=["none", 3])
    nested = Compose(defenses=[Compose(defenses=["flip_augment"]), "label_smoothing", "none"])
    assert [m.name for m in nested.members()] == ["flip_augment", "label_smoothing"]


def test_every_hook_of_the_base_is_the_identity_or_cross_entropy() -> None:
    d = Defense()
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 2, 1])
    g = torch.Generator().manual_seed(0)
    assert d.prepare(x, y, n_classes=3, generator=g) == (x, y)
    assert d.epoch_labels(y, n_classes=3, generator=g) is y
    assert d.transform_labels(y, n_classes=3, generator=g) is y
    model = nn.Linear(3, 3)
    assert d.post_hoc(model, x, y) is model
    torch.testing.assert_close(
        d.objective(model, x, y, n_classes=3, generator=g, bounds=(0.0, 1.0),
                    loss_fn=lambda z, t: F.cross_entropy(z, t)),
        F.cross_entropy(model(x), y))
