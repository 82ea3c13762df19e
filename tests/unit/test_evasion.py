"""Evasion attacks (FGSM, PGD) and security curves on a small digits MLP.

The shared ``digits_mlp`` fixture is read-only: attacks never change weights, and tests
that need to put a model in train mode build their own.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab import (
    FGSM,
    PGD,
    Attack,
    ConfigError,
    DataError,
    Dataset,
    EvasionThreat,
    build_model,
    security_curve,
)
from poisonlab.metrics import accuracy

LINF_EPS = [0.0, 0.03, 0.1, 0.3]
L2_EPS = [0.0, 0.25, 1.0, 3.0]
CASES = [("linf", e) for e in LINF_EPS] + [("l2", e) for e in L2_EPS]
ATTACKS = {
    "fgsm": FGSM(),
    "pgd": PGD(steps=20),
    "pgd-margin-es": PGD(steps=20, loss="margin", early_stop=True, restarts=2),
}
TOL = 1e-5


def _norms(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def _rate(mask: torch.Tensor) -> float:
    return float(mask.float().mean())


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("attack_name", list(ATTACKS))
@pytest.mark.parametrize(("norm", "eps"), CASES)
def test_x_adv_stays_in_the_eps_ball_and_the_bounds(
    digits: Dataset, digits_mlp: nn.Module, attack_name: str, norm: str, eps: float
) -> None:
    threat = EvasionThreat(norm=norm, eps=eps, bounds=digits.bounds)
    res = ATTACKS[attack_name](digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    assert res.x_adv.shape == digits.x_test.shape
    assert float(_norms(digits.x_test, res.x_adv, norm).max()) <= eps + TOL
    assert float(res.x_adv.min()) >= digits.bounds[0]
    assert float(res.x_adv.max()) <= digits.bounds[1]


@pytest.mark.parametrize("attack_name", list(ATTACKS))
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_success_flags_agree_with_a_fresh_prediction(
    digits: Dataset, digits_mlp: nn.Module, attack_name: str, norm: str, eps: float
) -> None:
    threat = EvasionThreat(norm=norm, eps=eps)
    res = ATTACKS[attack_name](digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    with torch.no_grad():
        fresh_adv = digits_mlp(res.x_adv).argmax(dim=1)
        fresh_clean = digits_mlp(digits.x_test).argmax(dim=1)
    assert res.success.dtype == torch.bool
    assert torch.equal(res.pred_adv, fresh_adv)
    assert torch.equal(res.pred_clean, fresh_clean)
    assert torch.equal(res.success, fresh_adv != digits.y_test)
    assert torch.equal(res.y, digits.y_test)


@pytest.mark.parametrize("attack_name", list(ATTACKS))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_x_unchanged(
    digits: Dataset, digits_mlp: nn.Module, attack_name: str, norm: str
) -> None:
    threat = EvasionThreat(norm=norm, eps=0.0)
    res = ATTACKS[attack_name](digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    assert torch.equal(res.x_adv, digits.x_test)
    assert torch.equal(res.pred_adv, res.pred_clean)


def test_result_summaries_follow_the_metric_definitions(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    res = PGD(steps=10)(digits_mlp, digits.x_test, digits.y_test,
                        threat=EvasionThreat(eps=0.05), seed=0)
    assert res.robust_accuracy == accuracy(res.pred_adv, digits.y_test)
    correct = res.pred_clean == digits.y_test
    expected = _rate(res.pred_adv[correct] != digits.y_test[correct])
    assert res.attack_success_rate == pytest.approx(expected, abs=1e-6)
    assert res.attack == "pgd"
    assert res.params["steps"] == 10
    assert res.seed == 0


@pytest.mark.parametrize(
    ("attack", "expected"),
    [(FGSM(), 1), (PGD(steps=7), 7), (PGD(steps=5, restarts=3), 15)],
    ids=["fgsm", "pgd", "pgd-restarts"],
)
def test_gradient_count_is_recorded(
    digits: Dataset, digits_mlp: nn.Module, attack: Attack, expected: int
) -> None:
    x, y = digits.x_test[:40], digits.y_test[:40]
    res = attack(digits_mlp, x, y, threat=EvasionThreat(eps=0.1), seed=0)
    assert res.gradients == expected * 40


# --------------------------------------------------------------------------- strength


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("linf", 0.1), ("l2", 0.5), ("l2", 1.0)])
def test_pgd_is_at_least_as_strong_as_fgsm(
    digits: Dataset, digits_mlp: nn.Module, norm: str, eps: float
) -> None:
    threat = EvasionThreat(norm=norm, eps=eps)
    fgsm = FGSM()(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    pgd = PGD(steps=40)(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    assert _rate(pgd.success) >= _rate(fgsm.success)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.5)])
def test_more_restarts_never_lose_a_success(
    digits: Dataset, digits_mlp: nn.Module, norm: str, eps: float
) -> None:
    threat = EvasionThreat(norm=norm, eps=eps)
    one = PGD(steps=10, restarts=1)(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=3)
    three = PGD(steps=10, restarts=3)(
        digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=3
    )
    # The first restart draws the same start, so every sample fooled once stays fooled.
    assert not bool((one.success & ~three.success).any())
    assert _rate(three.success) >= _rate(one.success)


@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.5)])
def test_early_stop_never_raises_robust_accuracy(
    digits: Dataset, digits_mlp: nn.Module, loss: str, norm: str, eps: float
) -> None:
    threat = EvasionThreat(norm=norm, eps=eps)
    kwargs = {"steps": 40, "rel_stepsize": 0.25, "loss": loss}
    plain = PGD(**kwargs)(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    early = PGD(early_stop=True, **kwargs)(
        digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0
    )
    assert early.robust_accuracy <= plain.robust_accuracy
    assert early.gradients < plain.gradients


def test_full_range_linf_eps_fools_almost_everything(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    threat = EvasionThreat(norm="linf", eps=1.0, bounds=digits.bounds)
    res = PGD(steps=40)(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    assert _rate(res.success) >= 0.99


def test_random_sign_noise_is_far_weaker_than_fgsm(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    eps = 0.1
    x, y = digits.x_test, digits.y_test
    fgsm = FGSM()(digits_mlp, x, y, threat=EvasionThreat(eps=eps), seed=0)
    g = torch.Generator().manual_seed(0)
    noise = eps * torch.sign(torch.randn(x.shape, generator=g))
    with torch.no_grad():
        noisy_pred = digits_mlp((x + noise).clamp(0.0, 1.0)).argmax(dim=1)
    random_rate = _rate(noisy_pred != y)
    assert _rate(fgsm.success) > 0.3
    assert random_rate < 0.5 * _rate(fgsm.success)


def test_success_grows_with_eps(digits: Dataset, digits_mlp: nn.Module) -> None:
    rates = [
        _rate(PGD(steps=20)(digits_mlp, digits.x_test, digits.y_test,
                            threat=EvasionThreat(eps=e), seed=0).success)
        for e in (0.0, 0.05, 0.1, 0.2)
    ]
    assert rates == sorted(rates)
    assert rates[-1] > rates[0] + 0.5


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_margin_loss_attack_works(
    digits: Dataset, digits_mlp: nn.Module, norm: str, eps: float
) -> None:
    threat = EvasionThreat(norm=norm, eps=eps)
    res = PGD(steps=40, loss="margin")(digits_mlp, digits.x_test, digits.y_test,
                                      threat=threat, seed=0)
    ce = PGD(steps=40, loss="ce")(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    clean_error = 1 - accuracy(res.pred_clean, digits.y_test)
    assert _rate(res.success) > clean_error + 0.3
    assert _rate(res.success) >= 0.8 * _rate(ce.success)


# --------------------------------------------------------------------------- reference PGD


def _reference_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, a: float, steps: int,
    lo: float, hi: float,
) -> torch.Tensor:
    """Plain torch linf PGD without random start (Madry et al. 2018)."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="none").sum()
        (g,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + a * g.sign()
            delta = torch.clamp(x_adv - x, -eps, eps)
            x_adv = torch.clamp(x + delta, lo, hi)
    return x_adv.detach()


@pytest.mark.parametrize("eps", [0.03, 0.1])
def test_pgd_without_random_start_equals_a_plain_torch_loop(
    digits: Dataset, digits_mlp: nn.Module, eps: float
) -> None:
    steps, rel = 15, 0.2
    x, y = digits.x_test, digits.y_test
    res = PGD(steps=steps, rel_stepsize=rel, random_start=False)(
        digits_mlp, x, y, threat=EvasionThreat(eps=eps), seed=0
    )
    ref = _reference_pgd(digits_mlp, x, y, eps=eps, a=rel * eps, steps=steps, lo=0.0, hi=1.0)
    assert torch.equal(res.x_adv, ref)


def test_abs_stepsize_overrides_rel_stepsize(digits: Dataset, digits_mlp: nn.Module) -> None:
    x, y = digits.x_test[:100], digits.y_test[:100]
    threat = EvasionThreat(eps=0.1)
    a = PGD(steps=5, abs_stepsize=0.02, rel_stepsize=0.9, random_start=False)(
        digits_mlp, x, y, threat=threat)
    b = PGD(steps=5, rel_stepsize=0.2, random_start=False)(digits_mlp, x, y, threat=threat)
    ref = _reference_pgd(digits_mlp, x, y, eps=0.1, a=0.02, steps=5, lo=0.0, hi=1.0)
    assert torch.equal(a.x_adv, ref)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6)


