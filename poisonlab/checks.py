"""Sanity checks of an evasion evaluation: is the measured robustness real, or masked?

A defense can look robust because its gradients mislead the attacks rather than because
its decisions are hard to change: saturated softmax, zero or non-finite gradients,
non-differentiable layers (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a
False Sense of Security"). Carlini et al. 2019 ("On Evaluating Adversarial Robustness")
list the symptoms; each check below tests one and returns a
:class:`CheckOutcome`: ``status`` "pass", "flag" or "skipped", a one-line ``message`` with
the measured numbers, a documentation anchor (``docs/checks.md#<name>``) and the
``evidence`` (the numbers).

The checks mostly run *probes* themselves, on a seeded subset of at most ``n_probe``
correctly classified test points at the middle eps of each untargeted threat group, so
they work whatever attacks a suite declares; the transfer and black-box checks also
compare the suite's own attacks when it ran some. Every probe is a poisonlab attack
(FGSM, PGD, Noise, Transfer, Square) run with a child seed of ``seed``.

The judges (``judge_*``) are pure functions of per-sample success vectors; the registered
checks pick the probes they need from a :class:`Probes` (lazy, each probe runs once);
:func:`run_checks` is the thin runner.

>>> from poisonlab.checks import checks, judge_iterative_vs_single_step
>>> import numpy as np
>>> out = judge_iterative_vs_single_step(pgd=np.array([True] * 41 + [False] * 59),
...                                      fgsm=np.array([True] * 55 + [False] * 45),
...                                      threat="linf eps=0.1")
>>> out.status.value, out.doc
('flag', 'docs/checks.md#iterative_vs_single_step')
>>> "iterative_vs_single_step" in checks
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from torch import nn

from ._text import spec_label
from ._validation import check_bool, check_distinct, check_inputs, check_scalar, check_seed
from .attacks import FGSM, PGD, AttackResult, Noise, get_attack
from .attacks.base import LOSSES
from .attacks.evasion import child_seeds
from .batching import DEFAULT_BATCH_SIZE, check_batch_size, iter_slices
from .errors import ConfigError, PoisonlabError, UnknownNameError
from .metrics import predict_logits
from .models import eval_mode
from .registry import Registry, did_you_mean
from .threat import EvasionThreat, Knowledge, Norm
from .training import model_device, probes_quiet

logger = logging.getLogger(__name__)

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

#: Child seeds of the checks' seed, by purpose (append only: children are index-stable).
_PROBE_SLOTS = ("subset", "pgd", "margin", "convergence", "noise", "unbounded", "transfer",
                "square")


class Status(StrEnum):
    PASS = "pass"
    FLAG = "flag"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckOutcome:
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


def _skipped(check: str, why: str, threat: str | None = None) -> CheckOutcome:
    return CheckOutcome(check, Status.SKIPPED, why, threat, {})


def _no_points(check: str, threat: str | None) -> CheckOutcome:
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
                                   threat: str) -> CheckOutcome:
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
    return CheckOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_monotone_in_eps(*, eps: Sequence[float], success: Sequence[np.ndarray],
                          threats: Sequence[str]) -> CheckOutcome:
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
    return CheckOutcome(check, Status.FLAG if flag else Status.PASS, msg, threats[j], ev)


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
                      fgsm_label: str, threat: str) -> CheckOutcome:
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
    return CheckOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_unbounded_eps(*, success: np.ndarray, threat: str) -> CheckOutcome:
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
        return CheckOutcome(check, Status.FLAG, msg, threat, ev)
    return CheckOutcome(check, Status.PASS,
                        f"PGD-CE success {s:.2f} at {threat} (the whole input range, "
                        f"n={success.size})", threat, ev)


def judge_whitebox_vs(check: str, *, white: np.ndarray, other: np.ndarray, other_name: str,
                      threat: str) -> CheckOutcome:
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
    return CheckOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_convergence(*, base: np.ndarray, stronger: np.ndarray, threat: str, steps: int,
                      restarts: int) -> CheckOutcome:
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
    return CheckOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_margin_vs_ce(*, ce: np.ndarray, margin: np.ndarray, threat: str) -> CheckOutcome:
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
    return CheckOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_noise_vs_attack(*, noise: np.ndarray, attack: np.ndarray, threat: str,
                          n_features: int = NOISE_MIN_FEATURES) -> CheckOutcome:
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
    return CheckOutcome(check, Status.FLAG if flag else Status.PASS, msg, threat, ev)


def judge_gradient_norms(*, ce_norms: np.ndarray,
                         margin_norms: np.ndarray | None = None) -> CheckOutcome:
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
        return CheckOutcome(check, Status.FLAG, msg, None, ev)
    med = ev["median_norm"]
    med_txt = f"{med:.3g}" if med is not None else "n/a"
    return CheckOutcome(check, Status.PASS,
                        f"CE input gradient vanishes on {frac:.0%} of {ce_norms.size} probe "
                        f"points (median norm {med_txt})", None, ev)


def _worst(check: str, outcomes: list[CheckOutcome], none_why: str) -> CheckOutcome:
    """The deciding outcome of several (one per threat): a flag first, then the largest
    excess over the allowance; non-skipped before skipped."""
    if not outcomes:
        return _skipped(check, none_why)
    ranked = [o for o in outcomes if o.status is not Status.SKIPPED] or outcomes

    def key(o: CheckOutcome) -> tuple[bool, float]:
        ex = o.evidence.get("excess")
        return o.flagged, float(ex) if ex is not None else -math.inf

    return max(ranked, key=key)


# --------------------------------------------------------------------------- probes


@dataclass(frozen=True, eq=False)
class SuiteAttack:
    """One of the suite's own attacks under one threat, as evaluate.py measured it."""

    label: str
    knowledge: Knowledge
    result: AttackResult

    def eligible(self) -> torch.Tensor:
        """Points the success rate counts: correct when clean (targeted: y != target)."""
        r = self.result
        return (r.pred_clean == r.y) if r.target is None else (r.y != r.target)


