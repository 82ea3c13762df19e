"""Adversarial training: FGSM training, PGD training (Madry et al.) and TRADES.

Robustness gains on digits, reductions to plain training (alpha=1, beta=0), the objectives
as formulas on one batch, the budget of the crafted examples, randomness drawn only from
the training generator, the model's mode while crafting and while computing the loss, and
parameter validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab import (
    PGD,
    ConfigError,
    Dataset,
    EvasionThreat,
    build_model,
    get_defense,
    train,
)
from poisonlab.attacks.evasion import fgsm
from poisonlab.defenses.adversarial import (
    TRADES,
    AdversarialTraining,
    FGSMTraining,
    PGDTraining,
    kl_divergence,
    trades_examples,
)
from poisonlab.models import eval_mode
from poisonlab.threat import Norm

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

EPS = 0.1
ROBUST_EPOCHS = 30
ATTACK_STEPS = 20


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp(ds: Dataset, *, seed: int = 0, hidden: tuple[int, ...] = (128, 128)) -> nn.Module:
    return build_model("mlp", ds.input_shape, ds.n_classes, seed=seed, hidden=hidden)


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _small(ds: Dataset, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    return ds.x_train[:n], ds.y_train[:n]


def _objective(
    defense: AdversarialTraining,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    loss_fn: LossFn = F.cross_entropy,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    return defense.objective(model, x, y, n_classes=10, generator=_gen(seed), loss_fn=loss_fn,
                             bounds=bounds)


# --------------------------------------------------------------------------- robustness


@dataclass(frozen=True)
class Scores:
    clean: float
    pgd_ce: float
    pgd_margin: float


@pytest.fixture(scope="module")
def scores(digits: Dataset) -> dict[str, Scores]:
    """Clean and PGD robust accuracy (linf 0.1, 20 steps) of MLPs trained 30 epochs each."""
    threat = EvasionThreat(norm="linf", eps=EPS, bounds=digits.bounds)
    out = {}
    for name in ("none", "fgsm_at", "pgd_at", "trades"):
        defense = get_defense(name) if name == "none" else get_defense(name, eps=EPS)
        model = train(_mlp(digits), digits.x_train, digits.y_train, defense=defense,
                      epochs=ROBUST_EPOCHS, seed=0, bounds=digits.bounds)
        with torch.no_grad():
            clean = float((model(digits.x_test).argmax(dim=1) == digits.y_test).float().mean())
        robust = {
            loss: PGD(steps=ATTACK_STEPS, loss=loss)(
                model, digits.x_test, digits.y_test, threat=threat, seed=0
            ).robust_accuracy
            for loss in ("ce", "margin")
        }
        out[name] = Scores(clean, robust["ce"], robust["margin"])
    return out


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_pgd_training_beats_plain_training_under_pgd(
    scores: dict[str, Scores], loss: str
) -> None:
    # Measured (torch CPU, seed 0): plain 0.398 (CE) / 0.427 (margin), pgd_at 0.784 / 0.784.
    plain = getattr(scores["none"], f"pgd_{loss}")
    robust = getattr(scores["pgd_at"], f"pgd_{loss}")
    assert plain < 0.5
    assert robust > plain + 0.3


@pytest.mark.parametrize("name", ["fgsm_at", "trades"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_fgsm_training_and_trades_beat_plain_training_under_pgd(
    scores: dict[str, Scores], name: str, loss: str
) -> None:
    # Measured: fgsm_at 0.767 / 0.769, trades 0.802 / 0.787 against plain 0.398 / 0.427.
    assert getattr(scores[name], f"pgd_{loss}") > getattr(scores["none"], f"pgd_{loss}") + 0.25


@pytest.mark.parametrize("name", ["fgsm_at", "pgd_at", "trades"])
def test_adversarial_training_keeps_clean_accuracy_on_digits(
    scores: dict[str, Scores], name: str
) -> None:
    # Measured: plain 0.971; fgsm_at 0.971, pgd_at 0.971, trades 0.960.
    assert scores["none"].clean > 0.95
    assert scores[name].clean > scores["none"].clean - 0.03


# --------------------------------------------------------------------------- reductions


@pytest.mark.parametrize(
    "defense", [FGSMTraining(alpha=1.0), TRADES(beta=0.0)], ids=["fgsm_at-alpha1", "trades-beta0"]
)
def test_a_zero_weight_adversarial_term_is_plain_training_exactly(
    digits: Dataset, defense: AdversarialTraining
) -> None:
    x, y = _small(digits)
    plain = train(_mlp(digits, hidden=(32,)), x, y, epochs=3, seed=5)
    other = train(_mlp(digits, hidden=(32,)), x, y, defense=defense, epochs=3, seed=5,
                  bounds=digits.bounds)
    assert _states_equal(plain, other)


@pytest.mark.parametrize(
    "defense", [FGSMTraining(alpha=0.5), TRADES(beta=1.0)], ids=["fgsm_at", "trades"]
)
def test_a_weighted_adversarial_term_changes_the_weights(
    digits: Dataset, defense: AdversarialTraining
) -> None:
    x, y = _small(digits)
    plain = train(_mlp(digits, hidden=(32,)), x, y, epochs=1, seed=5)
    other = train(_mlp(digits, hidden=(32,)), x, y, defense=defense, epochs=1, seed=5,
                  bounds=digits.bounds)
    assert not _states_equal(plain, other)


# --------------------------------------------------------------------------- objectives


def _smoothed(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A composed training loss (label smoothing) that differs from plain CE."""
    return F.cross_entropy(logits, y, label_smoothing=0.2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_fgsm_training_objective_is_the_alpha_mix_of_training_losses(
    digits: Dataset, alpha: float, norm: str
) -> None:
    model = _mlp(digits).train()
    x, y = digits.x_test[:64], digits.y_test[:64]
    eps = EPS if norm == "linf" else 1.0
    got = _objective(FGSMTraining(eps=eps, norm=norm, alpha=alpha), model, x, y,
                     loss_fn=_smoothed)
    threat = EvasionThreat(norm=norm, eps=eps, bounds=(0.0, 1.0))
    with eval_mode(model):
        x_fgsm = fgsm(model, x, y, threat=threat)
    expected = alpha * _smoothed(model(x), y) + (1 - alpha) * _smoothed(model(x_fgsm), y)
    torch.testing.assert_close(got, expected)


def test_pgd_training_objective_is_the_training_loss_on_the_crafted_examples(
    digits: Dataset,
) -> None:
    model = _mlp(digits).train()
    x, y = digits.x_test[:64], digits.y_test[:64]
    defense = PGDTraining(eps=EPS, steps=4)
    got = _objective(defense, model, x, y, seed=3, loss_fn=_smoothed)
    x_adv = defense.craft(model, x, y, generator=_gen(3), bounds=(0.0, 1.0))
    expected = _smoothed(model(x_adv), y)
    torch.testing.assert_close(got, expected)
    # the examples are adversarial: the loss on them is well above the clean one
    assert float(got.detach()) > float(_smoothed(model(x), y).detach()) + 0.01


@pytest.mark.parametrize("beta", [0.5, 1.0, 6.0])
def test_trades_objective_is_the_training_loss_plus_beta_kl(
    digits: Dataset, beta: float
) -> None:
    model = _mlp(digits).train()
    x, y = digits.x_test[:64], digits.y_test[:64]
    defense = TRADES(eps=EPS, beta=beta, steps=4)
    got = _objective(defense, model, x, y, seed=2, loss_fn=_smoothed)
    x_adv = defense.craft(model, x, y, generator=_gen(2), bounds=(0.0, 1.0))
    logits, logits_adv = model(x), model(x_adv)
    # KL(p || q) by torch's own kl_div(log q, log p) with the batch mean
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.log_softmax(logits, dim=1),
                  reduction="batchmean", log_target=True)
    torch.testing.assert_close(got, _smoothed(logits, y) + beta * kl)
    assert float(kl.detach()) > 0


