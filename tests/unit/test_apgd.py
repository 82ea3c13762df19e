"""APGD, APGD-T and the AutoAttack ensemble: the schedule, the ball, seeds, batch sizes,
the ensemble's worst case and its per-point breakdown."""

from __future__ import annotations

import pytest
import torch

from poisonlab import ConfigError, EvasionThreat, get_attack
from poisonlab.attacks import APGD, APGDT, AutoAttack
from poisonlab.attacks.apgd import checkpoint_periods

EPS = {"linf": 0.1, "l2": 1.0}


def test_checkpoints_follow_the_paper() -> None:
    # p_1 = 0.22, periods shrinking by 0.03 * N to a floor of 0.06 * N.
    periods = checkpoint_periods(100)
    assert periods[:8] == [22, 19, 16, 13, 10, 7, 6, 6]
    assert sum(periods[:-1]) < 100 <= sum(periods)
    assert checkpoint_periods(10) == [2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert checkpoint_periods(1) == [1]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["apgd", "apgd-t"])
def test_apgd_stays_in_the_ball_and_beats_fgsm(digits, digits_mlp, norm: str,
                                              name: str) -> None:
    x, y = digits.x_test[:120], digits.y_test[:120]
    threat = EvasionThreat(norm=norm, eps=EPS[norm], bounds=digits.bounds)
    steps = {"steps": 20} if name == "apgd" else {"steps": 20, "n_target_classes": 3}
    res = get_attack(name, **steps)(digits_mlp, x, y, threat=threat, seed=0)
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= EPS[norm] + 1e-5).all())
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    fgsm = get_attack("fgsm")(digits_mlp, x, y, threat=threat, seed=0)
    assert res.robust_accuracy <= fgsm.robust_accuracy
    assert 0 < res.gradients <= 20 * len(y) * (1 if name == "apgd" else 3) + len(y) * 3


def test_apgd_is_seeded_and_batch_size_invariant(digits, digits_mlp) -> None:
    x, y = digits.x_test[:90], digits.y_test[:90]
    threat = EvasionThreat(eps=0.1, bounds=digits.bounds)
    attack = APGD(steps=25, restarts=2, loss="dlr")
    a = attack(digits_mlp, x, y, threat=threat, seed=3)
    b = attack(digits_mlp, x, y, threat=threat, seed=3)
    assert torch.equal(a.x_adv, b.x_adv) and a.gradients == b.gradients
    for bs in (7, 64, None):
        c = attack(digits_mlp, x, y, threat=threat, seed=3, batch_size=bs)
        assert torch.equal(c.success, a.success)
    other = attack(digits_mlp, x, y, threat=threat, seed=4)
    assert not torch.equal(other.x_adv, a.x_adv)


def test_more_steps_and_restarts_are_never_weaker_on_aggregate(digits, digits_mlp) -> None:
    x, y = digits.x_test[:150], digits.y_test[:150]
    threat = EvasionThreat(eps=0.08, bounds=digits.bounds)
    weak = APGD(steps=5)(digits_mlp, x, y, threat=threat, seed=0)
    strong = APGD(steps=50, restarts=2)(digits_mlp, x, y, threat=threat, seed=0)
    pgd = get_attack("pgd", steps=50)(digits_mlp, x, y, threat=threat, seed=0)
    assert strong.robust_accuracy <= weak.robust_accuracy
    assert strong.robust_accuracy <= pgd.robust_accuracy + 1 / len(y)


