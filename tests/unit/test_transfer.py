"""Transfer attacks: crafted on a surrogate, measured on the target; SurrogateSpec parsing.

With the target itself as the surrogate a transfer attack is the white-box attack: the
inner attack's ``_perturb`` gets the same generator (the template draws nothing before it,
and the surrogate checks only run forward passes), so x_adv is bit-identical.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from poisonlab import (
    FGSM,
    PGD,
    Attack,
    ConfigError,
    DataError,
    Dataset,
    EvasionThreat,
    UnknownNameError,
    build_model,
    get_attack,
    security_curve,
)
from poisonlab.attacks.transfer import SurrogateSpec, Transfer

from .conftest import Case

CASES = [("linf", 0.1), ("l2", 1.0)]


def _rate(mask: torch.Tensor) -> float:
    return float(mask.double().mean())


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(
    "inner",
    [PGD(steps=10), PGD(steps=5, restarts=2, loss="margin"), FGSM(),
     get_attack("noise", samples=3)],
    ids=["pgd", "pgd-margin-restarts", "fgsm", "noise"],
)
@pytest.mark.parametrize(("norm", "eps"), CASES)
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_the_target_as_its_own_surrogate_is_the_white_box_attack(
    digits_case: Case, inner: Attack, norm: str, eps: float, targeted: bool
) -> None:
    c = digits_case
    threat = EvasionThreat(norm=norm, eps=eps, targeted=targeted)
    target = c.target() if targeted else None
    white = inner(c.model, c.x, c.y, threat=threat, seed=11, target=target)
    transfer = Transfer(attack=inner, surrogate=c.model)(c.model, c.x, c.y, threat=threat,
                                                         seed=11, target=target)
    assert torch.equal(transfer.x_adv, white.x_adv)
    assert torch.equal(transfer.success, white.success)
    assert transfer.gradients == white.gradients
    assert transfer.attack == "transfer" and transfer.seed == 11


@pytest.mark.parametrize(("norm", "eps"), CASES)
def test_transfer_from_another_model_is_no_stronger_than_white_box(
    digits: Dataset, digits_mlp: nn.Module, digits_surrogate: nn.Module, norm: str, eps: float
) -> None:
    x, y, threat = digits.x_test, digits.y_test, EvasionThreat(norm=norm, eps=eps)
    inner = PGD(steps=20, rel_stepsize=0.25)
    white = inner(digits_mlp, x, y, threat=threat, seed=0)
    transfer = Transfer(attack=inner, surrogate=digits_surrogate)(digits_mlp, x, y,
                                                                  threat=threat, seed=0)
    assert _rate(transfer.success) <= _rate(white.success)
    # ...but the examples do transfer: far above the clean error
    assert _rate(transfer.success) > _rate(transfer.pred_clean != y) + 0.1
    # success is measured on the target, not on the surrogate
    with torch.no_grad():
        on_target = digits_mlp(transfer.x_adv).argmax(dim=1)
    assert torch.equal(transfer.pred_adv, on_target)
    assert torch.equal(transfer.success, on_target != y)


def test_the_surrogate_gradients_are_counted(digits_case: Case) -> None:
    c = digits_case
    res = Transfer(attack=PGD(steps=7), surrogate=c.surrogate)(
        c.model, c.x, c.y, threat=c.threat("linf"), seed=0)
    assert res.gradients == 7 * len(c.y)


def test_the_surrogate_keeps_its_mode_and_weights(digits: Dataset, digits_case: Case) -> None:
    c = digits_case
    surrogate = build_model("mlp", digits.input_shape, digits.n_classes, seed=3).train()
    before = {k: v.clone() for k, v in surrogate.state_dict().items()}
    Transfer(attack=PGD(steps=3), surrogate=surrogate)(c.model, c.x, c.y,
                                                       threat=c.threat("linf"), seed=0)
    assert all(m.training for m in surrogate.modules())
    assert all(torch.equal(before[k], v) for k, v in surrogate.state_dict().items())
    assert all(p.grad is None for p in surrogate.parameters())


def test_a_transfer_security_curve_never_loses_a_success(digits_case: Case) -> None:
    c = digits_case
    attack = Transfer(attack=PGD(steps=5), surrogate=c.surrogate)
    small, large = security_curve(attack, c.model, c.x, c.y, seed=0,
                                  threats=[EvasionThreat(eps=0.05), EvasionThreat(eps=0.15)])
    assert not bool((small.success & ~large.success).any())
    assert _rate(large.success) > _rate(small.success)


# --------------------------------------------------------------------------- the inner attack


def test_the_inner_attack_may_be_a_name_a_mapping_or_an_attack(digits_case: Case) -> None:
    c = digits_case
    forms: list[Any] = [{"name": "pgd", "steps": 5}, PGD(steps=5)]
    built = [Transfer(attack=f, surrogate=c.surrogate) for f in forms]
    built.append(get_attack("transfer", attack={"name": "pgd", "steps": 5},
                            surrogate=c.surrogate))
    for t in built:
        assert t.attack == PGD(steps=5)
    assert Transfer(attack="fgsm").attack == FGSM()
    assert Transfer().attack == PGD()
    results = [t(c.model, c.x, c.y, threat=c.threat("linf"), seed=2) for t in built]
    for r in results[1:]:
        assert torch.equal(r.x_adv, results[0].x_adv)


@pytest.mark.parametrize(
    ("attack", "pattern"),
    [
        ("transfer", r"attack='transfer' is not allowed: expected a white-box attack"),
        ({"name": "transfer"}, r"attack=\{'name': 'transfer'\} is not allowed: expected a "
                               r"white-box attack"),
        (Transfer(), r"is not allowed: expected a white-box attack"),
        ({"steps": 5}, r"a mapping needs a 'name' key"),
        (5, r"attack=5 is not allowed: expected a white-box attack"),
        ({"name": "pgd", "stepz": 5}, r"unknown parameter 'stepz'.*did you mean 'steps'"),
        ("pgdd", r"attack='pgdd' is not known.*did you mean 'pgd'"),
    ],
    ids=["nested-name", "nested-mapping", "nested-attack", "no-name", "int", "bad-param",
         "unknown"],
)
def test_bad_inner_attacks_are_refused(attack: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        Transfer(attack=attack)


# --------------------------------------------------------------------------- the surrogate


@pytest.mark.parametrize(
    "surrogate",
    [None, SurrogateSpec(), {"model": "logistic", "seed": 3}],
    ids=["default", "spec", "mapping"],
)
def test_calling_with_an_untrained_declaration_raises(digits_case: Case, surrogate: Any) -> None:
    c = digits_case
    attack = Transfer(surrogate=surrogate)
    assert attack.needs_training
    with pytest.raises(ConfigError, match=r"surrogate=SurrogateSpec\(.*\) is not trained: "
                                          r"pass surrogate=<trained nn.Module>"):
        attack(c.model, c.x, c.y, threat=c.threat("linf"), seed=0)


def test_with_surrogate_returns_a_trained_copy(digits_case: Case) -> None:
    declared = Transfer(attack={"name": "pgd", "steps": 3})
    trained = declared.with_surrogate(digits_case.surrogate)
    assert declared.needs_training and not trained.needs_training
    assert trained.surrogate is digits_case.surrogate
    assert trained.attack == declared.attack


def test_a_surrogate_with_other_classes_raises(digits: Dataset, digits_case: Case) -> None:
    c = digits_case
    surrogate = build_model("logistic", digits.input_shape, 3, seed=0)
    with pytest.raises(DataError, match=r"surrogate has 3 outputs: expected 10, the target"):
        Transfer(surrogate=surrogate)(c.model, c.x, c.y, threat=c.threat("linf"), seed=0)


def test_a_surrogate_with_another_input_shape_raises(digits_case: Case) -> None:
    c = digits_case
    surrogate = build_model("logistic", (2,), 10, seed=0)
    with pytest.raises(DataError, match=r"x has input shape \(1, 8, 8\), which the model "
                                        r"cannot take"):
        Transfer(surrogate=surrogate)(c.model, c.x, c.y, threat=c.threat("linf"), seed=0)


def test_params_are_json_serialisable(digits_case: Case) -> None:
    c = digits_case
    declared = Transfer(attack={"name": "pgd", "steps": 5, "loss": "dlr"},
                        surrogate={"model": {"name": "mlp", "hidden": [32, 16]},
                                   "defense": {"name": "label_smoothing", "eps": 0.1},
                                   "seed": 4})
    doc = json.loads(json.dumps(declared.params()))
    assert doc == {
        "attack": "pgd",
        "attack_params": PGD(steps=5, loss="dlr").params(),
        "surrogate": {"model": "mlp", "model_params": {"hidden": [32, 16]},
                      "defense": "label_smoothing", "defense_params": {"eps": 0.1},
                      "seed": 4},
    }
    trained = Transfer(attack=PGD(steps=2), surrogate=c.surrogate)
    assert json.loads(json.dumps(trained.params()))["surrogate"] == "Sequential"
    res = trained(c.model, c.x, c.y, threat=c.threat("l2"), seed=0)
    json.dumps(res.params)


# --------------------------------------------------------------------------- SurrogateSpec


def test_surrogate_spec_defaults_and_parsing() -> None:
    assert SurrogateSpec.from_config(None) == SurrogateSpec()
    spec = SurrogateSpec.from_config({"model": {"name": "mlp", "hidden": [32]},
                                      "defense": {"name": "label_smoothing", "eps": 0.2},
                                      "seed": 5})
    assert (spec.model, spec.model_params) == ("mlp", (("hidden", [32]),))
    assert (spec.defense, spec.defense_params) == ("label_smoothing", (("eps", 0.2),))
    assert spec.seed == 5
    plain = SurrogateSpec.from_config({"model": "logistic", "defense": "none"})
    assert (plain.model, plain.model_params, plain.defense, plain.seed) == (
        "logistic", (), "none", None)


@pytest.mark.parametrize(
    ("config", "error", "pattern"),
    [
        ({"modle": "mlp"}, ConfigError,
         r"surrogate: unknown key 'modle': expected one of model, defense, seed "
         r"\(did you mean 'model'\?\)"),
        ({"sead": 1}, ConfigError, r"unknown key 'sead'.*did you mean 'seed'"),
        ({"model": "mlpp"}, UnknownNameError, r"model='mlpp' is not known.*did you mean 'mlp'"),
        ({"model": {"name": "mlp", "hiden": [8]}}, ConfigError,
         r"unknown parameter 'hiden'.*did you mean 'hidden'"),
        ({"model": 5}, ConfigError, r"surrogate.model=5 is not allowed: expected a name"),
        ({"model": {"hidden": [8]}}, ConfigError, r"surrogate.model=.* is not allowed"),
        ({"defense": "label_smothing"}, UnknownNameError,
         r"defense='label_smothing' is not known.*did you mean 'label_smoothing'"),
        ({"defense": {"name": "label_smoothing", "eps": 2.0}}, ConfigError, r"eps=2.0"),
        ({"seed": -1}, ConfigError, r"surrogate.seed=-1 is not allowed"),
        (5, ConfigError, r"surrogate=5 is not allowed: expected a trained nn.Module or a "
                         r"mapping"),
    ],
    ids=["key", "key-seed", "model-name", "model-param", "model-int", "model-no-name",
         "defense-name", "defense-param", "seed", "not-a-mapping"],
)
def test_surrogate_spec_errors(config: Any, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        SurrogateSpec.from_config(config)
    # the same errors when the attack is built (as a suite builds it)
    with pytest.raises(error, match=pattern):
        get_attack("transfer", surrogate=config)