def test_trades_objective_is_affine_in_beta_with_the_plain_loss_as_intercept(
    digits: Dataset,
) -> None:
    model = _mlp(digits).train()
    x, y = digits.x_test[:64], digits.y_test[:64]
    loss = {b: _objective(TRADES(eps=EPS, beta=b, steps=3), model, x, y, seed=1)
            for b in (0.0, 1.0, 3.0)}
    torch.testing.assert_close(loss[0.0], F.cross_entropy(model(x), y))
    torch.testing.assert_close(loss[3.0] - loss[0.0], 3 * (loss[1.0] - loss[0.0]))
    assert float(loss[1.0].detach()) > float(loss[0.0].detach())


def test_the_trades_kl_gradient_flows_through_the_clean_and_the_adversarial_pass(
    digits: Dataset,
) -> None:
    # As in Zhang et al.'s reference code, f(x) inside the KL is not detached.
    model = _mlp(digits).train()
    x, y = digits.x_test[:32], digits.y_test[:32]
    defense = TRADES(eps=EPS, steps=3)
    params = list(model.parameters())
    got = torch.autograd.grad(_objective(defense, model, x, y), params)
    x_adv = defense.craft(model, x, y, generator=_gen(0), bounds=(0.0, 1.0))

    def reference(detach_clean: bool) -> tuple[torch.Tensor, ...]:
        logits = model(x)
        p = logits.detach() if detach_clean else logits
        loss = F.cross_entropy(logits, y) + defense.beta * kl_divergence(p, model(x_adv)).mean()
        return torch.autograd.grad(loss, params)

    for g, r in zip(got, reference(detach_clean=False), strict=True):
        torch.testing.assert_close(g, r)
    assert any(not torch.allclose(g, r) for g, r in
               zip(got, reference(detach_clean=True), strict=True))