class Probes:
    """Lazy measurements on the probe points: each probe runs at most once.

    The probe points are the first ``n_probe`` correctly classified test points in a
    permutation drawn from ``seed``; attacks run on them only, so a success rate is the
    fraction of them an attack fools. Probe threats: the middle eps of each untargeted
    group (``groups``: threats of one norm and bounds, several eps). Every probe runs
    ``batch_size`` points at a time (None: all at once) and keeps only per-point outcomes.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 groups: Sequence[Sequence[EvasionThreat]], settings: CheckSettings,
                 seed: int, suite_results: Sequence[SuiteAttack] = (),
                 surrogate: Callable[[], nn.Module] | None = None,
                 batch_size: int | None = DEFAULT_BATCH_SIZE) -> None:
        self.model = model
        self.settings = settings
        self.batch_size = check_batch_size("batch_size", batch_size)
        self.suite_results = tuple(suite_results)
        self._surrogate = surrogate
        self.groups = [tuple(sorted(g, key=lambda t: t.eps)) for g in groups
                       if g and not g[0].targeted]
        self.threats = [g[len(g) // 2] for g in self.groups]
        self._seeds = dict(zip(_PROBE_SLOTS, child_seeds(seed, len(_PROBE_SLOTS)),
                               strict=True))
        self._group_seeds = {
            slot: child_seeds(self._seeds[slot], max(1, len(self.groups)))
            for slot in _PROBE_SLOTS}
        x, y = check_inputs(x, y)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        if dtype is not None and x.dtype != dtype:  # float64 data, a float32 model
            x = x.to(dtype)
        with eval_mode(model):
            pred = predict_logits(model, x, self.batch_size).argmax(dim=1).cpu()
        # The subset is drawn on the CPU (CPU generator, CPU indices): the same points on
        # every device. The probe points stay on the device of x; attacks move them.
        g = torch.Generator().manual_seed(self._seeds["subset"])
        perm = torch.randperm(len(y), generator=g)
        chosen = perm[(pred == y.cpu())[perm]][: settings.n_probe]
        self.idx = chosen.sort().values
        self.x, self.y = x[self.idx.to(x.device)], y[self.idx.to(y.device)]
        self.n = int(self.idx.numel())
        self.n_features = math.prod(x.shape[1:])
        self._cache: dict[tuple[str, Any], np.ndarray] = {}

    @property
    def has_surrogate(self) -> bool:
        return self._surrogate is not None

    # -- helpers
    def _seed(self, slot: str, threat: EvasionThreat) -> int:
        gi = next((i for i, g in enumerate(self.groups) if threat in g), 0)
        return self._group_seeds[slot][gi]

    def _pgd(self, **kw: Any) -> PGD:
        steps = kw.pop("steps", self.settings.steps)
        return PGD(steps=steps, rel_stepsize=2.5 / steps, early_stop=True, **kw)

    def _run(self, key: tuple[str, Any], fn: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = fn() if self.n else np.zeros(0, dtype=bool)
        return self._cache[key]

    def _success(self, attack: Any, threat: EvasionThreat, seed: int,
                 x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> np.ndarray:
        res = attack(self.model, self.x if x is None else x, self.y if y is None else y,
                     threat=threat, seed=seed, batch_size=self.batch_size, keep_adv=False)
        return res.success.cpu().numpy().astype(bool)

    # -- probes (per-point success on the probe points, bool (n,))
    def fgsm(self, t: EvasionThreat) -> np.ndarray:
        return self._run(("fgsm", t), lambda: self._success(FGSM(), t, 0))

    def pgd(self, t: EvasionThreat) -> np.ndarray:
        # One seed per group: every eps starts from the same random direction, scaled.
        return self._run(("pgd", t), lambda: self._success(self._pgd(), t,
                                                           self._seed("pgd", t)))

    def margin(self, t: EvasionThreat) -> np.ndarray:
        return self._run(("margin", t), lambda: self._success(
            self._pgd(loss="margin"), t, self._seed("margin", t)))

    def white(self, t: EvasionThreat) -> np.ndarray:
        """Per point: fooled by any white-box probe (FGSM, PGD-CE, PGD-margin)."""
        return self.fgsm(t) | self.pgd(t) | self.margin(t)

    def stronger(self, t: EvasionThreat) -> np.ndarray:
        """Per point: fooled by PGD-CE, or else by PGD-CE with twice the steps and
        CONVERGENCE_RESTARTS restarts (run on the points PGD-CE left standing)."""
        def run() -> np.ndarray:
            base = self.pgd(t)
            out = base.copy()
            rest = np.flatnonzero(~base)
            if rest.size:
                atk = self._pgd(steps=2 * self.settings.steps, restarts=CONVERGENCE_RESTARTS)
                ix = torch.as_tensor(rest)
                out[rest] = self._success(atk, t, self._seed("convergence", t),
                                          self.x[ix.to(self.x.device)],
                                          self.y[ix.to(self.y.device)])
            return out
        return self._run(("stronger", t), run)

    def noise(self, t: EvasionThreat) -> np.ndarray:
        return self._run(("noise", t), lambda: self._success(
            Noise(samples=NOISE_SAMPLES), t, self._seed("noise", t)))

    def unbounded(self, bounds: tuple[float, float]) -> tuple[np.ndarray, EvasionThreat]:
        lo, hi = bounds
        t = EvasionThreat(Norm.LINF, hi - lo, bounds)
        # From x itself: a random start inside a ball this large is already noise that
        # fools most models, whatever their gradients.
        return self._run(("unbounded", t), lambda: self._success(
            self._pgd(random_start=False), t, self._seeds["unbounded"])), t

    def transfer(self, t: EvasionThreat) -> np.ndarray:
        from .attacks.transfer import Transfer

        def run() -> np.ndarray:
            if self._surrogate is None:
                raise ConfigError("surrogate=None is not allowed: the transfer probe needs a "
                                  "trained surrogate")
            steps = self.settings.steps
            atk = Transfer(PGD(steps=steps, rel_stepsize=2.5 / steps),
                           surrogate=self._surrogate())
            return self._success(atk, t, self._seed("transfer", t))
        return self._run(("transfer", t), run)

    def square(self, t: EvasionThreat) -> np.ndarray:
        return self._run(("square", t), lambda: self._success(
            get_attack("square", max_iter=SQUARE_ITERS), t, self._seed("square", t)))

    def grad_norms(self, loss: str = "ce") -> np.ndarray:
        def batch(ix: slice) -> np.ndarray:
            device = model_device(self.model)
            x = self.x[ix].to(device).clone().requires_grad_(True)
            out = LOSSES[loss](self.model(x), self.y[ix].to(device), None).sum()
            (g,) = (torch.autograd.grad(out, x, allow_unused=True) if out.requires_grad
                    else (None,))
            if g is None:  # the output does not depend on the input (or is detached)
                return np.zeros(x.shape[0])
            return torch.linalg.vector_norm(g.flatten(1).double(), dim=1).cpu().numpy()

        def run() -> np.ndarray:
            with eval_mode(self.model):
                return np.concatenate([batch(sl)
                                       for sl in iter_slices(self.n, self.batch_size)])
        return self._run(("grad", loss), run)

    # -- the suite's own attacks
    def suite_by_threat(self) -> dict[EvasionThreat, list[SuiteAttack]]:
        out: dict[EvasionThreat, list[SuiteAttack]] = {}
        for s in self.suite_results:
            out.setdefault(s.result.threat, []).append(s)
        return out


# --------------------------------------------------------------------------- registry

CheckFn = Callable[[Probes], CheckOutcome]

#: The sanity checks by name; ``checks.get(name)(probes)`` returns one CheckOutcome.
checks: Registry[CheckFn] = Registry("check")

_NO_THREAT = "the evaluation has no untargeted evasion threat to probe"


@checks.register("iterative_vs_single_step")
def iterative_vs_single_step(p: Probes) -> CheckOutcome:
    """PGD at least as strong as FGSM at the same eps (Carlini et al. 2019)."""
    return _worst("iterative_vs_single_step",
                  [judge_iterative_vs_single_step(pgd=p.pgd(t), fgsm=p.fgsm(t), threat=t.id)
                   for t in p.threats], _NO_THREAT)


@checks.register("monotone_in_eps")
def monotone_in_eps(p: Probes) -> CheckOutcome:
    """Success never decreases as eps grows (each eps attacked independently)."""
    outs = [judge_monotone_in_eps(eps=[t.eps for t in g], success=[p.pgd(t) for t in g],
                                  threats=[t.id for t in g]) for g in p.groups]
    return _worst("monotone_in_eps", outs, _NO_THREAT)


@checks.register("suite_attacks_ordered")
def suite_attacks_ordered(p: Probes) -> CheckOutcome:
    """The suite's own attacks: each multi-step attack at least as strong as the suite's
    FGSM at the same threat, on every test point both count. (Their robust accuracy
    cannot rise with eps: ``security_curve`` carries every point fooled at a smaller eps;
    ``monotone_in_eps`` tests the attack at each eps independently.)"""
    outs: list[CheckOutcome] = []
    by_threat = p.suite_by_threat()
    for threat, runs in by_threat.items():
        singles = [s for s in runs if s.result.attack in SINGLE_STEP]
        for multi in (s for s in runs if is_multi_step(s.result.attack)):
            for single in singles:
                both = (multi.eligible() & single.eligible()).cpu()
                outs.append(judge_suite_order(
                    multi=multi.result.success.cpu()[both].numpy(),
                    fgsm=single.result.success.cpu()[both].numpy(),
                    multi_label=multi.label, fgsm_label=single.label, threat=threat.id))
    return _worst("suite_attacks_ordered", outs,
                  "the suite has no multi-step attack next to an FGSM at the same threat")


@checks.register("unbounded_eps")
def unbounded_eps(p: Probes) -> CheckOutcome:
    """PGD with a linf eps covering the input range fools (nearly) every point."""
    outs = []
    for bounds in dict.fromkeys(t.bounds for t in p.threats):
        success, t = p.unbounded(bounds)
        outs.append(judge_unbounded_eps(success=success, threat=t.id))
    return _worst("unbounded_eps", outs, _NO_THREAT)


def _versus_whitebox(p: Probes, check: str, knowledge: Knowledge, probe: str,
                     setting: str) -> CheckOutcome:
    outs: list[CheckOutcome] = []
    probe_threats = {t: t for t in p.threats}
    for threat, runs in p.suite_by_threat().items():
        white = [s for s in runs if s.knowledge is Knowledge.WHITE_BOX]
        for other in (s for s in runs if s.knowledge is knowledge):
            if white:  # the suite's own white-box attacks, on every test point
                elig = other.eligible().cpu()
                w = torch.zeros_like(elig)
                for s in white:
                    w |= s.result.success.cpu()
                outs.append(judge_whitebox_vs(
                    check, white=w[elig].numpy(),
                    other=other.result.success.cpu()[elig].numpy(), other_name=other.label,
                    threat=threat.id))
            elif threat in probe_threats:  # else the white-box probes, on the probe points
                outs.append(judge_whitebox_vs(
                    check, white=p.white(threat),
                    other=other.result.success.cpu()[p.idx].numpy(), other_name=other.label,
                    threat=threat.id))
    runs_probe = getattr(p.settings, probe) and (probe != "transfer" or p.has_surrogate)
    if runs_probe:
        for t in p.threats:
            try:
                other = getattr(p, probe)(t)
            except PoisonlabError as e:
                outs.append(_skipped(check, f"the {probe} probe cannot run: {e}", t.id))
                continue
            outs.append(judge_whitebox_vs(check, white=p.white(t), other=other,
                                          other_name=f"{probe} probe", threat=t.id))
    kind = "transfer" if knowledge is Knowledge.TRANSFER else "black-box"
    why = (f"the {probe} probe is off (checks: {{{setting}: true}})"
           if not getattr(p.settings, probe) else
           "no surrogate to craft on (nothing is trained for a pretrained model)")
    return _worst(check, outs, f"no {kind} attack in the evaluation and {why}")


@checks.register("transfer_vs_whitebox")
def transfer_vs_whitebox(p: Probes) -> CheckOutcome:
    """White-box success at least that of transfer from a surrogate (Athalye et al. 2018)."""
    return _versus_whitebox(p, "transfer_vs_whitebox", Knowledge.TRANSFER, "transfer",
                            "transfer")


@checks.register("blackbox_vs_whitebox")
def blackbox_vs_whitebox(p: Probes) -> CheckOutcome:
    """White-box success at least that of gradient-free attacks (Square, noise)."""
    return _versus_whitebox(p, "blackbox_vs_whitebox", Knowledge.BLACK_BOX, "square",
                            "square")


@checks.register("convergence")
def convergence(p: Probes) -> CheckOutcome:
    """Twice the PGD steps plus restarts add little success (the attack converged)."""
    return _worst("convergence",
                  [judge_convergence(base=p.pgd(t), stronger=p.stronger(t), threat=t.id,
                                     steps=p.settings.steps, restarts=CONVERGENCE_RESTARTS)
                   for t in p.threats], _NO_THREAT)


@checks.register("margin_vs_ce")
def margin_vs_ce(p: Probes) -> CheckOutcome:
    """PGD with the margin loss not far stronger than PGD-CE (no saturated softmax)."""
    return _worst("margin_vs_ce",
                  [judge_margin_vs_ce(ce=p.pgd(t), margin=p.margin(t), threat=t.id)
                   for t in p.threats], _NO_THREAT)


@checks.register("noise_vs_attack")
def noise_vs_attack(p: Probes) -> CheckOutcome:
    """Random noise of the same eps far weaker than the white-box attacks."""
    low = p.n_features < NOISE_MIN_FEATURES  # skipped: spare the probes
    none = np.zeros(0, dtype=bool)
    return _worst("noise_vs_attack",
                  [judge_noise_vs_attack(noise=none if low else p.noise(t),
                                         attack=none if low else p.white(t), threat=t.id,
                                         n_features=p.n_features)
                   for t in p.threats], _NO_THREAT)


@checks.register("gradient_norms")
def gradient_norms(p: Probes) -> CheckOutcome:
    """The loss's input gradient does not vanish on most probe points."""
    if not p.n:
        return _no_points("gradient_norms", None)
    return judge_gradient_norms(ce_norms=p.grad_norms("ce"),
                                margin_norms=p.grad_norms("margin"))


