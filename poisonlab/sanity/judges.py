"""The judges of the sanity checks: pure functions of per-sample success vectors.

Each ``judge_*`` takes the outcomes of the probes (numpy bool arrays, one entry per probe
point) and returns one :class:`SanityOutcome`; the thresholds they use are the module's
constants, documented in docs/checks.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- thresholds

#: Standard errors of a paired difference on the probe points that a gap may reach by
#: chance (sampling noise of which points were probed).
Z = 2.0
#: A weaker attack may beat a stronger one by this much (plus noise) before a flag: the
#: orderings are empirical, not theorems (maximising a loss is not maximising error).
ORDER_SLACK = 0.02
#: Success an attack with an eps covering the whole input range must reach.
UNBOUNDED_MIN = 0.99
#: Most extra success that doubling PGD's steps and adding restarts may buy.
CONVERGENCE_GAIN = 0.03
#: Most extra success PGD with the margin loss may have over PGD with cross-entropy.
MARGIN_GAP = 0.1
#: Random noise must stay below this fraction of the best white-box attack's success...
NOISE_RATIO = 0.5
#: ...on inputs with at least this many features. A random perturbation's component along
#: the gradient shrinks like 1 / sqrt(d): in a few dimensions noise of the full budget is
#: nearly an attack (in 2-D, ten random linf corners are all four corners of the box).
NOISE_MIN_FEATURES = 32
#: An input gradient with a smaller l2 norm (or a non-finite one) counts as vanished...
GRAD_FLOOR = 1e-8
#: ...and the check flags when more than this fraction of the probe points have one.
GRAD_VANISHING = 0.5

#: Probe attack settings: PGD takes ``steps`` steps of 2.5 eps / steps (Madry et al. 2018's
#: rule); the convergence probe doubles the steps and runs this many restarts.
CONVERGENCE_RESTARTS = 2
#: Random draws of the noise probe per point (a point is fooled if any draw fools it).
NOISE_SAMPLES = 10
#: Iterations of the Square probe (``checks: {square: true}``).
SQUARE_ITERS = 300


class Status(StrEnum):
    PASS = "pass"
    FLAG = "flag"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class SanityOutcome:
    """What one check concluded about one model.

    Attributes
    ----------
    check : str
        The registered check name; also the anchor of its section in docs/checks.md.
    status : Status
        "pass", "flag" (the evaluation is likely misleading) or "skipped" (nothing to
        measure; the message says why).
    message : str
        One line with the measured numbers.
    threat : str or None
        Id of the threat the deciding measurement was made under (None: no threat).
    evidence : mapping of str to number
        The numbers behind the message (success rates, gaps, standard errors, n).
    """

    check: str
    status: Status
    message: str
    threat: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def doc(self) -> str:
        return f"docs/checks.md#{self.check}"

    @property
    def flagged(self) -> bool:
        return self.status is Status.FLAG

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status.value, "message": self.message,
                "doc": self.doc, "evidence": dict(self.evidence), "threat": self.threat}


# --------------------------------------------------------------------------- judges


def _rate(v: np.ndarray) -> float:
    return float(np.mean(v)) if v.size else math.nan


def paired_gap(a: np.ndarray, b: np.ndarray, *, scale: float = 1.0) -> tuple[float, float]:
    """``mean(a) - scale * mean(b)`` over paired points and the standard error of it.

    >>> paired_gap(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    (0.25, 0.25)
    """
    d = np.asarray(a, dtype=float) - scale * np.asarray(b, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    return float(d.mean()), se


def _skipped(check: str, why: str, threat: str | None = None) -> SanityOutcome:
    return SanityOutcome(check, Status.SKIPPED, why, threat, {})


def _no_points(check: str, threat: str | None) -> SanityOutcome:
    return _skipped(check, "no probe point is classified correctly: nothing to attack",
                    threat)


def _r(x: float) -> float:
    """Evidence numbers rounded to 4 decimals (JSON-friendly, stable to read)."""
    return round(float(x), 4)


def _ordered(check: str, *, strong: np.ndarray, weak: np.ndarray, threshold: float,
             scale: float = 1.0, z: float = Z) -> tuple[bool, dict[str, Any]]:
    """Does ``weak`` beat ``scale * strong`` by more than ``threshold + z * se``?"""
    gap, se = paired_gap(weak, strong, scale=scale)
    allowed = threshold + z * se
    return gap > allowed, {"n": int(strong.size), "gap": _r(gap), "se": _r(se),
                           "allowed": _r(allowed), "excess": _r(gap - allowed)}


def judge_iterative_vs_single_step(*, pgd: np.ndarray, fgsm: np.ndarray,
                                   threat: str) -> SanityOutcome:
    """PGD must fool at least as many points as FGSM (up to ORDER_SLACK plus noise)."""
    check = "iterative_vs_single_step"
    if pgd.size == 0:
        return _no_points(check, threat)
    flag, ev = _ordered(check, strong=pgd, weak=fgsm, threshold=ORDER_SLACK)
    s_p, s_f = _rate(pgd), _rate(fgsm)
    ev.update(pgd=_r(s_p), fgsm=_r(s_f))
    if flag:
        msg = (f"PGD-CE success {s_p:.2f} < FGSM {s_f:.2f} at {threat}: iterative attack "
               "weaker than single-step, a sign of masked gradients")
    else:
        msg = f"PGD-CE success {s_p:.2f} vs FGSM {s_f:.2f} at {threat} (n={pgd.size})"
    return SanityOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_monotone_in_eps(*, eps: Sequence[float], success: Sequence[np.ndarray],
                          threats: Sequence[str]) -> SanityOutcome:
    """Success at a larger eps must not fall below success at a smaller one.

    ``success[i]`` holds the per-point outcome of an attack run independently at
    ``eps[i]`` (same points, same random start scaled to the eps); the worst drop over all
    pairs decides.
    """
    check = "monotone_in_eps"
    order = sorted(range(len(eps)), key=lambda i: eps[i])
    if len(order) < 2:
        return _skipped(check, "one eps in the threat group: nothing to compare",
                        threats[0] if threats else None)
    if success[order[0]].size == 0:
        return _no_points(check, threats[order[-1]])
    pairs = [(i, j) for a, i in enumerate(order) for j in order[a + 1:]]
    judged = [(*_ordered(check, strong=success[j], weak=success[i], threshold=ORDER_SLACK),
               i, j) for i, j in pairs]
    flag, ev, i, j = max(judged, key=lambda r: r[1]["excess"])
    s_i, s_j = _rate(success[i]), _rate(success[j])
    ev.update(eps_small=eps[i], eps_large=eps[j], success_small=_r(s_i),
              success_large=_r(s_j),
              curve=[_r(_rate(success[k])) for k in order])
    family = threats[j].split(" eps=")[0]
    if flag:
        msg = (f"PGD-CE success falls from {s_i:.2f} at eps={eps[i]:g} to {s_j:.2f} at "
               f"eps={eps[j]:g} ({family}): success must not decrease as the budget grows, "
               "a sign of masked gradients or a broken attack")
    else:
        curve = ", ".join(f"{_rate(success[k]):.2f}" for k in order)
        msg = (f"PGD-CE success {curve} at {family} eps="
               + ", ".join(f"{eps[k]:g}" for k in order) + f" (n={success[i].size})")
    return SanityOutcome(check, Status.FLAG if flag else Status.PASS, msg, threats[j], ev)


#: Attack names counted as single-step (the suite's FGSM) and as multi-step by
#: :func:`judge_suite_order`; adapters of iterative classes count as multi-step by name.
SINGLE_STEP: frozenset[str] = frozenset({
    "fgsm", "art:FastGradientMethod", "foolbox:FGSM", "foolbox:FGM",
    "foolbox:LinfFastGradientAttack", "foolbox:L2FastGradientAttack",
})
_MULTI_STEP_PARTS: tuple[str, ...] = ("PGD", "ProjectedGradient", "BasicIterative",
                                      "AutoProjected", "AutoConjugate", "MomentumIterative")


def is_multi_step(attack: str) -> bool:
    """Is the attack name an iterative gradient attack (pgd, apgd, autoattack, an adapter
    of a PGD-family class)?

    >>> is_multi_step("pgd"), is_multi_step("foolbox:LinfPGD"), is_multi_step("fgsm")
    (True, True, False)
    """
    return attack in ("pgd", "apgd", "apgd-t", "autoattack") or (
        ":" in attack and any(part in attack for part in _MULTI_STEP_PARTS))


def judge_suite_order(*, multi: np.ndarray, fgsm: np.ndarray, multi_label: str,
                      fgsm_label: str, threat: str) -> SanityOutcome:
    """The suite's multi-step attack must fool at least as many points as its FGSM at the
    same threat (up to ORDER_SLACK plus noise), on the points both count."""
    check = "suite_attacks_ordered"
    if multi.size == 0:
        return _no_points(check, threat)
    flag, ev = _ordered(check, strong=multi, weak=fgsm, threshold=ORDER_SLACK)
    s_m, s_f = _rate(multi), _rate(fgsm)
    ev.update(multi=_r(s_m), fgsm=_r(s_f), multi_attack=multi_label, fgsm_attack=fgsm_label)
    if flag:
        msg = (f"the suite's {multi_label} success {s_m:.2f} < its {fgsm_label} {s_f:.2f} at "
               f"{threat}: a multi-step attack weaker than single-step is misconfigured "
               "(too few or too small steps) or faces masked gradients")
    else:
        msg = (f"the suite's {multi_label} success {s_m:.2f} vs {fgsm_label} {s_f:.2f} at "
               f"{threat} (n={multi.size})")
    return SanityOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_unbounded_eps(*, success: np.ndarray, threat: str) -> SanityOutcome:
    """An attack whose linf eps covers the whole input range must fool (nearly) all."""
    check = "unbounded_eps"
    if success.size == 0:
        return _no_points(check, threat)
    s = _rate(success)
    ev = {"n": int(success.size), "success": _r(s), "required": UNBOUNDED_MIN,
          "excess": _r(UNBOUNDED_MIN - s)}
    if s < UNBOUNDED_MIN:
        msg = (f"PGD-CE success {s:.2f} < {UNBOUNDED_MIN:g} at {threat} (the whole input "
               "range): an unbounded attack must fool every point, so its gradients do not "
               "lead to the decision boundary")
        return SanityOutcome(check, Status.FLAG, msg, threat, ev)
    return SanityOutcome(check, Status.PASS,
                        f"PGD-CE success {s:.2f} at {threat} (the whole input range, "
                        f"n={success.size})", threat, ev)


def judge_whitebox_vs(check: str, *, white: np.ndarray, other: np.ndarray, other_name: str,
                      threat: str) -> SanityOutcome:
    """White-box attacks (per point, any of them) must beat a transfer or black-box one."""
    if white.size == 0:
        return _no_points(check, threat)
    flag, ev = _ordered(check, strong=white, weak=other, threshold=ORDER_SLACK)
    s_w, s_o = _rate(white), _rate(other)
    ev.update(white_box=_r(s_w), other=_r(s_o))
    if flag:
        kind = "a transfer attack" if check == "transfer_vs_whitebox" else \
            "a gradient-free attack"
        msg = (f"{other_name} success {s_o:.2f} > white-box {s_w:.2f} at {threat}: "
               f"{kind} beats the attacks that use this model's gradients, a sign of "
               "masked gradients")
    else:
        msg = (f"white-box success {s_w:.2f} vs {other_name} {s_o:.2f} at {threat} "
               f"(n={white.size})")
    return SanityOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_convergence(*, base: np.ndarray, stronger: np.ndarray, threat: str, steps: int,
                      restarts: int) -> SanityOutcome:
    """``stronger`` (per point: fooled by the base attack or by the stronger run) may add
    at most CONVERGENCE_GAIN success; every point it adds is one the base run missed."""
    check = "convergence"
    if base.size == 0:
        return _no_points(check, threat)
    flag, ev = _ordered(check, strong=base, weak=stronger, threshold=CONVERGENCE_GAIN)
    s_b, s_s = _rate(base), _rate(stronger)
    ev.update(base=_r(s_b), stronger=_r(s_s), steps=steps, stronger_steps=2 * steps,
              restarts=restarts)
    what = f"PGD-CE with {2 * steps} steps and {restarts} restarts"
    if flag:
        msg = (f"{what} raises success from {s_b:.2f} to {s_s:.2f} at {threat} (> "
               f"{CONVERGENCE_GAIN:g} more): the {steps}-step attack has not converged, so "
               "robust accuracy from such attacks is overstated")
    else:
        msg = f"{what}: success {s_b:.2f} -> {s_s:.2f} at {threat} (n={base.size})"
    return SanityOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_margin_vs_ce(*, ce: np.ndarray, margin: np.ndarray, threat: str) -> SanityOutcome:
    """PGD with the logit-margin loss may beat PGD-CE by at most MARGIN_GAP plus noise."""
    check = "margin_vs_ce"
    if ce.size == 0:
        return _no_points(check, threat)
    flag, ev = _ordered(check, strong=ce, weak=margin, threshold=MARGIN_GAP)
    s_c, s_m = _rate(ce), _rate(margin)
    ev.update(ce=_r(s_c), margin=_r(s_m))
    if flag:
        msg = (f"PGD-margin success {s_m:.2f} exceeds PGD-CE {s_c:.2f} by {s_m - s_c:.2f} at "
               f"{threat}: cross-entropy gradients are weak (a saturated softmax), so "
               "CE-based attacks understate the attacker")
    else:
        msg = f"PGD-margin success {s_m:.2f} vs PGD-CE {s_c:.2f} at {threat} (n={ce.size})"
    return SanityOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_noise_vs_attack(*, noise: np.ndarray, attack: np.ndarray, threat: str,
                          n_features: int = NOISE_MIN_FEATURES) -> SanityOutcome:
    """Random noise of the same eps must stay below NOISE_RATIO of the attack's success
    (on inputs of at least NOISE_MIN_FEATURES features; skipped below)."""
    check = "noise_vs_attack"
    if n_features < NOISE_MIN_FEATURES:
        return _skipped(check, f"inputs have {n_features} features (< {NOISE_MIN_FEATURES}): "
                               "in so few dimensions random noise of the full budget is "
                               "nearly as strong as any attack", threat)
    if attack.size == 0:
        return _no_points(check, threat)
    flag, ev = _ordered(check, strong=attack, weak=noise, threshold=0.0, scale=NOISE_RATIO)
    s_n, s_a = _rate(noise), _rate(attack)
    ev.update(noise=_r(s_n), attack=_r(s_a), ratio=NOISE_RATIO)
    if flag:
        msg = (f"random noise success {s_n:.2f} vs best white-box attack {s_a:.2f} at "
               f"{threat}: the attack is not far stronger than noise (noise reaches more "
               f"than {NOISE_RATIO:g} of it), a sign of masked gradients")
    else:
        msg = (f"random noise success {s_n:.2f} vs best white-box attack {s_a:.2f} at "
               f"{threat} (n={attack.size})")
    return SanityOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_gradient_norms(*, ce_norms: np.ndarray,
                         margin_norms: np.ndarray | None = None) -> SanityOutcome:
    """The CE loss's input gradient must not vanish (or be non-finite) on most points."""
    check = "gradient_norms"
    if ce_norms.size == 0:
        return _no_points(check, None)

    def vanished(v: np.ndarray) -> np.ndarray:
        return ~np.isfinite(v) | (np.nan_to_num(v, nan=0.0, posinf=0.0) < GRAD_FLOOR)

    frac = float(vanished(ce_norms).mean())
    finite = ce_norms[np.isfinite(ce_norms)]
    ev: dict[str, Any] = {"n": int(ce_norms.size), "vanishing_fraction": _r(frac),
                          "floor": GRAD_FLOOR, "allowed": GRAD_VANISHING,
                          "excess": _r(frac - GRAD_VANISHING),
                          "median_norm": float(np.median(finite)) if finite.size else None}
    if margin_norms is not None:
        ev["margin_vanishing_fraction"] = _r(float(vanished(margin_norms).mean()))
    if frac > GRAD_VANISHING:
        msg = (f"the CE loss's input gradient vanishes (norm < {GRAD_FLOOR:g} or non-finite) "
               f"on {frac:.0%} of {ce_norms.size} probe points: gradient attacks cannot move "
               "them, so their robustness is not measured")
        return SanityOutcome(check, Status.FLAG, msg, None, ev)
    med = ev["median_norm"]
    med_txt = f"{med:.3g}" if med is not None else "n/a"
    return SanityOutcome(check, Status.PASS,
                        f"CE input gradient vanishes on {frac:.0%} of {ce_norms.size} probe "
                        f"points (median norm {med_txt})", None, ev)


def _worst(check: str, outcomes: list[SanityOutcome], none_why: str) -> SanityOutcome:
    """The deciding outcome of several (one per threat): a flag first, then the largest
    excess over the allowance; non-skipped before skipped."""
    if not outcomes:
        return _skipped(check, none_why)
    ranked = [o for o in outcomes if o.status is not Status.SKIPPED] or outcomes

    def key(o: SanityOutcome) -> tuple[bool, float]:
        ex = o.evidence.get("excess")
        return o.flagged, float(ex) if ex is not None else -math.inf

    return max(ranked, key=key)