def test_kl_divergence_matches_the_definition() -> None:
    g = _gen(4)
    a, b = 2 * torch.randn(16, 5, generator=g), 2 * torch.randn(16, 5, generator=g)
    p, q = a.softmax(dim=1), b.softmax(dim=1)
    torch.testing.assert_close(kl_divergence(a, b), (p * (p / q).log()).sum(dim=1))
    torch.testing.assert_close(kl_divergence(a, a), torch.zeros(16))
    assert bool((kl_divergence(a, b) >= 0).all())


# --------------------------------------------------------------------------- budget


SHIFTED = (-1.0, 2.0)


@pytest.mark.parametrize("bounds", [(0.0, 1.0), SHIFTED], ids=["unit", "shifted"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(
    "defense_cls", [FGSMTraining, PGDTraining, TRADES], ids=["fgsm_at", "pgd_at", "trades"]
)
def test_crafted_examples_stay_in_the_ball_and_the_bounds(
    digits: Dataset,
    defense_cls: type[AdversarialTraining],
    norm: str,
    bounds: tuple[float, float],
) -> None:
    lo, hi = bounds
    # digits rescaled into the bounds: pixels sit on both edges, so a hard-coded clamp(0, 1)
    # or a missing clip would show
    x = lo + (hi - lo) * digits.x_test[:64]
    y = digits.y_test[:64]
    eps = (hi - lo) * (0.1 if norm == "linf" else 1.0)
    model = _mlp(digits).train()
    defense = defense_cls(eps=eps, norm=norm)
    x_adv = defense.craft(model, x, y, generator=_gen(0), bounds=bounds)
    assert x_adv.shape == x.shape
    assert not x_adv.requires_grad
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert float(dist.max()) <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= lo
    assert float(x_adv.max()) <= hi
    # not a trivial answer: the examples move away from x, most by a good part of eps
    assert float(dist.median()) > 0.5 * eps


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_trades_examples_raise_the_kl_above_the_initial_noise(digits: Dataset, norm: str) -> None:
    model = _mlp(digits).eval()
    x = digits.x_test[:64]
    eps = EPS if norm == "linf" else 1.0
    threat = EvasionThreat(norm=norm, eps=eps, bounds=(0.0, 1.0))
    start = trades_examples(model, x, threat=threat, steps=0, stepsize=eps / 4,
                            generator=_gen(0))
    end = trades_examples(model, x, threat=threat, steps=5, stepsize=eps / 4,
                          generator=_gen(0))
    with torch.no_grad():
        logits = model(x)
        kl_start = kl_divergence(logits, model(start)).mean()
        kl_end = kl_divergence(logits, model(end)).mean()
    # the start is x + 0.001 N(0, 1) projected into the bounds (digits has pixels at 0 and 1)
    assert float((start - x).abs().max()) < 0.01
    assert 0.0 <= float(start.min()) < float(start.max()) <= 1.0
    assert not torch.equal(start, x)
    assert float(kl_end) > 100 * float(kl_start)


@pytest.mark.parametrize(
    "defense", [FGSMTraining(), PGDTraining(steps=3), TRADES(steps=3)],
    ids=["fgsm_at", "pgd_at", "trades"],
)
def test_crafting_accumulates_no_parameter_gradient_and_keeps_batchnorm_stats(
    digits: Dataset, defense: AdversarialTraining
) -> None:
    torch.manual_seed(0)  # test-side only: initialise the layers below
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Linear(32, 10)).train()
    x, y = digits.x_test[:64], digits.y_test[:64]
    with torch.no_grad():
        model(x)  # non-trivial running statistics
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    defense.craft(model, x, y, generator=_gen(0), bounds=(0.0, 1.0))
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())


