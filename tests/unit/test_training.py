"""The training loop: determinism, RNG hygiene, accuracy, input checks, NaN handling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from poisonlab import (
    ConfigError,
    DataError,
    Dataset,
    Defense,
    TrainingError,
    build_model,
    get_defense,
    train,
)
from poisonlab.metrics import accuracy


def _small(ds: Dataset, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    return ds.x_train[:n], ds.y_train[:n]


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@dataclasses.dataclass(frozen=True)
class NaNLoss(Defense):
    """Cross-entropy made NaN: every batch's loss is not finite."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
        return F.cross_entropy(logits, y) * float("nan")


@pytest.mark.parametrize("defense", ["none", "flip_augment", "label_smoothing"])
def test_two_runs_with_the_same_seed_give_identical_weights(digits: Dataset, defense: str) -> None:
    x, y = _small(digits)
    states = []
    for _ in range(2):
        model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0, hidden=(32,))
        train(model, x, y, defense=get_defense(defense), epochs=3, seed=4)
        states.append(model.state_dict())
    assert _states_equal(*states)


def test_different_training_seeds_give_different_weights(digits: Dataset) -> None:
    x, y = _small(digits)
    states = []
    for seed in (0, 1):
        model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0, hidden=(32,))
        train(model, x, y, epochs=2, seed=seed)
        states.append(model.state_dict())
    assert not _states_equal(*states)


@pytest.mark.parametrize("defense", ["none", "flip_augment"])
def test_train_does_not_touch_the_global_rng(digits: Dataset, defense: str) -> None:
    x, y = _small(digits)
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0, hidden=(32,))
    state = torch.random.get_rng_state()
    train(model, x, y, defense=get_defense(defense, alpha=0.5) if defense != "none" else None,
          epochs=2, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())


def test_training_changes_the_weights_and_returns_the_same_model_in_eval(digits: Dataset) -> None:
    x, y = _small(digits)
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train(model, x, y, epochs=1, seed=0)
    assert out is model
    assert not model.training
    assert not _states_equal(before, model.state_dict())


def test_training_does_not_modify_the_data(digits: Dataset) -> None:
    x, y = _small(digits)
    x0, y0 = x.clone(), y.clone()
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    train(model, x, y, defense=get_defense("flip_augment", alpha=0.5), epochs=1, seed=0)
    assert torch.equal(x, x0)
    assert torch.equal(y, y0)


def test_mlp_reaches_high_test_accuracy_on_digits(
    digits: Dataset, digits_mlp: torch.nn.Module
) -> None:
    with torch.no_grad():
        pred = digits_mlp(digits.x_test).argmax(dim=1)
    assert accuracy(pred, digits.y_test) > 0.9


def test_numpy_inputs_are_accepted(digits: Dataset) -> None:
    x, y = _small(digits, 100)
    a = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    b = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    train(a, x, y, epochs=1, seed=0)
    train(b, x.numpy(), y.numpy(), epochs=1, seed=0)
    assert _states_equal(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("bad_label", [10, 12, -1])
def test_labels_outside_the_model_width_raise(digits: Dataset, bad_label: int) -> None:
    x, y = _small(digits, 50)
    y = y.clone()
    y[7] = bad_label
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    with pytest.raises(DataError, match=r"y has labels in .*expected class ids in \[0, 9\]"):
        train(model, x, y, epochs=1)


def test_nan_in_inputs_raises(digits: Dataset) -> None:
    x, y = _small(digits, 50)
    x = x.clone()
    x[3, 0, 2, 2] = float("nan")
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    with pytest.raises(DataError, match=r"x contains 1 NaN or Inf"):
        train(model, x, y, epochs=1)


def test_float_labels_raise(digits: Dataset) -> None:
    x, y = _small(digits, 50)
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    with pytest.raises(DataError, match=r"y has dtype torch.float32"):
        train(model, x, y.float(), epochs=1)


def test_empty_training_set_raises_data_error(digits: Dataset) -> None:
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    x = torch.empty((0, *digits.input_shape))
    y = torch.empty(0, dtype=torch.int64)
    with pytest.raises(DataError, match=r"expected"):
        train(model, x, y, epochs=1)


def test_inputs_of_the_wrong_shape_for_the_model_raise_data_error(digits: Dataset) -> None:
    # design section 6: a shape mismatch is bad input and gets a one-line PoisonlabError,
    # not a raw torch RuntimeError from inside the forward pass
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
    x = torch.rand(20, 3, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(20, dtype=torch.int64)
    with pytest.raises(DataError, match=r"shape"):
        train(model, x, y, epochs=1)


def test_a_model_without_2d_logits_raises(digits: Dataset) -> None:
    x, y = _small(digits, 50)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1), torch.nn.Flatten(0))
    with pytest.raises(DataError, match=r"model output has shape \(1,\): expected \(n, n_cl"):
        train(model, x, y, epochs=1)


# float(loss) on a tensor that requires grad warns inside the library's error message
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_nan_loss_raises_training_error_and_applies_no_step(digits: Dataset) -> None:
    x, y = _small(digits, 50)
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingError, match=r"training loss became nan at epoch 1, batch 1"):
        train(model, x, y, defense=NaNLoss(), epochs=2, seed=0)
    assert _states_equal(before, model.state_dict())
    assert not model.training


def test_huge_inputs_overflowing_the_loss_raise_training_error(digits: Dataset) -> None:
    x, y = _small(digits, 50)
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    with pytest.raises(TrainingError, match=r"training loss became (nan|inf)"):
        train(model, x * 3e38, y, epochs=1, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"epochs": 0}, r"epochs=0 is not allowed"),
        ({"batch_size": 0}, r"batch_size=0 is not allowed"),
        ({"lr": 0.0}, r"lr=0.0 is not allowed"),
        ({"lr": float("nan")}, r"lr=nan is not allowed"),
        ({"weight_decay": -1.0}, r"weight_decay=-1.0 is not allowed"),
        ({"seed": -3}, r"seed=-3 is not allowed"),
        ({"defense": "label_smoothing"}, r"defense='label_smoothing' is not allowed"),
    ],
)
def test_bad_settings_raise(digits: Dataset, kwargs: dict[str, object], pattern: str) -> None:
    x, y = _small(digits, 50)
    model = build_model("logistic", digits.input_shape, digits.n_classes, seed=0)
    with pytest.raises(ConfigError, match=pattern):
        train(model, x, y, **kwargs)  # type: ignore[arg-type]
