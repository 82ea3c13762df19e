"""Cross-check: our PGD is at least as strong as foolbox's and ART's under matched settings.

Two MLPs trained on digits (defense ``none`` and ``label_smoothing`` eps 0.1, 30 epochs,
seed 0) are attacked with the same eps, steps, absolute step size and random start by our
``PGD``, foolbox's ``LinfPGD`` / ``L2PGD`` and ART's ``ProjectedGradientDescent`` (norm inf
and 2). Our robust accuracy must not exceed theirs by more than one point. Without random
start our PGD must also equal a plain torch loop written out here.

How the settings are matched: steps -> foolbox ``steps``, ART ``max_iter``; step size in
input units -> our ``abs_stepsize``, foolbox ``abs_stepsize``, ART ``eps_step``; random start
on/off -> our and foolbox's ``random_start``, ART ``num_random_init`` 1 / 0; restarts ->
our ``restarts``, ART ``num_random_init``, and for foolbox one call per seed with a sample
counted robust only if it survives every call (the same per-sample best-of-restarts rule).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab import PGD, Dataset, EvasionThreat, build_model, get_attack, get_defense, train
from poisonlab.metrics import accuracy

STEPS = 40
EPS = {"linf": 0.1, "l2": 0.75}  # l2 0.75: robust accuracy ~0.12-0.14, neither 0 nor clean
STEP = {"linf": 0.01, "l2": 0.075}  # absolute, a tenth of eps
FOOLBOX = {"linf": "foolbox:LinfPGD", "l2": "foolbox:L2PGD"}
DEFENSES = {"none": {}, "label_smoothing": {"eps": 0.1}}
TOL = 0.01


@pytest.fixture(scope="module")
def trained(digits: Dataset) -> dict[str, nn.Module]:
    out = {}
    for name, params in DEFENSES.items():
        model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
        out[name] = train(model, digits.x_train, digits.y_train,
                          defense=get_defense(name, **params), epochs=30, seed=0)
    return out


def _threat(digits: Dataset, norm: str) -> EvasionThreat:
    return EvasionThreat(norm=norm, eps=EPS[norm], bounds=digits.bounds)


def _ours(model: nn.Module, digits: Dataset, norm: str, *, random_start: bool,
          restarts: int = 1) -> float:
    attack = PGD(steps=STEPS, abs_stepsize=STEP[norm], random_start=random_start,
                 restarts=restarts)
    return attack(model, digits.x_test, digits.y_test, threat=_threat(digits, norm),
                  seed=0).robust_accuracy


def _art(model: nn.Module, digits: Dataset, norm: str, *, random_start: bool,
         restarts: int = 1) -> float:
    attack = get_attack("art:ProjectedGradientDescent", max_iter=STEPS, eps_step=STEP[norm],
                        num_random_init=restarts if random_start else 0)
    return attack(model, digits.x_test, digits.y_test, threat=_threat(digits, norm),
                  seed=0).robust_accuracy


def _foolbox(model: nn.Module, digits: Dataset, norm: str, *, random_start: bool,
             restarts: int = 1) -> float:
    attack = get_attack(FOOLBOX[norm], steps=STEPS, abs_stepsize=STEP[norm],
                        random_start=random_start)
    robust = torch.ones_like(digits.y_test, dtype=torch.bool)
    for seed in range(restarts):
        res = attack(model, digits.x_test, digits.y_test, threat=_threat(digits, norm),
                     seed=seed)
        robust &= res.pred_adv == digits.y_test
    return float(robust.float().mean())


def _clean(model: nn.Module, digits: Dataset) -> float:
    with torch.no_grad():
        return accuracy(model(digits.x_test).argmax(dim=1), digits.y_test)


# --------------------------------------------------------------------------- plain torch


def _plain_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
               step: float, steps: int, lo: float, hi: float) -> torch.Tensor:
    """PGD without random start in plain torch (Madry et al. 2018): CE gradient, a sign step
    (linf) or an l2-normalised step, projection onto the ball, clamp to the bounds."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="none").sum()
        (g,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            if norm == "linf":
                x_adv = x_adv + step * g.sign()
                delta = (x_adv - x).clamp(-eps, eps)
            else:
                g_norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                x_adv = x_adv + step * g / g_norm
                delta = x_adv - x
                d_norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                delta = delta * torch.where(d_norm > eps, eps / d_norm.clamp_min(1e-12),
                                            torch.ones_like(d_norm))
            x_adv = (x + delta).clamp(lo, hi)
    return x_adv.detach()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("defense", list(DEFENSES))
def test_pgd_without_random_start_equals_a_plain_torch_loop(
    digits: Dataset, trained: dict[str, nn.Module], defense: str, norm: str
) -> None:
    model = trained[defense]
    res = PGD(steps=STEPS, abs_stepsize=STEP[norm], random_start=False)(
        model, digits.x_test, digits.y_test, threat=_threat(digits, norm), seed=0)
    ref = _plain_pgd(model, digits.x_test, digits.y_test, norm=norm, eps=EPS[norm],
                     step=STEP[norm], steps=STEPS, lo=digits.bounds[0], hi=digits.bounds[1])
    torch.testing.assert_close(res.x_adv, ref, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- libraries


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("defense", list(DEFENSES))
def test_pgd_is_as_strong_as_foolbox_and_art_without_random_start(
    digits: Dataset, trained: dict[str, nn.Module], defense: str, norm: str
) -> None:
    model = trained[defense]
    ours = _ours(model, digits, norm, random_start=False)
    fb = _foolbox(model, digits, norm, random_start=False)
    art = _art(model, digits, norm, random_start=False)
    # the budget is informative: robust accuracy neither 0 nor the clean accuracy
    assert 0.05 < ours < _clean(model, digits) - 0.05
    assert ours <= fb + TOL
    assert ours <= art + TOL


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("defense", list(DEFENSES))
def test_pgd_is_as_strong_as_foolbox_and_art_with_random_restarts(
    digits: Dataset, trained: dict[str, nn.Module], defense: str, norm: str
) -> None:
    # One random start is noisy (about a point between seeds); five restarts each make
    # the comparison about strength, not luck.
    model = trained[defense]
    ours = _ours(model, digits, norm, random_start=True, restarts=5)
    fb = _foolbox(model, digits, norm, random_start=True, restarts=5)
    art = _art(model, digits, norm, random_start=True, restarts=5)
    assert ours <= fb + TOL
    assert ours <= art + TOL
