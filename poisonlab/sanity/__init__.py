"""Sanity checks of an evasion evaluation: is the measured robustness real, or masked?

A defense can look robust because its gradients mislead the attacks rather than because
its decisions are hard to change: saturated softmax, zero or non-finite gradients,
non-differentiable layers (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a
False Sense of Security"). Carlini et al. 2019 ("On Evaluating Adversarial Robustness")
list the symptoms; each check below tests one and returns a
:class:`SanityOutcome`: ``status`` "pass", "flag" or "skipped", a one-line ``message`` with
the measured numbers, a documentation anchor (``docs/checks.md#<name>``) and the
``evidence`` (the numbers).

The checks mostly run *probes* themselves, on a seeded subset of at most ``n_probe``
correctly classified test points at the middle eps of each untargeted threat group, so
they work whatever attacks a suite declares; the transfer and black-box checks also
compare the suite's own attacks when it ran some. Every probe is a poisonlab attack
(FGSM, PGD, Noise, Transfer, Square) run with a child seed of ``seed``.

The judges (``judge_*``) are pure functions of per-sample success vectors; the registered
checks pick the probes they need from a :class:`Probes` (lazy, each probe runs once);
:func:`run_sanity` is the thin runner.

>>> from poisonlab.sanity import checks, judge_iterative_vs_single_step
>>> import numpy as np
>>> out = judge_iterative_vs_single_step(pgd=np.array([True] * 41 + [False] * 59),
...                                      fgsm=np.array([True] * 55 + [False] * 45),
...                                      threat="linf eps=0.1")
>>> out.status.value, out.doc
('flag', 'docs/checks.md#iterative_vs_single_step')
>>> "iterative_vs_single_step" in checks
True
"""

from .catalogue import checks
from .judges import (
    CONVERGENCE_GAIN,
    CONVERGENCE_RESTARTS,
    GRAD_FLOOR,
    GRAD_VANISHING,
    MARGIN_GAP,
    NOISE_MIN_FEATURES,
    NOISE_RATIO,
    NOISE_SAMPLES,
    ORDER_SLACK,
    SINGLE_STEP,
    SQUARE_ITERS,
    UNBOUNDED_MIN,
    SanityOutcome,
    Status,
    Z,
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
)
from .probes import Probes, SuiteAttack
from .run import SanityFailure, flag_lines, run_sanity
from .settings import ALL_CHECKS, SanitySettings

#: The names before issue 20 ("check" names the gate only); kept as aliases.
CheckOutcome = SanityOutcome
CheckSettings = SanitySettings
CheckFailure = SanityFailure
run_checks = run_sanity

__all__ = [
    "ALL_CHECKS",
    "CONVERGENCE_GAIN",
    "CONVERGENCE_RESTARTS",
    "GRAD_FLOOR",
    "GRAD_VANISHING",
    "MARGIN_GAP",
    "NOISE_MIN_FEATURES",
    "NOISE_RATIO",
    "NOISE_SAMPLES",
    "ORDER_SLACK",
    "SINGLE_STEP",
    "SQUARE_ITERS",
    "UNBOUNDED_MIN",
    "CheckFailure",
    "CheckOutcome",
    "CheckSettings",
    "Probes",
    "SanityFailure",
    "SanityOutcome",
    "SanitySettings",
    "Status",
    "SuiteAttack",
    "Z",
    "checks",
    "flag_lines",
    "is_multi_step",
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
    "run_sanity",
]