#: Every check, in the order they run and are reported.
ALL_CHECKS: tuple[str, ...] = (
    "iterative_vs_single_step", "monotone_in_eps", "suite_attacks_ordered",
    "unbounded_eps", "transfer_vs_whitebox",
    "blackbox_vs_whitebox", "convergence", "margin_vs_ce", "noise_vs_attack",
    "gradient_norms",
)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CheckSettings:
    """A suite's ``checks:`` block.

    Parameters
    ----------
    n_probe : int >= 1
        Most correctly classified test points the probes attack (default 200).
    enabled : sequence of check names
        The checks to run, in any order (default: all; ``[]`` runs none).
    steps : int >= 1
        PGD steps of the probes (default 20, step size 2.5 eps / steps); the convergence
        probe doubles them.
    transfer : bool
        Also probe a transfer attack (PGD on a surrogate) where the caller can supply a
        surrogate: in a suite, the harness's default one (the model's architecture trained
        without defense on the clean labels, once per dataset, model and seed, shared with
        the suite's own transfer attacks). On by default.
    square : bool
        Also probe the Square attack (gradient-free, via ART; image inputs only): off by
        default, it costs SQUARE_ITERS model queries per point.
    """

    n_probe: int = 200
    enabled: tuple[str, ...] = ALL_CHECKS
    steps: int = 20
    transfer: bool = True
    square: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_probe", check_scalar("n_probe", self.n_probe, lo=1,
                                                         integer=True))
        object.__setattr__(self, "steps", check_scalar("steps", self.steps, lo=1,
                                                       integer=True))
        check_bool("transfer", self.transfer)
        check_bool("square", self.square)
        if isinstance(self.enabled, str) or not isinstance(self.enabled, Sequence):
            raise ConfigError(f"enabled={self.enabled!r} is not allowed: expected a list of "
                              f"check names ({', '.join(ALL_CHECKS)})")
        names = tuple(self.enabled)
        for i, name in enumerate(names):
            if not isinstance(name, str) or name not in checks:
                raise UnknownNameError(
                    f"enabled[{i}]={name!r} is not known: expected one of "
                    f"{', '.join(ALL_CHECKS)}{did_you_mean(str(name), list(ALL_CHECKS))}")
            check_distinct("enabled", names[: i + 1], what="checks")
        object.__setattr__(self, "enabled", names)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | CheckSettings | None) -> CheckSettings:
        """From a suite's ``checks:`` mapping (keys: n_probe, enabled, steps, transfer,
        square); None gives the defaults."""
        if config is None:
            return cls()
        if isinstance(config, CheckSettings):
            return config
        keys = ("n_probe", "enabled", "steps", "transfer", "square")
        if not isinstance(config, Mapping):
            raise ConfigError(f"checks={config!r} is not allowed: expected a mapping like "
                              "{n_probe: 200, enabled: [gradient_norms, ...]}")
        for k in config:
            if k not in keys:
                raise ConfigError(f"unknown key {k!r}: expected one of {', '.join(keys)}"
                                  f"{did_you_mean(str(k), list(keys))}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return {"n_probe": self.n_probe, "enabled": list(self.enabled), "steps": self.steps,
                "transfer": self.transfer, "square": self.square}


