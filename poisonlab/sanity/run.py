"""The runner of the sanity checks and what it returns to the harness.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._text import spec_label
from .._torch import probes_quiet
from .._validation import validate_seed
from ..batching import DEFAULT_BATCH_SIZE, validate_batch_size
from ..errors import PoisonlabError
from ..threat import EvasionThreat
from .catalogue import checks
from .judges import SanityOutcome, Status, _skipped
from .probes import Probes, SuiteAttack
from .settings import SanitySettings

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- runner


def run_sanity(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    groups: Sequence[Sequence[EvasionThreat]],
    settings: SanitySettings | Mapping[str, Any] | None = None,
    seed: int = 0,
    suite_results: Sequence[SuiteAttack] = (),
    surrogate: Callable[[], nn.Module] | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> list[SanityOutcome]:
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
    settings : SanitySettings or mapping (a suite's ``checks:`` block), optional
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
    list of SanityOutcome, in ``settings.enabled`` order. Flags are also logged at INFO.
    """
    settings = SanitySettings.from_config(settings)
    seed = validate_seed("seed", seed)
    batch_size = validate_batch_size("batch_size", batch_size)
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


class SanityFailure(PoisonlabError):
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
