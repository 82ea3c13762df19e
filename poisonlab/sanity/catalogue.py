"""The registered sanity checks: each picks its probes and hands them to a judge.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import PoisonlabError
from ..registry import Registry
from ..threat import Knowledge
from .judges import (
    CONVERGENCE_RESTARTS,
    NOISE_MIN_FEATURES,
    SINGLE_STEP,
    SanityOutcome,
    _no_points,
    _skipped,
    _worst,
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
)
from .probes import Probes

# --------------------------------------------------------------------------- registry

CheckFn = Callable[[Probes], SanityOutcome]

#: The sanity checks by name; ``checks.get(name)(probes)`` returns one SanityOutcome.
checks: Registry[CheckFn] = Registry("check")

_NO_THREAT = "the evaluation has no untargeted evasion threat to probe"


@checks.register("iterative_vs_single_step")
def iterative_vs_single_step(p: Probes) -> SanityOutcome:
    """PGD at least as strong as FGSM at the same eps (Carlini et al. 2019)."""
    return _worst("iterative_vs_single_step",
                  [judge_iterative_vs_single_step(pgd=p.pgd(t), fgsm=p.fgsm(t), threat=t.id)
                   for t in p.threats], _NO_THREAT)


@checks.register("monotone_in_eps")
def monotone_in_eps(p: Probes) -> SanityOutcome:
    """Success never decreases as eps grows (each eps attacked independently)."""
    outs = [judge_monotone_in_eps(eps=[t.eps for t in g], success=[p.pgd(t) for t in g],
                                  threats=[t.id for t in g]) for g in p.groups]
    return _worst("monotone_in_eps", outs, _NO_THREAT)


@checks.register("suite_attacks_ordered")
def suite_attacks_ordered(p: Probes) -> SanityOutcome:
    """The suite's own attacks: each multi-step attack at least as strong as the suite's
    FGSM at the same threat, on every test point both count. (Their robust accuracy
    cannot rise with eps: ``security_curve`` carries every point fooled at a smaller eps;
    ``monotone_in_eps`` tests the attack at each eps independently.)"""
    outs: list[SanityOutcome] = []
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
def unbounded_eps(p: Probes) -> SanityOutcome:
    """PGD with a linf eps covering the input range fools (nearly) every point."""
    outs = []
    for bounds in dict.fromkeys(t.bounds for t in p.threats):
        success, t = p.unbounded(bounds)
        outs.append(judge_unbounded_eps(success=success, threat=t.id))
    return _worst("unbounded_eps", outs, _NO_THREAT)


def _versus_whitebox(p: Probes, check: str, knowledge: Knowledge, probe: str,
                     setting: str) -> SanityOutcome:
    outs: list[SanityOutcome] = []
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
def transfer_vs_whitebox(p: Probes) -> SanityOutcome:
    """White-box success at least that of transfer from a surrogate (Athalye et al. 2018)."""
    return _versus_whitebox(p, "transfer_vs_whitebox", Knowledge.TRANSFER, "transfer",
                            "transfer")


@checks.register("blackbox_vs_whitebox")
def blackbox_vs_whitebox(p: Probes) -> SanityOutcome:
    """White-box success at least that of gradient-free attacks (Square, noise)."""
    return _versus_whitebox(p, "blackbox_vs_whitebox", Knowledge.BLACK_BOX, "square",
                            "square")


@checks.register("convergence")
def convergence(p: Probes) -> SanityOutcome:
    """Twice the PGD steps plus restarts add little success (the attack converged)."""
    return _worst("convergence",
                  [judge_convergence(base=p.pgd(t), stronger=p.stronger(t), threat=t.id,
                                     steps=p.settings.steps, restarts=CONVERGENCE_RESTARTS)
                   for t in p.threats], _NO_THREAT)


@checks.register("margin_vs_ce")
def margin_vs_ce(p: Probes) -> SanityOutcome:
    """PGD with the margin loss not far stronger than PGD-CE (no saturated softmax)."""
    return _worst("margin_vs_ce",
                  [judge_margin_vs_ce(ce=p.pgd(t), margin=p.margin(t), threat=t.id)
                   for t in p.threats], _NO_THREAT)


@checks.register("noise_vs_attack")
def noise_vs_attack(p: Probes) -> SanityOutcome:
    """Random noise of the same eps far weaker than the white-box attacks."""
    low = p.n_features < NOISE_MIN_FEATURES  # skipped: spare the probes
    none = np.zeros(0, dtype=bool)
    return _worst("noise_vs_attack",
                  [judge_noise_vs_attack(noise=none if low else p.noise(t),
                                         attack=none if low else p.white(t), threat=t.id,
                                         n_features=p.n_features)
                   for t in p.threats], _NO_THREAT)


@checks.register("gradient_norms")
def gradient_norms(p: Probes) -> SanityOutcome:
    """The loss's input gradient does not vanish on most probe points."""
    if not p.n:
        return _no_points("gradient_norms", None)
    return judge_gradient_norms(ce_norms=p.grad_norms("ce"),
                                margin_norms=p.grad_norms("margin"))