# --------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_same_seed_gives_identical_x_adv(digits: Dataset, digits_mlp: nn.Module, norm: str) -> None:
    threat = EvasionThreat(norm=norm, eps=0.1 if norm == "linf" else 1.0)
    attack = PGD(steps=10, restarts=2)
    a = attack(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=5)
    b = attack(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=5)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_different_seed_gives_different_x_adv(
    digits: Dataset, digits_mlp: nn.Module, norm: str
) -> None:
    threat = EvasionThreat(norm=norm, eps=0.1 if norm == "linf" else 1.0)
    attack = PGD(steps=3, random_start=True)
    a = attack(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=0)
    b = attack(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=1)
    assert not torch.equal(a.x_adv, b.x_adv)


def test_a_generator_can_be_passed_as_seed(digits: Dataset, digits_mlp: nn.Module) -> None:
    threat = EvasionThreat(eps=0.1)
    attack = PGD(steps=3)
    # A generator gives the per-sample streams' root seed one draw of its own: the same
    # generator state, the same attack; a generator that has moved on, another one.
    a = attack(digits_mlp, digits.x_test, digits.y_test, threat=threat,
               seed=torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(8)
    b = attack(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=g)
    c = attack(digits_mlp, digits.x_test, digits.y_test, threat=threat, seed=g)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(b.x_adv, c.x_adv)
    assert b.seed == -1


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3, restarts=2)], ids=["fgsm", "pgd"])
def test_attacks_do_not_touch_the_global_rng(
    digits: Dataset, digits_mlp: nn.Module, attack: Attack
) -> None:
    state = torch.random.get_rng_state()
    attack(digits_mlp, digits.x_test[:50], digits.y_test[:50],
           threat=EvasionThreat(norm="l2", eps=0.5), seed=0)
    assert torch.equal(state, torch.random.get_rng_state())


