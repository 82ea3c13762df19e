"""ART and foolbox adapters: names, the attack contract, seeds, errors, lazy imports, square.

The shared ``digits_mlp`` fixture is read-only; tests that change a model's mode or
gradients build their own.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab import (
    ConfigError,
    Dataset,
    EvasionThreat,
    UnknownNameError,
    build_model,
    get_attack,
    security_curve,
)
from poisonlab.attacks import attacks
from poisonlab.attacks.adapters import THREAT_OWNED, LibraryAttack, seeded_global_rngs
from poisonlab.attacks.adapters.art import ARTAttack, Square
from poisonlab.attacks.adapters.foolbox import FoolboxAttack

N = 120  # a slice of the test set keeps each run well under a second
TOL = 1e-5
EPS = {"linf": 0.1, "l2": 1.0}


def _settings(name: str, norm: str) -> dict[str, Any]:
    """Small, fast settings per attack name (step sizes relative to the norm's eps)."""
    eps = EPS[norm]
    return {
        "art:ProjectedGradientDescent": {"max_iter": 10, "eps_step": eps / 5,
                                         "num_random_init": 1},
        "art:FastGradientMethod": {},
        "foolbox:LinfPGD": {"steps": 10, "rel_stepsize": 0.2},
        "foolbox:L2PGD": {"steps": 10, "rel_stepsize": 0.2},
        "foolbox:FGSM": {},
        "foolbox:FGM": {},
        "square": {"max_iter": 100},
    }[name]


CASES = [
    ("art:ProjectedGradientDescent", "linf"), ("art:ProjectedGradientDescent", "l2"),
    ("art:FastGradientMethod", "linf"), ("art:FastGradientMethod", "l2"),
    ("foolbox:LinfPGD", "linf"), ("foolbox:L2PGD", "l2"),
    ("foolbox:FGSM", "linf"), ("foolbox:FGM", "l2"),
    ("square", "linf"), ("square", "l2"),
]
RANDOM = [c for c in CASES if c[0] in ("art:ProjectedGradientDescent", "foolbox:LinfPGD",
                                       "foolbox:L2PGD", "square")]


def _threat(digits: Dataset, norm: str, **kw: Any) -> EvasionThreat:
    return EvasionThreat(norm=norm, eps=EPS[norm], bounds=digits.bounds, **kw)


def _norms(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def _rngs() -> tuple[Any, ...]:
    return np.random.get_state()[1].copy(), torch.random.get_rng_state(), random.getstate()


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_adapter_runs_and_stays_in_the_eps_ball_and_bounds(
    digits: Dataset, digits_mlp: nn.Module, name: str, norm: str
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    res = get_attack(name, **_settings(name, norm))(
        digits_mlp, x, y, threat=_threat(digits, norm), seed=0)
    assert res.x_adv.shape == x.shape
    assert res.x_adv.dtype == x.dtype
    assert float(_norms(x, res.x_adv, norm).max()) <= EPS[norm] + TOL
    assert float(res.x_adv.min()) >= digits.bounds[0]
    assert float(res.x_adv.max()) <= digits.bounds[1]
    with torch.no_grad():
        fresh = digits_mlp(res.x_adv).argmax(dim=1)
    assert torch.equal(res.pred_adv, fresh)
    assert torch.equal(res.success, fresh != y)
    assert res.attack == name
    assert res.params["library"] == ("art" if name == "square" else name.split(":")[0])
    # every attack here fools some of the correctly classified samples
    assert res.attack_success_rate > 0.1


@pytest.mark.parametrize(("name", "norm"), RANDOM)
def test_same_seed_same_x_adv_and_the_global_rngs_are_untouched(
    digits: Dataset, digits_mlp: nn.Module, name: str, norm: str
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    quick = {"max_iter": 20} if name == "square" else {}
    attack = get_attack(name, **{**_settings(name, norm), **quick})
    threat = _threat(digits, norm)
    np.random.seed(123)
    torch.manual_seed(123)
    random.seed(123)
    before = _rngs()
    a = attack(digits_mlp, x, y, threat=threat, seed=7)
    after = _rngs()
    b = attack(digits_mlp, x, y, threat=threat, seed=7)
    c = attack(digits_mlp, x, y, threat=threat, seed=8)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)
    assert np.array_equal(before[0], after[0])
    assert torch.equal(before[1], after[1])
    assert before[2] == after[2]
    assert a.seed == 7


def test_the_library_seed_is_drawn_from_the_call_generator(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    attack = get_attack("foolbox:LinfPGD", steps=3)
    threat = _threat(digits, "linf")
    gen = torch.Generator().manual_seed(8)
    state = gen.get_state()
    by_generator = attack(digits_mlp, x, y, threat=threat, seed=gen)
    assert not torch.equal(gen.get_state(), state)  # the generator was drawn from
    again = attack(digits_mlp, x, y, threat=threat, seed=torch.Generator().manual_seed(8))
    assert torch.equal(by_generator.x_adv, again.x_adv)  # same generator state, same call
    moved_on = attack(digits_mlp, x, y, threat=threat, seed=gen)
    assert not torch.equal(by_generator.x_adv, moved_on.x_adv)
    assert by_generator.seed == -1


def test_seeded_global_rngs_restores_the_states_after_an_error() -> None:
    before = _rngs()
    with pytest.raises(ZeroDivisionError), seeded_global_rngs(0):
        np.random.rand(), torch.rand(3), random.random()
        _ = 1 / 0
    after = _rngs()
    assert np.array_equal(before[0], after[0])
    assert torch.equal(before[1], after[1])
    assert before[2] == after[2]


@pytest.mark.parametrize("name", ["art:ProjectedGradientDescent", "foolbox:LinfPGD", "square"])
def test_eps_zero_returns_x_unchanged(digits: Dataset, digits_mlp: nn.Module, name: str) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    res = get_attack(name, **_settings(name, "linf"))(
        digits_mlp, x, y, threat=EvasionThreat(eps=0.0, bounds=digits.bounds), seed=0)
    assert torch.equal(res.x_adv, x)
    assert res.gradients == 0


@pytest.mark.parametrize(
    ("name", "settings", "per_sample"),
    [
        ("art:ProjectedGradientDescent", {"max_iter": 5, "num_random_init": 2}, 10),
        ("art:BasicIterativeMethod", {"max_iter": 4}, 4),
        ("art:FastGradientMethod", {}, 1),
        ("foolbox:LinfPGD", {"steps": 7}, 7),
        ("foolbox:FGSM", {}, 1),
        ("square", {"max_iter": 5}, 0),
    ],
)
def test_gradient_count_is_a_best_estimate(
    digits: Dataset, digits_mlp: nn.Module, name: str, settings: dict[str, Any],
    per_sample: int,
) -> None:
    x, y = digits.x_test[:40], digits.y_test[:40]
    res = get_attack(name, **settings)(digits_mlp, x, y, threat=_threat(digits, "linf"), seed=0)
    assert res.gradients == per_sample * 40


def test_params_record_the_effective_settings() -> None:
    art_pgd = get_attack("art:ProjectedGradientDescent", max_iter=7)
    p = art_pgd.params()
    assert (p["library"], p["class"], p["max_iter"]) == ("art", "ProjectedGradientDescent", 7)
    assert (p["batch_size"], p["verbose"]) == (256, False)  # our defaults, not ART's 32/True
    # ART's PGD takes our PGD's defaults: one random start, steps of 0.1 * eps
    assert p["num_random_init"] == 1 and p["rel_stepsize"] == 0.1 and "eps_step" not in p
    bim = get_attack("art:BasicIterativeMethod").params()
    assert (bim["eps_step"], bim["max_iter"]) == (0.1, 100)  # other classes keep ART's
    assert not set(p) & set(THREAT_OWNED)
    assert get_attack("art:ProjectedGradientDescent", batch_size=32).params()["batch_size"] == 32
    fb = get_attack("foolbox:LinfPGD", steps=40, rel_stepsize=0.1).params()
    assert (fb["library"], fb["class"], fb["steps"], fb["rel_stepsize"]) == (
        "foolbox", "LinfPGD", 40, 0.1)
    assert fb["random_start"] is True and isinstance(fb["version"], str)
    # foolbox's PGD takes our step size (its own is 0.033 * eps), other classes keep theirs
    assert get_attack("foolbox:LinfPGD").params()["rel_stepsize"] == 0.1
    assert get_attack("foolbox:LinfBasicIterativeAttack").params()["rel_stepsize"] == 0.2
    sq = get_attack("square", max_iter=50, restarts=2).params()
    assert (sq["class"], sq["max_iter"], sq["restarts"]) == ("SquareAttack", 50, 2)


NEEDS_NUMBA = {"L0BrendelBethgeAttack", "L1BrendelBethgeAttack", "L2BrendelBethgeAttack",
               "LinfinityBrendelBethgeAttack"}
REQUIRED = {"VirtualAdversarialAttack": {"steps": 5}}  # foolbox gives it no default


@pytest.mark.parametrize("cls", [ARTAttack, FoolboxAttack], ids=["art", "foolbox"])
def test_every_library_class_builds_with_json_ready_params(cls: type[LibraryAttack]) -> None:
    has_numba = importlib.util.find_spec("numba") is not None
    names = cls.available()
    assert len(names) > 40
    for name in names:
        if name in NEEDS_NUMBA and not has_numba:
            with pytest.raises(ConfigError, match=r"needs a package that is not installed"):
                cls(name)
            continue
        attack = cls(name, REQUIRED.get(name, {}))
        assert attack.name == f"{cls.library}:{name}"
        json.dumps(attack.params())


def test_direct_construction_equals_the_registry(digits: Dataset, digits_mlp: nn.Module) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    threat = _threat(digits, "l2")
    a = ARTAttack("ProjectedGradientDescent", {"max_iter": 5, "eps_step": 0.2})
    b = get_attack("art:ProjectedGradientDescent", max_iter=5, eps_step=0.2)
    assert a == b
    assert torch.equal(a(digits_mlp, x, y, threat=threat).x_adv,
                       b(digits_mlp, x, y, threat=threat).x_adv)
    assert FoolboxAttack("L2PGD", {"steps": 3}) == get_attack("foolbox:L2PGD", steps=3)


def test_adapters_work_inside_a_security_curve(digits: Dataset, digits_mlp: nn.Module) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    threats = [EvasionThreat(eps=e, bounds=digits.bounds) for e in (0.05, 0.1, 0.2)]
    curve = security_curve(get_attack("foolbox:LinfPGD", steps=10), digits_mlp, x, y,
                           threats=threats, seed=0)
    rates = [r.attack_success_rate for r in curve]
    assert rates == sorted(rates)
    for res in curve:
        assert float(_norms(x, res.x_adv, "linf").max()) <= res.threat.eps + TOL


# --------------------------------------------------------------------------- targeted


@pytest.mark.parametrize(
    ("name", "settings"),
    [("art:ProjectedGradientDescent", {"max_iter": 20, "eps_step": 0.02}),
     ("foolbox:LinfPGD", {"steps": 20, "rel_stepsize": 0.1})],
)
def test_targeted_threats_aim_at_the_target(
    digits: Dataset, digits_mlp: nn.Module, name: str, settings: dict[str, Any]
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    threat = EvasionThreat(eps=0.2, bounds=digits.bounds, targeted=True)
    res = get_attack(name, **settings)(digits_mlp, x, y, threat=threat, seed=0, target=4)
    assert torch.equal(res.success, res.pred_adv == 4)
    assert res.attack_success_rate > 0.5
    untargeted = get_attack(name, **settings)(
        digits_mlp, x, y, threat=EvasionThreat(eps=0.2, bounds=digits.bounds), seed=0)
    # an untargeted run lands on 4 far less often
    assert float((untargeted.pred_adv == 4).float().mean()) < float(
        (res.pred_adv == 4).float().mean()) - 0.3


# --------------------------------------------------------------------------- model state


class _ModeSpy(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return self.inner(x)


ADAPTERS = ["art:ProjectedGradientDescent", "foolbox:LinfPGD", "square"]


@pytest.mark.parametrize("name", ADAPTERS)
def test_model_mode_weights_and_gradients_are_restored(digits: Dataset, name: str) -> None:
    inner = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
    model = _ModeSpy(inner).train()
    inner[1].eval()  # a frozen submodule inside a model in train mode
    modes = {n: m.training for n, m in model.named_modules()}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    params[0].grad = torch.ones_like(params[0])  # e.g. a gradient accumulated mid-training
    params[-1].requires_grad_(False)
    get_attack(name, **_settings(name, "linf"))(
        model, digits.x_test[:30], digits.y_test[:30], threat=_threat(digits, "linf"), seed=0)
    assert model.seen and not any(model.seen)  # every forward ran in eval mode
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(params[0].grad, torch.ones_like(params[0]))
    assert all(p.grad is None for p in params[1:])
    assert [p.requires_grad for p in params] == [True] * (len(params) - 1) + [False]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "error", "pattern"),
    [
        (lambda: get_attack("art:ProjectedGradientDecent"), UnknownNameError,
         r"attack='art:ProjectedGradientDecent' is not known.*"
         r"did you mean 'art:ProjectedGradientDescent'"),
        (lambda: get_attack("foolbox:LinfPDG"), UnknownNameError,
         r"did you mean 'foolbox:LinfPGD'"),
        (lambda: get_attack("artt:ProjectedGradientDescent"), UnknownNameError,
         r"did you mean 'art:ProjectedGradientDescent'"),
        (lambda: ARTAttack("ProjectedGradientDecent"), UnknownNameError,
         r"attack='art:ProjectedGradientDecent' is not known.*did you mean"),
        (lambda: get_attack("art:ProjectedGradientDescent", max_iters=3), ConfigError,
         r"art:ProjectedGradientDescent got unknown parameter 'max_iters'.*"
         r"did you mean 'max_iter'"),
        (lambda: get_attack("foolbox:LinfPGD", step=3), ConfigError,
         r"foolbox:LinfPGD got unknown parameter 'step'.*did you mean 'steps'"),
        (lambda: get_attack("art:SquareAttack", restarts=3), ConfigError,
         r"unknown parameter 'restarts'.*nb_restarts"),
        (lambda: get_attack("art:ProjectedGradientDescent", eps=0.3), ConfigError,
         r"parameter 'eps' is not allowed: it comes from the threat: EvasionThreat\(eps="),
        (lambda: get_attack("art:ProjectedGradientDescent", norm=2), ConfigError,
         r"parameter 'norm' is not allowed: it comes from the threat"),
        (lambda: get_attack("art:ProjectedGradientDescent", targeted=True), ConfigError,
         r"parameter 'targeted' is not allowed: it comes from the threat.*target="),
        (lambda: get_attack("art:ProjectedGradientDescent", estimator=None), ConfigError,
         r"parameter 'estimator' is not allowed: it comes from the call"),
        (lambda: get_attack("foolbox:LinfPGD", epsilons=0.3), ConfigError,
         r"foolbox:LinfPGD parameter 'epsilons' is not allowed: it comes from the threat"),
        (lambda: get_attack("foolbox:LinfPGD", bounds=(0, 1)), ConfigError,
         r"parameter 'bounds' is not allowed: it comes from the threat.*bounds="),
        (lambda: get_attack("foolbox:GaussianBlurAttack", distance="l2"), ConfigError,
         r"parameter 'distance' is not allowed: it comes from the threat.*norm="),
        (lambda: ARTAttack("ProjectedGradientDescent", [("max_iter", 3)]), ConfigError,
         r"settings=.* is not allowed: expected a mapping"),
        (lambda: Square(p_init=1.0), ConfigError, r"p_init=1.0 is not allowed"),
        (lambda: Square(max_iter=0), ConfigError, r"max_iter=0 is not allowed"),
        (lambda: get_attack("square", restart=2), ConfigError,
         r"unknown parameter 'restart'.*did you mean 'restarts'"),
    ],
)
def test_bad_names_and_settings_raise(make, error: type[Exception], pattern: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize(
    ("name", "settings", "threat", "pattern"),
    [
        ("foolbox:L2PGD", {}, {"norm": "linf", "eps": 0.1},
         r"not allowed for foolbox:L2PGD: the class attacks in the l2 norm, the threat in "
         r"linf \(did you mean 'foolbox:LinfPGD'\?\)"),
        ("foolbox:LinfPGD", {}, {"norm": "l2", "eps": 1.0},
         r"attacks in the linf norm.*did you mean 'foolbox:L2PGD'"),
        ("foolbox:L1PGD", {}, {"norm": "l2", "eps": 1.0}, r"attacks in the l1 norm"),
        ("art:BasicIterativeMethod", {}, {"norm": "l2", "eps": 1.0},
         r"art:BasicIterativeMethod: the class attacks in the linf norm only.*"
         r"did you mean 'art:ProjectedGradientDescent'"),
        ("art:CarliniL2Method", {}, {"norm": "linf", "eps": 0.1},
         r"l2 norm only.*did you mean 'art:CarliniLInfMethod'"),
        ("art:SquareAttack", {}, {"eps": 0.1, "targeted": True},
         r"art:SquareAttack: the class has no targeted mode"),
        ("art:DeepFool", {}, {"norm": "l2", "eps": 1.0, "targeted": True},
         r"art:DeepFool: the class has no targeted mode"),
        ("foolbox:FGSM", {}, {"eps": 0.1, "targeted": True},
         r"foolbox:FGSM: the class has no targeted mode"),
        ("foolbox:L2DeepFoolAttack", {}, {"norm": "l2", "eps": 1.0, "targeted": True},
         r"foolbox:L2DeepFoolAttack: the class has no targeted mode"),
        ("square", {}, {"eps": 0.1, "targeted": True},
         r"not allowed for square: ART's SquareAttack is untargeted only"),
        ("square", {"p_init": 0.99}, {"eps": 0.1},
         r"p_init=0.99 is not allowed for 8x8 images.*must be smaller than the image"),
        ("art:ProjectedGradientDescent", {"max_iter": -1}, {"eps": 0.1},
         r"art:ProjectedGradientDescent refused its settings under linf eps=0.1: .*max_iter"),
    ],
)
def test_threats_an_attack_cannot_honour_raise(
    digits: Dataset, digits_mlp: nn.Module, name: str, settings: dict[str, Any],
    threat: dict[str, Any], pattern: str,
) -> None:
    x, y = digits.x_test[:8], digits.y_test[:8]
    target = 4 if threat.get("targeted") else None
    with pytest.raises(ConfigError, match=pattern):
        get_attack(name, **settings)(digits_mlp, x, y, threat=EvasionThreat(**threat), seed=0,
                                     target=target)


def test_square_needs_image_batches(digits: Dataset) -> None:
    model = nn.Sequential(nn.Linear(64, 10))
    x = digits.x_test[:8].flatten(1)
    with pytest.raises(ConfigError, match=r"x has shape \(8, 64\): art:SquareAttack expected "
                                          r"image batches"):
        Square(max_iter=5)(model, x, digits.y_test[:8], threat=EvasionThreat(eps=0.1))


# --------------------------------------------------------------------------- square


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_beats_random_noise(digits: Dataset, digits_mlp: nn.Module, norm: str) -> None:
    x, y = digits.x_test, digits.y_test
    eps = EPS[norm]
    res = get_attack("square", max_iter=200)(digits_mlp, x, y, threat=_threat(digits, norm),
                                             seed=0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    if norm == "linf":
        noise = eps * noise.sign()
    else:
        noise = eps * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    with torch.no_grad():
        noisy = digits_mlp((x + noise).clamp(*digits.bounds)).argmax(dim=1)
    noise_rate = float((noisy != y).float().mean())
    square_rate = float(res.success.float().mean())
    assert square_rate > noise_rate + 0.2
    assert res.gradients == 0


# --------------------------------------------------------------------------- registry, imports


def test_namespaces_are_listed_but_not_among_the_plain_names() -> None:
    assert "art:<Attack>" in attacks.namespaces()
    assert "foolbox:<Attack>" in attacks.namespaces()
    assert not any(":" in n for n in attacks.names())
    assert "square" in attacks.names()
    assert "art:ProjectedGradientDescent" in attacks
    assert "art:ProjectedGradientDecent" not in attacks
    assert attacks.help("foolbox:L2PGD") == "L2 Projected Gradient Descent"
    assert "Andriushchenko" in attacks.help("square")


def test_cli_list_shows_the_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    from poisonlab.cli import main

    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert "art:<Attack>" in out and "any ART evasion attack" in out
    assert "foolbox:<Attack>" in out and "square" in out


def test_importing_poisonlab_does_not_import_art_or_foolbox() -> None:
    code = (
        "import sys, poisonlab, poisonlab.attacks, poisonlab.attacks.adapters\n"
        "from poisonlab import get_attack\n"
        "from poisonlab.attacks import attacks\n"
        "attacks.names(); attacks.namespaces(); get_attack('pgd')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('art', 'foolbox'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_art_takes_our_setting_names_and_means_the_same(
        digits: Dataset, digits_mlp: nn.Module) -> None:
    ours = get_attack("art:ProjectedGradientDescent", steps=10, rel_stepsize=0.25,
                      random_start=False)
    assert ours.settings == {"max_iter": 10, "num_random_init": 0, "rel_stepsize": 0.25}
    theirs = get_attack("art:ProjectedGradientDescent", max_iter=10, num_random_init=0,
                        eps_step=0.25 * EPS["linf"])
    x, y = digits.x_test[:N], digits.y_test[:N]
    threat = _threat(digits, "linf")
    a = ours(digits_mlp, x, y, threat=threat, seed=0)
    b = theirs(digits_mlp, x, y, threat=threat, seed=0)
    assert torch.equal(a.x_adv, b.x_adv)  # no random start: the same deterministic PGD
    assert a.params["rel_stepsize"] == 0.25 and a.params["max_iter"] == 10
    assert get_attack("art:AutoProjectedGradientDescent", random_start=False).settings == {
        "nb_random_init": 0}


@pytest.mark.parametrize(("settings", "pattern"), [
    ({"steps": 5, "max_iter": 5}, r"both steps and max_iter"),
    ({"rel_stepsize": 0.1, "eps_step": 0.01}, r"both rel_stepsize and eps_step"),
    ({"random_start": "yes"}, r"random_start='yes' is not allowed: expected true or false"),
    ({"rel_stepsize": 0}, r"rel_stepsize=0 is not allowed"),
])
def test_art_our_names_are_checked(settings: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        get_attack("art:ProjectedGradientDescent", **settings)


def test_art_leaves_the_callers_settings_alone() -> None:
    settings = {"rel_stepsize": 0.1, "steps": 5}
    ARTAttack("ProjectedGradientDescent", settings)
    with pytest.raises(UnknownNameError):
        ARTAttack("ProjectedGradientDecent", settings)
    assert settings == {"rel_stepsize": 0.1, "steps": 5}


def test_art_rel_stepsize_on_a_class_without_eps_step_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"art:SquareAttack .*'rel_stepsize'"):
        get_attack("art:SquareAttack", rel_stepsize=0.1)


class _Explodes(nn.Module):
    """Classifies normally (and passes the one-sample probe of the attack template) until
    the library asks for a gradient over a batch, then fails."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and x.shape[0] > 1:
            raise RuntimeError("kernel exploded\nsecond line of a long library message")
        return self.inner(x)


@pytest.mark.parametrize("name", ["art:ProjectedGradientDescent", "foolbox:LinfPGD"])
def test_a_library_failure_is_one_attack_error(digits: Dataset, name: str) -> None:
    from poisonlab import AttackError, PoisonlabError

    model = _Explodes(build_model("mlp", digits.input_shape, digits.n_classes, seed=0)).eval()
    x, y = digits.x_test[:8], digits.y_test[:8]
    with pytest.raises(AttackError) as e:
        get_attack(name, steps=2)(model, x, y, threat=_threat(digits, "linf"), seed=0)
    text = str(e.value)
    assert isinstance(e.value, PoisonlabError) and "\n" not in text
    assert text.startswith(f"{name} failed under linf eps=0.1: RuntimeError: kernel exploded")
    assert isinstance(e.value.__cause__, RuntimeError)


def test_art_decision_attacks_get_inputs_in_the_model_dtype(
        digits: Dataset, digits_mlp: nn.Module) -> None:
    # HopSkipJump hands the classifier float64 arrays; a float32 model refused them.
    res = get_attack("art:HopSkipJump", max_iter=2, max_eval=20, init_eval=5)(
        digits_mlp, digits.x_test[:6], digits.y_test[:6], threat=_threat(digits, "linf"),
        seed=0)
    assert res.x_adv.dtype == digits.x_test.dtype and res.success.shape == (6,)


@pytest.mark.parametrize("name", ["foolbox:LinfPGD", "art:ProjectedGradientDescent"])
def test_a_library_pgd_with_our_settings_is_our_pgd(digits: Dataset, digits_mlp: nn.Module,
                                                    name: str) -> None:
    # Same steps, step size and random start by the same names: the same attack, up to
    # the random start's draws (within 1 point of robust accuracy on the digits test set).
    settings = {"steps": 20, "rel_stepsize": 0.1, "random_start": True}
    threat = _threat(digits, "linf")
    ours = get_attack("pgd", **settings)(digits_mlp, digits.x_test, digits.y_test,
                                         threat=threat, seed=0)
    theirs = get_attack(name, **settings)(digits_mlp, digits.x_test, digits.y_test,
                                          threat=threat, seed=0)
    assert 0.2 < ours.robust_accuracy < 0.9  # a budget where the step size matters
    assert abs(ours.robust_accuracy - theirs.robust_accuracy) <= 0.01
    # with foolbox's own step size the same 20 steps are a different attack
    if name.startswith("foolbox"):
        own = get_attack(name, steps=20, rel_stepsize=0.01 / 0.3)(
            digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
        assert own.robust_accuracy - ours.robust_accuracy > 0.01