# --------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("name", ["fgsm_at", "pgd_at", "trades"])
def test_same_seed_gives_identical_weights_and_leaves_the_global_rng_alone(
    digits: Dataset, name: str
) -> None:
    x, y = _small(digits)
    models = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # must not matter
        state = torch.random.get_rng_state()
        model = train(_mlp(digits, hidden=(32,)), x, y,
                      defense=get_defense(name, eps=EPS, **({} if name == "fgsm_at" else
                                                            {"steps": 3})),
                      epochs=2, seed=7, bounds=digits.bounds)
        assert torch.equal(state, torch.random.get_rng_state())
        models.append(model)
    assert _states_equal(*models)


@pytest.mark.parametrize("defense", [PGDTraining(steps=3), TRADES(steps=3)],
                         ids=["pgd_at", "trades"])
def test_the_random_start_comes_from_the_generator(
    digits: Dataset, defense: AdversarialTraining
) -> None:
    model = _mlp(digits).train()
    x, y = digits.x_test[:32], digits.y_test[:32]

    def craft(seed: int) -> torch.Tensor:
        return defense.craft(model, x, y, generator=_gen(seed), bounds=(0.0, 1.0))

    assert torch.equal(craft(0), craft(0))
    assert not torch.equal(craft(0), craft(1))
    g = _gen(0)
    before = g.get_state()
    defense.craft(model, x, y, generator=g, bounds=(0.0, 1.0))
    assert not torch.equal(before, g.get_state())


def test_fgsm_crafting_draws_nothing_from_the_generator(digits: Dataset) -> None:
    model = _mlp(digits).train()
    g = _gen(0)
    before = g.get_state()
    FGSMTraining().craft(model, digits.x_test[:32], digits.y_test[:32], generator=g,
                         bounds=(0.0, 1.0))
    assert torch.equal(before, g.get_state())


# --------------------------------------------------------------------------- model mode