def test_attacks_do_not_change_the_weights(digits: Dataset) -> None:
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    PGD(steps=3)(model, digits.x_test[:50], digits.y_test[:50], threat=EvasionThreat(eps=0.1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


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


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3)], ids=["fgsm", "pgd"])
def test_a_model_in_train_mode_stays_in_train_mode(digits: Dataset, attack: Attack) -> None:
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0).train()
    attack(model, digits.x_test[:20], digits.y_test[:20], threat=EvasionThreat(eps=0.1))
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3)], ids=["fgsm", "pgd"])
def test_a_model_in_eval_mode_stays_in_eval_mode(digits: Dataset, attack: Attack) -> None:
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0).eval()
    attack(model, digits.x_test[:20], digits.y_test[:20], threat=EvasionThreat(eps=0.1))
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3)], ids=["fgsm", "pgd"])
def test_the_attack_runs_the_model_in_eval_mode(digits: Dataset, attack: Attack) -> None:
    model = _ModeSpy(build_model("mlp", digits.input_shape, digits.n_classes, seed=0)).train()
    attack(model, digits.x_test[:20], digits.y_test[:20], threat=EvasionThreat(eps=0.1))
    assert model.seen
    assert not any(model.seen)


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3)], ids=["fgsm", "pgd"])
def test_a_mixed_mode_model_gets_each_submodule_mode_back(
    digits: Dataset, attack: Attack
) -> None:
    # e.g. fine-tuning with a frozen (eval-mode) layer inside a model in train mode
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0).train()
    model[1].eval()
    before = [m.training for m in model.modules()]
    attack(model, digits.x_test[:20], digits.y_test[:20], threat=EvasionThreat(eps=0.1))
    assert [m.training for m in model.modules()] == before