def test_targeted_apgd_reaches_the_target(digits, digits_mlp) -> None:
    x, y = digits.x_test[:60], digits.y_test[:60]
    target = (y + 1) % 10
    threat = EvasionThreat(eps=0.3, bounds=digits.bounds, targeted=True)
    res = APGD(steps=30)(digits_mlp, x, y, threat=threat, seed=0, target=target)
    with torch.no_grad():
        pred = digits_mlp(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target)
    assert res.success.float().mean() > 0.5
    with pytest.raises(ConfigError, match="untargeted threat"):
        APGDT()(digits_mlp, x, y, threat=threat, seed=0, target=target)


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="loss"):
        APGD(loss="margin")
    with pytest.raises(ConfigError, match="rho"):
        APGD(rho=1.0)
    with pytest.raises(ConfigError, match="version"):
        AutoAttack(version="plus")
    with pytest.raises(ConfigError, match="n_target_classes"):
        APGDT(n_target_classes=0)


def test_autoattack_runs_its_parts_on_the_points_still_robust(digits, digits_mlp) -> None:
    x, y = digits.x_test[:100], digits.y_test[:100]
    threat = EvasionThreat(eps=0.1, bounds=digits.bounds)
    aa = AutoAttack(steps=20, n_target_classes=3, square_queries=100)
    res = aa(digits_mlp, x, y, threat=threat, seed=0, batch_size=32)
    assert res.components == ("apgd-ce", "apgd-t", "fab-t", "square")
    with torch.no_grad():
        clean_ok = digits_mlp(x).argmax(1) == y
    # Every point found by a component is fooled; every fooled clean-correct point was
    # found by exactly one; the clean mistakes are not attacked.
    assert bool(res.success[res.found_by >= 0].all())
    assert torch.equal(res.found_by >= 0, res.success & clean_ok)
    assert sum(res.breakdown().values()) == int((res.success & clean_ok).sum())
    assert res.breakdown()["apgd-ce"] > 0
    # At least as strong as each part on its own (the first part is run with the same
    # work; the later ones see only the points their predecessors left).
    for part in (APGD(steps=20), APGDT(steps=20, n_target_classes=3)):
        alone = part(digits_mlp, x, y, threat=threat, seed=0)
        assert res.robust_accuracy <= alone.robust_accuracy
    again = aa(digits_mlp, x, y, threat=threat, seed=0, batch_size=None)
    assert torch.equal(again.success, res.success)
    assert torch.equal(again.found_by, res.found_by)


def test_fast_autoattack_and_flat_inputs(blobs_case_model) -> None:
    model, x, y, bounds = blobs_case_model
    res = get_attack("autoattack", version="standard", steps=10, n_target_classes=2)(
        model, x, y, threat=EvasionThreat(eps=0.5, bounds=bounds), seed=0)
    assert res.components == ("apgd-ce", "apgd-t", "fab-t")  # no Square for flat inputs
    fast = get_attack("autoattack", version="fast", steps=10)(
        model, x, y, threat=EvasionThreat(eps=0.5, bounds=bounds), seed=0)
    assert fast.components == ("apgd-ce", "apgd-t")


@pytest.fixture(scope="module")
def blobs_case_model():
    from poisonlab import build_model, load_dataset, train

    ds = load_dataset("blobs", seed=0)
    model = train(build_model("mlp", ds.input_shape, ds.n_classes, seed=0), ds.x_train,
                  ds.y_train, epochs=5, seed=0)
    return model.eval(), ds.x_test[:60], ds.y_test[:60], ds.bounds


def test_a_security_curve_keeps_the_ensemble_breakdown(digits, digits_mlp) -> None:
    from poisonlab import security_curve

    x, y = digits.x_test[:80], digits.y_test[:80]
    threats = [EvasionThreat(eps=e, bounds=digits.bounds) for e in (0.05, 0.1)]
    small, large = security_curve(AutoAttack(version="fast", steps=15, n_target_classes=2),
                                  digits_mlp, x, y, threats=threats, seed=0)
    assert small.components == large.components == ("apgd-ce", "apgd-t")
    found_small = small.found_by >= 0
    # A point found at eps 0.05 keeps its component at eps 0.1; more are found there.
    assert torch.equal(large.found_by[found_small], small.found_by[found_small])
    assert int((large.found_by >= 0).sum()) >= int(found_small.sum())