# --------------------------------------------------------------------------- runner


def run_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    groups: Sequence[Sequence[EvasionThreat]],
    settings: CheckSettings | Mapping[str, Any] | None = None,
    seed: int = 0,
    suite_results: Sequence[SuiteAttack] = (),
    surrogate: Callable[[], nn.Module] | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> list[CheckOutcome]:
    """Run the enabled checks on ``model`` and return one outcome per check.

    Parameters
    ----------
    model : nn.Module
        Returns logits for inputs inside the threats' bounds; on any device (the probes
        run there).
    x, y : Tensor (n, *input_shape), int64 Tensor (n,)
        The test split, on any device (or numpy arrays); the probes use a seeded subset
        of it, drawn on the CPU, so the same points are probed on every device.
    groups : sequence of sequences of EvasionThreat
        The evaluation's threats, one group per norm/targeting (several eps). The probes
        run at the middle eps of each untargeted group, and at every eps of it for
        ``monotone_in_eps``.
    settings : CheckSettings or mapping (a suite's ``checks:`` block), optional
    seed : int >= 0
        Root of the probes' seeds (subset, random starts, noise).
    suite_results : sequence of SuiteAttack
        The evaluation's own attack results, compared by the transfer and black-box checks.
    surrogate : callable returning a trained nn.Module, optional
        For the transfer probe (``settings.transfer``); called once, on first use.
    batch_size : int >= 1 or None
        Points per forward pass of every probe (None: all at once); it changes memory and
        speed, not an outcome (docs/batching.md). Not a check setting: a call argument,
        like the attacks'.

    Returns
    -------
    list of CheckOutcome, in ``settings.enabled`` order. Flags are also logged at INFO.
    """
    settings = CheckSettings.from_config(settings)
    seed = check_seed("seed", seed)
    batch_size = check_batch_size("batch_size", batch_size)
    if not settings.enabled:
        return []
    cached: list[nn.Module] = []

    def sur() -> nn.Module:
        if not cached and surrogate is not None:
            cached.append(surrogate())
        return cached[0]

    probes = Probes(model, x, y, groups=groups, settings=settings, seed=seed,
                    suite_results=suite_results,
                    surrogate=sur if surrogate is not None else None,
                    batch_size=batch_size)
    out = []
    for name in settings.enabled:
        try:
            with probes_quiet():  # the probes' own calls: the checks report, not warn
                outcome = checks.get(name)(probes)
        except PoisonlabError as e:  # a probe the model cannot take: the check, not the cell
            outcome = _skipped(name, f"could not run: {e}")
        if outcome.flagged:
            logger.info("sanity check %s flagged: %s (%s)", name, outcome.message,
                        outcome.doc)
        out.append(outcome)
    return out


