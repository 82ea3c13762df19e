"""Contract tests over the attack registry: what every evasion attack promises.

Parametrised over ``attacks.names()`` (a newly registered attack is covered automatically;
give it cheap settings in ``EXTRA``) and over the ART / foolbox adapter names. For every
attack, norm, targeting and model (``digits_case`` in [0, 1], ``shifted_case`` in [-1, 2]):
x_adv in the eps-ball and the bounds; success flags and summaries agree with the model's
own predictions; reproducible from the seed; model modes, BatchNorm statistics and the
global RNGs left as they were; inputs untouched; eps=0 changes nothing.

A combination an attack refuses with a ConfigError is skipped only if the attack's
docstring says so (e.g. "untargeted only"); an undocumented refusal fails.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab import Attack, AttackResult, ConfigError, EvasionThreat, get_attack
from poisonlab.attacks import attacks
from poisonlab.errors import EvaluationWarning

from .conftest import Case

#: Adapter names tested once ``poisonlab.attacks.adapters`` exists, with their norms.
ADAPTERS: dict[str, tuple[str, ...]] = {
    "art:ProjectedGradientDescent": ("linf", "l2"),
    "art:FastGradientMethod": ("linf", "l2"),
    "foolbox:LinfPGD": ("linf",),
    "foolbox:L2PGD": ("l2",),
}

#: Required or cheap settings per attack name, given the case (transfer needs a surrogate).
EXTRA: dict[str, Callable[[Case], dict[str, Any]]] = {
    "pgd": lambda c: {"steps": 10},
    "noise": lambda c: {"samples": 3},
    "apgd": lambda c: {"steps": 10},
    "apgd-t": lambda c: {"steps": 10, "n_target_classes": 2},
    "fab": lambda c: {"steps": 10},
    "autoattack": lambda c: {"steps": 10, "n_target_classes": 2, "square_queries": 20},
    "transfer": lambda c: {"attack": {"name": "pgd", "steps": 10}, "surrogate": c.surrogate},
    "square": lambda c: {"max_iter": 20},
    "art:ProjectedGradientDescent": lambda c: {"max_iter": 10},
    "foolbox:LinfPGD": lambda c: {"steps": 10},
    "foolbox:L2PGD": lambda c: {"steps": 10},
}

NAMES = attacks.names() + [a for a in ADAPTERS if a not in attacks.names()]
ATTACK_NORMS = [(name, norm) for name in NAMES for norm in ADAPTERS.get(name, ("linf", "l2"))]
IDS = [f"{name}-{norm}" for name, norm in ATTACK_NORMS]
TOL = 1e-5
ADAPTERS_EXIST = importlib.util.find_spec("poisonlab.attacks.adapters") is not None


def _build(name: str, case: Case) -> Attack:
    if name in ADAPTERS and not ADAPTERS_EXIST:
        pytest.skip("poisonlab.attacks.adapters does not exist yet")
    extra = EXTRA.get(name)
    return get_attack(name, **(extra(case) if extra else {}))


def _refusal_documented(attack: Attack, threat: EvasionThreat) -> bool:
    """Whether the attack's docstring announces that it refuses this threat."""
    doc = " ".join((type(attack).__doc__ or "").lower().split())
    if threat.targeted and "untargeted only" in doc:
        return True
    other = "l2" if threat.norm.value == "linf" else "linf"
    return f"{other} only" in doc or f"{other} norm only" in doc


def _run(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
         threat: EvasionThreat, target: torch.Tensor | None, seed: int = 0) -> AttackResult:
    """Call the attack; skip a refused combination only when the refusal is documented."""
    try:
        return attack(model, x, y, threat=threat, seed=seed, target=target)
    except ConfigError as e:
        if _refusal_documented(attack, threat):
            pytest.skip(f"{attack.name} refuses {threat.id} (documented): {e}")
        raise


def _attack_case(name: str, case: Case, norm: str, targeted: bool, *, seed: int = 0,
                 eps: float | None = None) -> AttackResult:
    attack = _build(name, case)
    threat = case.threat(norm, targeted=targeted, eps=eps)
    return _run(attack, case.model, case.x, case.y, threat,
                case.target() if targeted else None, seed)


def _norms(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


@pytest.fixture(params=["digits", "shifted"])
def case(request: pytest.FixtureRequest) -> Case:
    return request.getfixturevalue(f"{request.param}_case")


targeting = pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
attack_norm = pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS, ids=IDS)


# --------------------------------------------------------------------------- geometry


@attack_norm
@targeting
def test_x_adv_stays_in_the_eps_ball_and_the_bounds(
    case: Case, name: str, norm: str, targeted: bool
) -> None:
    res = _attack_case(name, case, norm, targeted)
    lo, hi = case.bounds
    assert float(_norms(case.x, res.x_adv, norm).max()) <= case.eps(norm) + TOL
    assert float(res.x_adv.min()) >= lo
    assert float(res.x_adv.max()) <= hi