def test_security_curve_restores_model_mode(digits: Dataset) -> None:
    model = build_model("mlp", digits.input_shape, digits.n_classes, seed=0).train()
    security_curve(PGD(steps=2), model, digits.x_test[:20], digits.y_test[:20],
                   threats=[EvasionThreat(eps=e) for e in (0.1, 0.2)])
    assert all(m.training for m in model.modules())


# --------------------------------------------------------------------------- targeted


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=40)], ids=["fgsm", "pgd"])
@pytest.mark.parametrize("target", [0, 7])
def test_targeted_attack_moves_predictions_to_the_target(
    digits: Dataset, digits_mlp: nn.Module, attack: Attack, target: int
) -> None:
    x, y = digits.x_test, digits.y_test
    threat = EvasionThreat(eps=0.2, targeted=True)
    res = attack(digits_mlp, x, y, threat=threat, seed=0, target=target)
    others = y != target
    before = _rate(res.pred_clean[others] == target)
    after = _rate(res.pred_adv[others] == target)
    assert torch.equal(res.success, res.pred_adv == target)
    assert torch.equal(res.target, torch.full_like(y, target))
    assert after > before + 0.2
    assert res.attack_success_rate == pytest.approx(after, abs=1e-6)


def test_targeted_pgd_beats_targeted_fgsm(digits: Dataset, digits_mlp: nn.Module) -> None:
    threat = EvasionThreat(eps=0.2, targeted=True)
    args = (digits_mlp, digits.x_test, digits.y_test)
    fgsm = FGSM()(*args, threat=threat, target=3)
    pgd = PGD(steps=40)(*args, threat=threat, target=3)
    assert pgd.attack_success_rate >= fgsm.attack_success_rate
    assert pgd.attack_success_rate > 0.6


