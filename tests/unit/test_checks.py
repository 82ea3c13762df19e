"""The evaluation sanity checks (poisonlab.sanity, docs/checks.md).

- The acceptance property of issue 7: a model whose gradients are masked on purpose (a
  rounding layer with zero gradient; a softmax-of-softmax head that saturates) is flagged,
  and a plain trained MLP raises no flag. Measured on digits at linf 0.05 / 0.1 / 0.2.
- Each judge's logic on synthetic per-point success vectors.
- The registry (did-you-mean), the settings and the suite's ``checks:`` block.
- The report section and ``flag_lines`` on synthetic results documents.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab import (
    PGD,
    ConfigError,
    Dataset,
    EvasionThreat,
    Knowledge,
    SuiteError,
    UnknownNameError,
    get_attack,
)
from poisonlab.attacks.transfer import Transfer
from poisonlab.harness.pretrained import evaluate_model, evaluate_model_details
from poisonlab.harness.report import sanity_summary
from poisonlab.harness.suite import parse_suite
from poisonlab.sanity import (
    ALL_CHECKS,
    CONVERGENCE_GAIN,
    GRAD_FLOOR,
    MARGIN_GAP,
    NOISE_MIN_FEATURES,
    UNBOUNDED_MIN,
    SanityOutcome,
    SanitySettings,
    Status,
    SuiteAttack,
    checks,
    flag_lines,
    is_multi_step,
    judge_convergence,
    judge_gradient_norms,
    judge_iterative_vs_single_step,
    judge_margin_vs_ce,
    judge_monotone_in_eps,
    judge_noise_vs_attack,
    judge_suite_order,
    judge_unbounded_eps,
    judge_whitebox_vs,
    paired_gap,
    run_sanity,
)

EPS = (0.05, 0.1, 0.2)
T = "linf eps=0.1"


def _hits(k: int, n: int = 200) -> np.ndarray:
    """k successes among n points, the first k."""
    return np.arange(n) < k


def _groups(ds: Dataset) -> list[list[EvasionThreat]]:
    return [[EvasionThreat("linf", e, ds.bounds) for e in EPS]]


def _by_name(outcomes: list[SanityOutcome]) -> dict[str, SanityOutcome]:
    return {o.check: o for o in outcomes}


# --------------------------------------------------------------------------- masked models


class Rounded(nn.Module):
    """``round(inner(x))``: the same decisions (up to ties), a gradient that is 0 everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self.inner(x))