@attack_norm
@targeting
def test_eps_zero_returns_x_and_succeeds_only_where_already_wrong(
    case: Case, name: str, norm: str, targeted: bool
) -> None:
    res = _attack_case(name, case, norm, targeted, eps=0.0)
    clean = _predict(case.model, case.x)
    assert torch.equal(res.x_adv, case.x)
    expected = clean == case.target() if targeted else clean != case.y
    assert torch.equal(res.success, expected)


# --------------------------------------------------------------------------- result


@attack_norm
@targeting
def test_success_flags_and_summaries_agree_with_the_model(
    case: Case, name: str, norm: str, targeted: bool
) -> None:
    res = _attack_case(name, case, norm, targeted)
    pred_adv, pred_clean = _predict(case.model, res.x_adv), _predict(case.model, case.x)
    assert torch.equal(res.pred_adv, pred_adv)
    assert torch.equal(res.pred_clean, pred_clean)
    if targeted:
        target = case.target()
        assert torch.equal(res.success, pred_adv == target)
        assert torch.equal(res.target, target)
        eligible, hit = case.y != target, pred_adv == target
    else:
        assert torch.equal(res.success, pred_adv != case.y)
        assert res.target is None
        eligible, hit = pred_clean == case.y, pred_adv != case.y
    assert res.robust_accuracy == pytest.approx(float((pred_adv == case.y).double().mean()),
                                                abs=1e-12)
    expected_asr = float(hit[eligible].double().mean()) if eligible.any() else math.nan
    assert res.attack_success_rate == pytest.approx(expected_asr, abs=1e-12, nan_ok=True)


@attack_norm
@targeting
def test_result_shapes_and_the_inputs_are_left_untouched(
    case: Case, name: str, norm: str, targeted: bool
) -> None:
    attack = _build(name, case)
    threat = case.threat(norm, targeted=targeted)
    x, y = case.x.clone(), case.y.clone()
    target = case.target() if targeted else None
    target_before = None if target is None else target.clone()
    res = _run(attack, case.model, x, y, threat, target, seed=0)
    assert torch.equal(x, case.x) and torch.equal(y, case.y)
    if target is not None:
        assert torch.equal(target, target_before)
    n = x.shape[0]
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.success.shape == (n,) and res.success.dtype == torch.bool
    for v in (res.pred_clean, res.pred_adv, res.y):
        assert v.shape == (n,) and v.dtype == torch.int64
    assert torch.equal(res.y, case.y)
    assert res.threat == threat
    assert res.attack == name
    assert isinstance(res.gradients, int) and res.gradients >= 0
    json.dumps(res.params)  # results carry the settings: JSON-ready


# --------------------------------------------------------------------------- randomness


@attack_norm
@targeting
def test_the_same_seed_gives_the_same_x_adv_and_is_recorded(
    case: Case, name: str, norm: str, targeted: bool
) -> None:
    a = _attack_case(name, case, norm, targeted, seed=7)
    b = _attack_case(name, case, norm, targeted, seed=7)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)
    assert a.seed == 7 and b.seed == 7


def _np_state_equal(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@attack_norm
@targeting
def test_the_global_rngs_are_not_touched(
    digits_case: Case, name: str, norm: str, targeted: bool
) -> None:
    attack = _build(name, digits_case)
    threat = digits_case.threat(norm, targeted=targeted)
    target = digits_case.target() if targeted else None
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    _run(attack, digits_case.model, digits_case.x, digits_case.y, threat, target, seed=3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert _np_state_equal(np.random.get_state(), np_state)
    assert random.getstate() == py_state


# --------------------------------------------------------------------------- model mode


def _bn_dropout_model(n_classes: int) -> nn.Module:
    """A digits-shaped model with BatchNorm and Dropout, seeded, with non-trivial stats."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                              nn.Dropout(0.5), nn.Linear(32, n_classes))
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lin in (model[1], model[5]):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.3)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.1)
        bn = model[2]
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.copy_(torch.randn(32, generator=g) * 0.1)
        bn.running_var.copy_(1.0 + torch.rand(32, generator=g))
        bn.num_batches_tracked.fill_(5)
    return model


@attack_norm
@pytest.mark.parametrize("train_mode", [True, False], ids=["train", "eval"])
def test_model_mode_and_batchnorm_statistics_are_restored(
    digits_case: Case, name: str, norm: str, train_mode: bool
) -> None:
    model = _bn_dropout_model(digits_case.n_classes).train(train_mode)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = _build(name, digits_case)
    # handed in train mode, the model is measured in eval mode, with a warning
    with pytest.warns(EvaluationWarning, match="train mode") if train_mode else nullcontext():
        _run(attack, model, digits_case.x, digits_case.y, digits_case.threat(norm), None)
    assert [m.training for m in model.modules()] == [train_mode] * len(list(model.modules()))
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []  # running_mean/var, num_batches_tracked and weights
    assert all(p.grad is None for p in model.parameters())