def test_targeted_attack_accepts_a_per_sample_target_tensor(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    x, y = digits.x_test, digits.y_test
    target = (y + 1) % digits.n_classes
    res = PGD(steps=40, loss="margin")(digits_mlp, x, y,
                                       threat=EvasionThreat(eps=0.2, targeted=True),
                                       target=target)
    assert torch.equal(res.success, res.pred_adv == target)
    assert _rate(res.success) > 0.5


def test_targeted_threat_without_target_raises(digits: Dataset, digits_mlp: nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"target=None is not allowed: a targeted threat"):
        PGD()(digits_mlp, digits.x_test, digits.y_test, threat=EvasionThreat(eps=0.1,
                                                                             targeted=True))


def test_untargeted_threat_with_target_raises(digits: Dataset, digits_mlp: nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"target= is not allowed: the threat is untargeted"):
        FGSM()(digits_mlp, digits.x_test, digits.y_test, threat=EvasionThreat(eps=0.1), target=1)


def test_target_outside_the_classes_raises(digits: Dataset, digits_mlp: nn.Module) -> None:
    with pytest.raises(DataError, match=r"target has labels in \[10, 10\]"):
        FGSM()(digits_mlp, digits.x_test, digits.y_test,
               threat=EvasionThreat(eps=0.1, targeted=True), target=10)


# --------------------------------------------------------------------------- clip=False


def test_fgsm_without_clipping_leaves_the_bounds_but_stays_in_the_ball(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    eps = 0.1
    res = FGSM(clip=False)(digits_mlp, digits.x_test, digits.y_test,
                           threat=EvasionThreat(eps=eps), seed=0)
    assert float(res.x_adv.min()) < 0.0 or float(res.x_adv.max()) > 1.0
    assert float(_norms(digits.x_test, res.x_adv, "linf").max()) <= eps + TOL
    # unclipped FGSM moves every coordinate with a non-zero gradient by exactly eps
    with torch.no_grad():
        moved = (res.x_adv - digits.x_test).abs()
    assert float(((moved > 0) & ((moved - eps).abs() > TOL)).float().sum()) == 0


def test_fgsm_clipped_is_the_unclipped_result_clamped(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    threat = EvasionThreat(eps=0.1)
    free = FGSM(clip=False)(digits_mlp, digits.x_test, digits.y_test, threat=threat)
    clipped = FGSM()(digits_mlp, digits.x_test, digits.y_test, threat=threat)
    torch.testing.assert_close(clipped.x_adv, free.x_adv.clamp(0.0, 1.0), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- security curve


EPS_SHUFFLED = [0.1, 0.02, 0.2, 0.05]


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=20, early_stop=True)], ids=["fgsm", "pgd"])
def test_security_curve_returns_one_result_per_threat_in_order(
    digits: Dataset, digits_mlp: nn.Module, attack: Attack
) -> None:
    threats = [EvasionThreat(eps=e) for e in EPS_SHUFFLED]
    curve = security_curve(attack, digits_mlp, digits.x_test, digits.y_test,
                           threats=threats, seed=0)
    assert len(curve) == len(threats)
    for res, threat in zip(curve, threats, strict=True):
        assert res.threat == threat
        assert float(_norms(digits.x_test, res.x_adv, "linf").max()) <= threat.eps + TOL
        assert float(res.x_adv.min()) >= 0.0
        assert float(res.x_adv.max()) <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_security_curve_success_never_decreases_with_eps(
    digits: Dataset, digits_mlp: nn.Module, norm: str
) -> None:
    scale = 1.0 if norm == "linf" else 8.0
    threats = [EvasionThreat(norm=norm, eps=e * scale) for e in EPS_SHUFFLED]
    curve = security_curve(PGD(steps=20, early_stop=True), digits_mlp, digits.x_test,
                           digits.y_test, threats=threats, seed=0)
    by_eps = sorted(curve, key=lambda r: r.threat.eps)
    for small, large in itertools.pairwise(by_eps):
        assert not bool((small.success & ~large.success).any())
        assert large.robust_accuracy <= small.robust_accuracy
    for res in curve:
        assert torch.equal(res.success, digits_mlp(res.x_adv).argmax(dim=1) != digits.y_test)
        assert float(_norms(digits.x_test, res.x_adv, norm).max()) <= res.threat.eps + TOL


def test_security_curve_keeps_the_point_of_a_sample_fooled_at_a_smaller_eps(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    steps = 10
    small, large = security_curve(
        PGD(steps=steps), digits_mlp, digits.x_test, digits.y_test,
        threats=[EvasionThreat(eps=0.05), EvasionThreat(eps=0.1)], seed=0,
    )
    kept = small.success
    assert bool(kept.any())
    torch.testing.assert_close(large.x_adv[kept], small.x_adv[kept], rtol=0, atol=1e-6)
    # only the samples still standing are attacked again
    assert large.gradients == steps * int((~kept).sum())


def test_targeted_security_curve_is_monotone_towards_the_target(
    digits: Dataset, digits_mlp: nn.Module
) -> None:
    threats = [EvasionThreat(eps=e, targeted=True) for e in (0.2, 0.05, 0.1)]
    curve = security_curve(PGD(steps=20, early_stop=True), digits_mlp, digits.x_test,
                           digits.y_test, threats=threats, seed=0, target=4)
    by_eps = sorted(curve, key=lambda r: r.threat.eps)
    for res in curve:
        assert torch.equal(res.success, res.pred_adv == 4)
    for small, large in itertools.pairwise(by_eps):
        assert not bool((small.success & ~large.success).any())
    assert by_eps[-1].attack_success_rate > by_eps[0].attack_success_rate


def test_security_curve_is_reproducible(digits: Dataset, digits_mlp: nn.Module) -> None:
    threats = [EvasionThreat(eps=e) for e in (0.05, 0.1)]
    a = security_curve(PGD(steps=5), digits_mlp, digits.x_test, digits.y_test, threats=threats,
                       seed=2)
    b = security_curve(PGD(steps=5), digits_mlp, digits.x_test, digits.y_test, threats=threats,
                       seed=2)
    for ra, rb in zip(a, b, strict=True):
        assert torch.equal(ra.x_adv, rb.x_adv)


@pytest.mark.parametrize(
    "threats",
    [
        [EvasionThreat(norm="linf", eps=0.1), EvasionThreat(norm="l2", eps=0.5)],
        [EvasionThreat(eps=0.1), EvasionThreat(eps=0.2, bounds=(0.0, 2.0))],
        [EvasionThreat(eps=0.1), EvasionThreat(eps=0.2, targeted=True)],
    ],
    ids=["norms", "bounds", "targeting"],
)
def test_security_curve_rejects_mixed_threats(
    digits: Dataset, digits_mlp: nn.Module, threats: list[EvasionThreat]
) -> None:
    with pytest.raises(ConfigError, match=r"threats mix .* a security curve needs one norm"):
        security_curve(PGD(steps=2), digits_mlp, digits.x_test, digits.y_test, threats=threats)


def test_security_curve_rejects_an_empty_list(digits: Dataset, digits_mlp: nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"threats=\[\] is not allowed"):
        security_curve(PGD(), digits_mlp, digits.x_test, digits.y_test, threats=[])


# --------------------------------------------------------------------------- bad input


def test_threat_must_be_an_evasion_threat(digits: Dataset, digits_mlp: nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"threat=0.1 is not allowed: expected an EvasionThreat"):
        PGD()(digits_mlp, digits.x_test, digits.y_test, threat=0.1)  # type: ignore[arg-type]


def test_inputs_outside_the_threat_bounds_raise(digits: Dataset, digits_mlp: nn.Module) -> None:
    with pytest.raises(DataError, match=r"expected values inside threat bounds \[0, 0.5\]"):
        FGSM()(digits_mlp, digits.x_test, digits.y_test,
               threat=EvasionThreat(eps=0.1, bounds=(0.0, 0.5)))


def test_labels_outside_the_model_width_raise(digits: Dataset, digits_mlp: nn.Module) -> None:
    y = digits.y_test.clone()
    y[0] = 10
    with pytest.raises(DataError, match=r"y has labels in \[0, 10\]"):
        FGSM()(digits_mlp, digits.x_test, y, threat=EvasionThreat(eps=0.1))


class _NaNModel(nn.Module):
    """Finite inputs, NaN logits and NaN input gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)) * float("nan")


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=2)], ids=["fgsm", "pgd"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_a_model_with_nan_logits_and_gradients_is_refused(
    digits: Dataset, attack: Attack, norm: str, eps: float
) -> None:
    # Success flags computed from argmax(NaN) are meaningless; the template must refuse NaN
    # for every norm (torch.sign maps a NaN gradient to 0, so linf never sees a NaN x_adv).
    with pytest.raises(DataError, match=r"NaN"):
        attack(_NaNModel(), digits.x_test[:8], digits.y_test[:8],
               threat=EvasionThreat(norm=norm, eps=eps))


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: PGD(steps=0), r"steps=0 is not allowed"),
        (lambda: PGD(rel_stepsize=0.0), r"rel_stepsize=0.0 is not allowed"),
        (lambda: PGD(abs_stepsize=-1.0), r"abs_stepsize=-1.0 is not allowed"),
        (lambda: PGD(restarts=0), r"restarts=0 is not allowed"),
        (lambda: PGD(restarts=2, random_start=False), r"restarts=2 is not allowed with"),
        (lambda: PGD(loss="margn"), r"loss='margn'.*did you mean 'margin'"),
        (lambda: PGD(early_stop="yes"), r"early_stop='yes' is not allowed"),
        (lambda: FGSM(loss="xent"), r"loss='xent' is not allowed: expected one of ce, margin"),
        (lambda: FGSM(clip=0), r"clip=0 is not allowed"),
    ],
)
def test_bad_attack_settings_raise(make, pattern: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=pattern):
        make()


@pytest.mark.parametrize("seed", [-1, 0.5])
def test_bad_seed_raises(digits: Dataset, digits_mlp: nn.Module, seed: object) -> None:
    with pytest.raises(ConfigError, match=r"seed="):
        FGSM()(digits_mlp, digits.x_test, digits.y_test, threat=EvasionThreat(eps=0.1),
               seed=seed)  # type: ignore[arg-type]


def test_security_curve_reports_each_eps_in_increasing_order_without_changing_results() -> None:
    import torch as _torch

    from poisonlab.attacks import PGD, security_curve
    from poisonlab.threat import EvasionThreat

    g = _torch.Generator().manual_seed(0)
    model = _torch.nn.Sequential(_torch.nn.Linear(4, 3))
    x = _torch.rand(20, 4, generator=g)
    y = _torch.randint(0, 3, (20,), generator=g)
    threats = [EvasionThreat(norm="linf", eps=e) for e in (0.3, 0.1, 0.2)]
    seen: list[float] = []
    hooked = security_curve(PGD(steps=5), model, x, y, threats=threats, seed=3,
                            on_result=lambda t, r: seen.append(t.eps))
    plain = security_curve(PGD(steps=5), model, x, y, threats=threats, seed=3)
    assert seen == [0.1, 0.2, 0.3]
    for a, b in zip(hooked, plain, strict=True):
        assert _torch.equal(a.x_adv, b.x_adv)