# --------------------------------------------------------------------------- results


class CheckFailure(PoisonlabError):
    """``run_suite(strict=True)``: a sanity check flagged. Results are written already.

    ``lines`` holds one line per flag (see :func:`flag_lines`); ``doc`` the results.
    """

    def __init__(self, lines: Sequence[str], doc: Mapping[str, Any]) -> None:
        super().__init__(f"{len(lines)} sanity check flag(s): " + "; ".join(lines))
        self.lines = list(lines)
        self.doc = doc


def flag_lines(doc: Mapping[str, Any]) -> list[str]:
    """One line per flagged check in a results document's cells, in cell order.

    >>> cell = {"defense": {"name": "none", "params": {}}, "dataset": {"name": "digits",
    ...         "params": {}}, "model": {"name": "mlp", "params": {}}, "seed": 0,
    ...         "checks": [{"check": "gradient_norms", "status": "flag", "message": "m",
    ...                     "doc": "docs/checks.md#gradient_norms", "threat": None,
    ...                     "evidence": {}}]}
    >>> flag_lines({"cells": [cell]})
    ['none (digits, mlp) seed 0: gradient_norms flagged: m (docs/checks.md#gradient_norms)']
    """
    lines = []
    for c in doc.get("cells", []):
        for o in c.get("checks") or []:
            if o["status"] == Status.FLAG.value:
                lines.append(f"{spec_label(c['defense'])} ({spec_label(c['dataset'])}, "
                             f"{spec_label(c['model'])}) seed {c['seed']}: {o['check']} "
                             f"flagged: {o['message']} ({o['doc']})")
    return lines


__all__ = [
    "ALL_CHECKS",
    "CheckFailure",
    "CheckOutcome",
    "CheckSettings",
    "Probes",
    "Status",
    "SuiteAttack",
    "checks",
    "flag_lines",
    "judge_convergence",
    "judge_gradient_norms",
    "judge_iterative_vs_single_step",
    "judge_margin_vs_ce",
    "judge_monotone_in_eps",
    "judge_noise_vs_attack",
    "judge_suite_order",
    "judge_unbounded_eps",
    "judge_whitebox_vs",
    "paired_gap",
    "run_checks",
]