class SoftmaxOfSoftmax(nn.Module):
    """Returns ``softmax(50 * inner(x))`` as its "logits": the loss applies a second
    softmax, and the first one saturates (exactly 0 / 1 in float32), so gradients vanish."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(50.0 * self.inner(x), dim=1)


@pytest.fixture(scope="module")
def plain(digits: Dataset, digits_mlp: nn.Module, digits_surrogate: nn.Module
          ) -> dict[str, SanityOutcome]:
    return _by_name(run_sanity(digits_mlp, digits.x_test, digits.y_test, groups=_groups(digits),
                               seed=0, surrogate=lambda: digits_surrogate))


@pytest.fixture(scope="module")
def rounded(digits: Dataset, digits_mlp: nn.Module) -> dict[str, SanityOutcome]:
    # The surrogate is the unmasked model itself: a transfer attack from it sees the
    # gradients the masked model hides.
    return _by_name(run_sanity(Rounded(digits_mlp), digits.x_test, digits.y_test,
                               groups=_groups(digits), seed=0, surrogate=lambda: digits_mlp))


@pytest.fixture(scope="module")
def saturated(digits: Dataset, digits_mlp: nn.Module) -> dict[str, SanityOutcome]:
    return _by_name(run_sanity(SoftmaxOfSoftmax(digits_mlp), digits.x_test, digits.y_test,
                               groups=_groups(digits), seed=0))


def test_a_plain_mlp_raises_no_flag(plain: dict[str, SanityOutcome]) -> None:
    assert list(plain) == list(ALL_CHECKS)
    assert not [o.message for o in plain.values() if o.flagged]
    ran = {name for name, o in plain.items() if o.status is Status.PASS}
    # Everything but Square (off by default) and the suite-order check (no suite attacks
    # were passed) ran, the transfer probe included.
    assert ran == set(ALL_CHECKS) - {"blackbox_vs_whitebox", "suite_attacks_ordered"}
    assert "square probe is off" in plain["blackbox_vs_whitebox"].message
    assert "no multi-step attack next to an FGSM" in plain["suite_attacks_ordered"].message


@pytest.mark.parametrize("model", ["rounded", "saturated"])
def test_masked_gradients_are_flagged(model: str, request: pytest.FixtureRequest) -> None:
    out: dict[str, SanityOutcome] = request.getfixturevalue(model)
    for name in ("gradient_norms", "unbounded_eps"):
        assert out[name].flagged, out[name].message
    assert out["gradient_norms"].evidence["vanishing_fraction"] > 0.9
    assert out["unbounded_eps"].evidence["success"] < 0.5
    assert out["unbounded_eps"].threat == "linf eps=1"


def test_a_rounding_layer_is_beaten_by_noise_and_by_transfer(
        rounded: dict[str, SanityOutcome]) -> None:
    noise, transfer = rounded["noise_vs_attack"], rounded["transfer_vs_whitebox"]
    assert noise.flagged, noise.message
    assert noise.evidence["noise"] > noise.evidence["attack"]
    assert transfer.flagged, transfer.message
    assert transfer.evidence["other"] > transfer.evidence["white_box"] + 0.3
    assert "transfer probe success" in transfer.message


def test_checks_are_reproducible(digits: Dataset, digits_mlp: nn.Module,
                                 rounded: dict[str, SanityOutcome]) -> None:
    again = run_sanity(Rounded(digits_mlp), digits.x_test, digits.y_test,
                       groups=_groups(digits), seed=0, surrogate=lambda: digits_mlp)
    assert [o.to_dict() for o in again] == [o.to_dict() for o in rounded.values()]


def test_the_checks_leave_the_model_and_its_mode_alone(digits: Dataset) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    run_sanity(model, digits.x_test, digits.y_test, groups=_groups(digits), seed=0,
               settings={"n_probe": 20, "steps": 2})
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_suites_own_transfer_and_black_box_attacks_are_compared(
        digits: Dataset, digits_mlp: nn.Module) -> None:
    """With the probes off, the suite's results decide: a transfer attack from the
    unmasked model and random noise both beat PGD on the rounded model."""
    masked = Rounded(digits_mlp)
    x, y = digits.x_test, digits.y_test
    t = EvasionThreat("linf", 0.2, digits.bounds)
    runs = [
        SuiteAttack("pgd", Knowledge.WHITE_BOX, PGD(steps=10)(masked, x, y, threat=t, seed=0)),
        SuiteAttack("transfer", Knowledge.TRANSFER, Transfer(PGD(steps=10), surrogate=digits_mlp)(
            masked, x, y, threat=t, seed=0)),
        SuiteAttack("noise", Knowledge.BLACK_BOX,
                    get_attack("noise", samples=10)(masked, x, y, threat=t, seed=0)),
    ]
    out = _by_name(run_sanity(
        masked, x, y, groups=[[t]], seed=0, suite_results=runs,
        settings={"enabled": ["transfer_vs_whitebox", "blackbox_vs_whitebox"],
                  "transfer": False}))
    assert out["transfer_vs_whitebox"].flagged
    assert out["transfer_vs_whitebox"].message.startswith("transfer success")
    assert out["blackbox_vs_whitebox"].flagged
    assert out["blackbox_vs_whitebox"].message.startswith("noise success")
    # Measured on every test point the suite attacked, not only the probe points.
    n_correct = int((runs[0].result.pred_clean == y).sum())
    assert out["transfer_vs_whitebox"].evidence["n"] == n_correct > 200


def test_a_pretrained_model_has_no_surrogate_to_probe(digits: Dataset,
                                                      digits_mlp: nn.Module) -> None:
    (out,) = run_sanity(digits_mlp, digits.x_test, digits.y_test, groups=_groups(digits),
                        settings={"enabled": ["transfer_vs_whitebox"]})
    assert out.status is Status.SKIPPED
    assert "no surrogate" in out.message


def test_a_pretrained_model_gets_the_checks_and_the_same_metrics(
        digits: Dataset, digits_mlp: nn.Module) -> None:
    kw: dict[str, Any] = {"threats": _groups(digits)[0], "attacks": ["fgsm"],
                          "metrics": ["accuracy", "evasion"]}
    details = evaluate_model_details(digits_mlp, digits, checks={"n_probe": 50}, **kw)
    assert [c["check"] for c in details["checks"]] == list(ALL_CHECKS)
    assert {c["status"] for c in details["checks"]} == {"pass", "skipped"}
    assert details["metrics"] == evaluate_model(digits_mlp, digits, **kw)


def test_without_untargeted_threats_the_probes_are_skipped(digits: Dataset,
                                                            digits_mlp: nn.Module) -> None:
    targeted = [[EvasionThreat("linf", 0.1, digits.bounds, targeted=True)]]
    out = run_sanity(digits_mlp, digits.x_test, digits.y_test, groups=targeted, seed=0)
    assert {o.status for o in out if o.check != "gradient_norms"} == {Status.SKIPPED}
    assert "no untargeted evasion threat" in _by_name(out)["iterative_vs_single_step"].message


def test_a_check_that_cannot_run_is_skipped_not_fatal(digits: Dataset) -> None:
    """Square needs image batches: on flat inputs its probe is skipped with the reason."""
    model = nn.Sequential(nn.Linear(64, 10))
    x = digits.x_test.flatten(1)
    (out,) = run_sanity(model, x, digits.y_test,
                        groups=[[EvasionThreat("linf", 0.1, digits.bounds)]],
                        settings={"enabled": ["blackbox_vs_whitebox"], "square": True,
                                  "n_probe": 10})
    assert out.status is Status.SKIPPED
    assert "square probe cannot run" in out.message and "image batches" in out.message


def test_few_features_skip_the_noise_check(digits: Dataset) -> None:
    x = digits.x_test[:, 0, 0, :2]  # 2 features
    model = nn.Linear(2, 10)
    (out,) = run_sanity(model, x, digits.y_test,
                        groups=[[EvasionThreat("linf", 0.1, digits.bounds)]],
                        settings={"enabled": ["noise_vs_attack"]})
    assert out.status is Status.SKIPPED
    assert f"2 features (< {NOISE_MIN_FEATURES})" in out.message


# --------------------------------------------------------------------------- judges


def test_paired_gap_is_the_mean_difference_and_its_standard_error() -> None:
    a, b = _hits(120), _hits(100)
    gap, se = paired_gap(a, b)
    d = a.astype(float) - b.astype(float)
    assert gap == pytest.approx(0.1)
    assert se == pytest.approx(d.std(ddof=1) / np.sqrt(200))
    assert paired_gap(a, b, scale=0.5)[0] == pytest.approx(0.6 - 0.25)
    assert all(np.isnan(v) for v in paired_gap(np.zeros(0), np.zeros(0)))


def test_suite_order_judges_the_suites_own_attacks() -> None:
    flag = judge_suite_order(multi=_hits(79), fgsm=_hits(102), multi_label="pgd(steps=2)",
                             fgsm_label="fgsm", threat=T)
    assert flag.flagged and flag.check == "suite_attacks_ordered"
    assert flag.message.startswith("the suite's pgd(steps=2) success 0.40 < its fgsm 0.51 at "
                                   "linf eps=0.1: a multi-step attack weaker than single-step")
    assert (flag.evidence["multi_attack"], flag.evidence["fgsm_attack"]) == (
        "pgd(steps=2)", "fgsm")
    assert not judge_suite_order(multi=_hits(100), fgsm=_hits(103), multi_label="pgd",
                                 fgsm_label="fgsm", threat=T).flagged
    assert judge_suite_order(multi=_hits(0, 0), fgsm=_hits(0, 0), multi_label="pgd",
                             fgsm_label="fgsm", threat=T).status is Status.SKIPPED
    assert [is_multi_step(a) for a in ("pgd", "apgd", "autoattack", "art:ProjectedGradient"
                                       "Descent", "foolbox:L2PGD", "fgsm", "square",
                                       "art:FastGradientMethod")] == [True] * 5 + [False] * 3


def test_iterative_vs_single_step() -> None:
    flag = judge_iterative_vs_single_step(pgd=_hits(82), fgsm=_hits(110), threat=T)
    assert flag.flagged and flag.threat == T
    assert flag.message == ("PGD-CE success 0.41 < FGSM 0.55 at linf eps=0.1: iterative "
                            "attack weaker than single-step, a sign of masked gradients")
    assert flag.evidence["gap"] == pytest.approx(0.14)
    # Within the slack plus noise: a couple of points either way is not a sign.
    assert not judge_iterative_vs_single_step(pgd=_hits(100), fgsm=_hits(104),
                                              threat=T).flagged
    assert judge_iterative_vs_single_step(pgd=_hits(0, 0), fgsm=_hits(0, 0),
                                          threat=T).status is Status.SKIPPED


def test_monotone_in_eps_finds_the_worst_drop() -> None:
    ok = judge_monotone_in_eps(eps=EPS, success=[_hits(30), _hits(120), _hits(199)],
                               threats=[f"linf eps={e:g}" for e in EPS])
    assert ok.status is Status.PASS
    assert ok.evidence["curve"] == [0.15, 0.6, 0.995]
    # Given out of order; the drop from 0.1 to 0.2 decides.
    bad = judge_monotone_in_eps(eps=(0.2, 0.05, 0.1), success=[_hits(60), _hits(30),
                                                                _hits(120)],
                                threats=["linf eps=0.2", "linf eps=0.05", "linf eps=0.1"])
    assert bad.flagged
    assert (bad.evidence["eps_small"], bad.evidence["eps_large"]) == (0.1, 0.2)
    assert bad.threat == "linf eps=0.2"
    assert "falls from 0.60 at eps=0.1 to 0.30 at eps=0.2" in bad.message
    one = judge_monotone_in_eps(eps=(0.1,), success=[_hits(5)], threats=[T])
    assert one.status is Status.SKIPPED


def test_unbounded_eps_needs_near_total_success() -> None:
    assert judge_unbounded_eps(success=_hits(198), threat="linf eps=1").status is Status.PASS
    flag = judge_unbounded_eps(success=_hits(197), threat="linf eps=1")
    assert flag.flagged and flag.evidence["required"] == UNBOUNDED_MIN
    assert flag.message.startswith("PGD-CE success 0.98 < 0.99 at linf eps=1")


@pytest.mark.parametrize("check", ["transfer_vs_whitebox", "blackbox_vs_whitebox"])
def test_whitebox_must_beat_transfer_and_black_box(check: str) -> None:
    flag = judge_whitebox_vs(check, white=_hits(80), other=_hits(120), other_name="square",
                             threat=T)
    assert flag.flagged and flag.check == check
    assert flag.message.startswith("square success 0.60 > white-box 0.40 at linf eps=0.1")
    assert not judge_whitebox_vs(check, white=_hits(120), other=_hits(80),
                                 other_name="square", threat=T).flagged


def test_convergence_flags_a_large_gain_only() -> None:
    flag = judge_convergence(base=_hits(100), stronger=_hits(130), threat=T, steps=20,
                             restarts=2)
    assert flag.flagged
    assert "raises success from 0.50 to 0.65" in flag.message
    small = judge_convergence(base=_hits(100), stronger=_hits(100 + int(CONVERGENCE_GAIN * 100)),
                              threat=T, steps=20, restarts=2)
    assert small.status is Status.PASS


def test_margin_vs_ce_flags_a_saturated_softmax() -> None:
    flag = judge_margin_vs_ce(ce=_hits(60), margin=_hits(140), threat=T)
    assert flag.flagged and "saturated softmax" in flag.message
    assert flag.evidence["margin"] - flag.evidence["ce"] > MARGIN_GAP
    assert not judge_margin_vs_ce(ce=_hits(100), margin=_hits(110), threat=T).flagged


def test_noise_must_be_far_weaker_than_the_attack() -> None:
    assert judge_noise_vs_attack(noise=_hits(90), attack=_hits(100), threat=T).flagged
    assert not judge_noise_vs_attack(noise=_hits(10), attack=_hits(120), threat=T).flagged
    # A robust model: neither fools anything; nothing to flag.
    assert not judge_noise_vs_attack(noise=_hits(0), attack=_hits(0), threat=T).flagged
    low = judge_noise_vs_attack(noise=_hits(90), attack=_hits(100), threat=T, n_features=2)
    assert low.status is Status.SKIPPED


def test_gradient_norms_counts_zero_and_non_finite_gradients() -> None:
    norms = np.array([0.0, np.nan, np.inf, GRAD_FLOOR / 2, 1.0, 2.0])
    flag = judge_gradient_norms(ce_norms=norms)
    assert flag.flagged
    assert flag.evidence["vanishing_fraction"] == pytest.approx(4 / 6, abs=1e-4)
    assert "on 67% of 6 probe points" in flag.message
    half = judge_gradient_norms(ce_norms=np.array([0.0, 1.0]))  # not "most"
    assert half.status is Status.PASS and half.evidence["median_norm"] == 0.5


def test_an_outcome_serialises_with_its_doc_anchor() -> None:
    o = judge_unbounded_eps(success=_hits(200), threat="linf eps=1")
    d = o.to_dict()
    assert set(d) == {"check", "status", "message", "doc", "evidence", "threat"}
    assert d["doc"] == "docs/checks.md#unbounded_eps" and d["status"] == "pass"


# --------------------------------------------------------------------------- registry, settings


def test_every_check_is_registered_in_the_documented_order() -> None:
    assert sorted(ALL_CHECKS) == checks.names()
    assert SanitySettings().enabled == ALL_CHECKS
    for name in ALL_CHECKS:
        assert checks.help(name)


def test_an_unknown_check_name_gets_a_did_you_mean() -> None:
    with pytest.raises(UnknownNameError, match=r"check='gradient_norm' is not known: .*"
                                               r"\(did you mean 'gradient_norms'\?\)"):
        checks.get("gradient_norm")
    with pytest.raises(UnknownNameError, match=r"enabled\[1\]='convergense' is not known: "
                                               r"expected one of .*did you mean "
                                               r"'convergence'"):
        SanitySettings(enabled=("margin_vs_ce", "convergense"))


@pytest.mark.parametrize(("kw", "match"), [
    ({"n_probe": 0}, r"n_probe=0 is not allowed"),
    ({"steps": 1.5}, r"steps=1.5 is not allowed"),
    ({"transfer": "yes"}, r"transfer='yes' is not allowed: expected true or false"),
    ({"enabled": "gradient_norms"}, r"enabled='gradient_norms' is not allowed: expected a "
                                    r"list of check names"),
    ({"enabled": ["convergence", "convergence"]}, r"enabled\[1\]='convergence' is listed "
                                                  r"twice"),
])
def test_bad_settings_name_the_field(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SanitySettings(**kw)


def test_no_enabled_check_runs_nothing(digits: Dataset, digits_mlp: nn.Module) -> None:
    assert run_sanity(digits_mlp, digits.x_test, digits.y_test, groups=_groups(digits),
                      settings={"enabled": []}) == []


BASE: dict[str, Any] = {
    "name": "chk", "datasets": ["digits"], "models": [{"name": "mlp", "hidden": [16]}],
    "defenses": ["none"], "training": {"epochs": 1}, "seeds": [0],
    "threat_model": {"evasion": [{"norm": "linf", "eps": [0.1]}]}, "attacks": ["fgsm"],
}


@pytest.mark.parametrize(("block", "match"), [
    ({"n_prob": 5}, r"checks: unknown key 'n_prob': expected one of n_probe, enabled, steps, "
                    r"transfer, square \(did you mean 'n_probe'\?\)"),
    ([1], r"checks=\[1\] is not allowed: expected a mapping"),
    ({"n_probe": -1}, r"checks: n_probe=-1 is not allowed"),
    ({"enabled": ["iterative"]}, r"checks: enabled\[0\]='iterative' is not known"),
    ({"square": 1}, r"checks: square=1 is not allowed: expected true or false"),
])
def test_suite_checks_block_errors_name_the_field(block: Any, match: str) -> None:
    with pytest.raises(SuiteError, match=match):
        parse_suite({**BASE, "checks": block})


def test_default_check_settings_keep_the_cell_keys() -> None:
    plain = parse_suite(dict(BASE))
    cell = next(iter(plain.cells()))
    same = parse_suite({**BASE, "checks": {"n_probe": 200}})
    assert same.checks == SanitySettings()
    assert same.key(cell) == plain.key(cell)
    assert "checks" not in plain.to_dict()
    changed = parse_suite({**BASE, "checks": {"n_probe": 50, "enabled": ["gradient_norms"]}})
    assert changed.key(cell) != plain.key(cell)
    assert changed.to_dict()["checks"] == {"n_probe": 50, "enabled": ["gradient_norms"],
                                           "steps": 20, "transfer": True, "square": False}
    # Without the evasion group the checks do not run: their settings change no key.
    off = parse_suite({**BASE, "metrics": ["accuracy"], "checks": {"n_probe": 50}})
    base_off = parse_suite({**BASE, "metrics": ["accuracy"]})
    assert off.key(cell) == base_off.key(cell)


# --------------------------------------------------------------------------- report


def _doc(checks_per_seed: dict[str, list[list[tuple[str, str]]]],
         attacks: tuple[str, ...] = ("fgsm", "pgd")) -> dict[str, Any]:
    cells = []
    for defense, per_seed in checks_per_seed.items():
        for seed, outs in enumerate(per_seed):
            cells.append({
                "dataset": {"name": "digits", "params": {}}, "model": {"name": "mlp",
                                                                      "params": {}},
                "defense": {"name": defense, "params": {}}, "poisoning": None, "seed": seed,
                "status": "ok", "metrics": [],
                "checks": [{"check": c, "status": s, "message": f"{c} {s} seed {seed}",
                            "doc": f"docs/checks.md#{c}", "evidence": {}, "threat": T}
                           for c, s in outs]})
    return {"cells": cells, "aggregates": [],
            "threat_model": {"attacks": [{"name": a, "params": {}} for a in attacks],
                             "poisoning": [],
                             "evasion": [{"norm": "linf", "eps": [0.1], "targeted": False,
                                          "bounds": None}]}}


def test_the_report_lists_each_flag_beside_its_defense() -> None:
    ok = [("gradient_norms", "pass"), ("margin_vs_ce", "pass")]
    doc = _doc({"none": [ok, ok, ok],
                "label_smoothing": [[("gradient_norms", "pass"), ("margin_vs_ce", "flag")],
                                    ok,
                                    [("gradient_norms", "pass"), ("margin_vs_ce", "flag")]]})
    lines = sanity_summary(doc)
    assert lines[0].startswith("Robust accuracy in this report is the per-sample worst case "
                               "over all 2 attacks run (fgsm, pgd)")
    flagged = [x for x in lines if "flagged in" in x]
    assert flagged == ["**label_smoothing** (digits, mlp): `margin_vs_ce` flagged in 2 of 3 "
                       "seeds; seed 0: margin_vs_ce flag seed 0 (see "
                       "docs/checks.md#margin_vs_ce)"]
    assert "2 of 12 check runs on 6 clean-label models flagged" in lines[-1]
    assert flag_lines(doc) == [
        f"label_smoothing (digits, mlp) seed {s}: margin_vs_ce flagged: margin_vs_ce flag "
        f"seed {s} (docs/checks.md#margin_vs_ce)" for s in (0, 2)]


def test_the_report_says_when_all_checks_passed_and_when_one_attack_ran() -> None:
    doc = _doc({"none": [[("gradient_norms", "pass"), ("blackbox_vs_whitebox", "skipped")]]},
               attacks=("pgd",))
    lines = sanity_summary(doc)
    assert lines[0].startswith("Robust accuracy in this report comes from a single attack "
                               "(`pgd`)")
    assert lines[1].startswith("All evaluation sanity checks passed (1 check run on 1 "
                               "clean-label model, 1 skipped)")
    assert lines[2] == ("Skipped: `blackbox_vs_whitebox`: blackbox_vs_whitebox skipped "
                        "seed 0.")
    assert flag_lines(doc) == []
    none = sanity_summary(_doc({"none": [[]]}))
    assert none[-1].startswith("No evaluation sanity checks ran")