class _ModeSpy(nn.Module):
    """Wraps a model and records ``self.training`` at every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return self.inner(x)


@pytest.mark.parametrize(
    ("defense", "expected"),
    [
        # craft (eval), then the adversarial and the clean loss (train)
        (FGSMTraining(alpha=0.5), [False, True, True]),
        (FGSMTraining(alpha=0.0), [False, True]),
        (FGSMTraining(alpha=1.0), [True]),
        # 3 steps (eval; one restart needs no scoring pass), then the loss (train)
        (PGDTraining(steps=3), [False] * 3 + [True]),
        # f(x) and 3 steps (eval), then the clean and the adversarial pass (train)
        (TRADES(steps=3), [False] * 4 + [True, True]),
        (TRADES(beta=0.0), [True]),
    ],
    ids=["fgsm_at", "fgsm_at-alpha0", "fgsm_at-alpha1", "pgd_at", "trades", "trades-beta0"],
)
def test_crafting_runs_in_eval_mode_and_the_loss_in_train_mode(
    digits: Dataset, defense: AdversarialTraining, expected: list[bool]
) -> None:
    model = _ModeSpy(_mlp(digits)).train()
    _objective(defense, model, digits.x_test[:32], digits.y_test[:32])
    assert model.seen == expected
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize(
    "defense", [FGSMTraining(), PGDTraining(steps=3), TRADES(steps=3)],
    ids=["fgsm_at", "pgd_at", "trades"],
)
def test_dropout_is_off_while_crafting(digits: Dataset, defense: AdversarialTraining) -> None:
    # Dropout in train mode would draw a fresh mask per forward call: two crafts from the
    # same generator agree only if every crafting pass runs without it.
    torch.manual_seed(0)  # test-side only: initialise the layers below
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(64, 10)).train()
    x, y = digits.x_test[:32], digits.y_test[:32]
    a = defense.craft(model, x, y, generator=_gen(0), bounds=(0.0, 1.0))
    b = defense.craft(model, x, y, generator=_gen(0), bounds=(0.0, 1.0))
    assert torch.equal(a, b)
    assert model[3].training


def test_a_mixed_mode_model_gets_each_submodule_mode_back(digits: Dataset) -> None:
    model = _mlp(digits).train()
    list(model.children())[1].eval()  # e.g. a frozen layer
    before = [m.training for m in model.modules()]
    _objective(PGDTraining(steps=2), model, digits.x_test[:16], digits.y_test[:16])
    assert [m.training for m in model.modules()] == before


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("name", "cls", "params"),
    [
        ("fgsm_at", FGSMTraining, {"eps": 0.1, "norm": "linf", "alpha": 0.5}),
        ("pgd_at", PGDTraining, {"eps": 0.1, "norm": "linf", "steps": 10, "rel_stepsize": 0.25}),
        ("trades", TRADES,
         {"eps": 0.1, "norm": "linf", "beta": 6.0, "steps": 10, "rel_stepsize": 0.25}),
    ],
)
def test_get_defense_builds_with_the_documented_defaults(
    name: str, cls: type[AdversarialTraining], params: dict[str, object]
) -> None:
    d = get_defense(name)
    assert type(d) is cls
    assert d.name == name
    assert d.kind == "training"
    assert d.params() == params
    assert d.to_dict() == {"name": name, "params": params}


def test_params_record_every_setting_and_the_norm_as_a_string() -> None:
    d = get_defense("trades", eps=0.5, norm=Norm.L2, beta=1, steps=4, rel_stepsize=0.5)
    assert d.params() == {"eps": 0.5, "norm": "l2", "beta": 1.0, "steps": 4,
                          "rel_stepsize": 0.5}
    assert type(d.params()["norm"]) is str
    assert d.label == "trades(eps=0.5, norm=l2, beta=1, steps=4, rel_stepsize=0.5)"


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("fgsm_at", {"eps": 0}, r"eps=0 is not allowed: expected a value in \(0, inf\)"),
        ("pgd_at", {"eps": -0.1}, r"eps=-0.1 is not allowed"),
        ("trades", {"eps": float("nan")}, r"eps=nan is not allowed: expected a finite number"),
        ("pgd_at", {"eps": "0.1"}, r"eps='0.1' is not allowed: expected a number"),
        ("fgsm_at", {"norm": "l1"}, r"norm='l1' is not allowed: expected one of linf, l2"),
        ("trades", {"norm": "Linf"}, r"norm='Linf' is not allowed.*did you mean 'linf'"),
        ("fgsm_at", {"alpha": 1.5}, r"alpha=1.5 is not allowed: expected a value in \[0, 1\]"),
        ("fgsm_at", {"alpha": -0.1}, r"alpha=-0.1 is not allowed"),
        ("pgd_at", {"steps": 0}, r"steps=0 is not allowed: expected a value in \[1, inf\)"),
        ("trades", {"steps": 2.5}, r"steps=2.5 is not allowed: expected an integer"),
        ("pgd_at", {"rel_stepsize": 0}, r"rel_stepsize=0 is not allowed: expected a value in "
         r"\(0, inf\)"),
        ("trades", {"rel_stepsize": float("inf")}, r"rel_stepsize=inf is not allowed"),
        ("trades", {"beta": -1}, r"beta=-1 is not allowed: expected a value in \[0, inf\)"),
        ("trades", {"beta": True}, r"beta=True is not allowed: expected a number"),
    ],
)
def test_out_of_range_parameters_are_refused_at_construction(
    name: str, params: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        get_defense(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("pgd_at", {"epsilon": 0.1}, r"defense 'pgd_at' got unknown parameter 'epsilon'.*"
         r"did you mean 'eps'"),
        ("fgsm_at", {"beta": 1.0}, r"defense 'fgsm_at' got unknown parameter 'beta'"),
        ("trades", {"alpha": 0.5}, r"defense 'trades' got unknown parameter 'alpha'"),
        ("pgd_at", {"restarts": 2}, r"unknown parameter 'restarts'"),
    ],
)
def test_unknown_parameters_are_refused(
    name: str, params: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        get_defense(name, **params)


def test_bounds_that_are_not_an_interval_are_refused_at_the_first_batch(
    digits: Dataset,
) -> None:
    x, y = _small(digits, 64)
    with pytest.raises(ConfigError, match=r"bounds=\(1.0, 0.0\) is not allowed: expected lo < hi"):
        train(_mlp(digits, hidden=(8,)), x, y, defense=PGDTraining(steps=1), epochs=1,
              bounds=(1.0, 0.0))
