"""AutoAttack: the ensemble that robustness leaderboards report (Croce & Hein 2020).

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks" (ICML); RobustBench (Croce et al. 2021) reports robust
accuracy under its ``standard`` version.

The components run in order, each only on the points that every earlier one left robust,
and a point counts as fooled by the first component that fools it (the worst case per
point). Points misclassified on the clean input are not attacked. Versions:

- ``standard``: APGD-CE (100 steps, no restarts) -> APGD-T (9 target classes, 100 steps) ->
  FAB-T (9 target classes, 100 steps) -> Square (5000 queries); Square needs image inputs
  (n, C, H, W) and is left out for flat ones (the result's ``components`` says what ran).
- ``fast`` (for CI): APGD-CE -> APGD-T.

Under a targeted threat: APGD-CE and APGD-DLR with the targeted losses, targeted FAB and
targeted Square (``standard``), or the two APGDs (``fast``). The targeted DLR loss needs
at least 4 classes; with fewer, APGD-DLR is left out.

Each component draws from its own per-sample streams (a child seed of the call's seed per
component), so the ensemble is batch-size invariant like its parts.
:attr:`~poisonlab.attacks.base.AttackResult.found_by` and
:meth:`~poisonlab.attacks.base.AttackResult.breakdown` say which component found each point.

>>> AutoAttack(version="fast").components(image=True, targeted=False, n_classes=10)
('apgd-ce', 'apgd-t')
>>> AutoAttack().components(image=False, targeted=True, n_classes=3)
('apgd-ce', 'fab')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .._torch import child_seeds
from .._validation import validate_choice, validate_scalar
from .apgd import APGD, APGDT
from .base import Attack
from .fab import FAB
from .geometry import SampleRNG, project
from .losses import is_success
from .square import Square

VERSIONS = ("standard", "fast")


@dataclass(frozen=True)
class AutoAttack(Attack):
    """APGD-CE, APGD-T, FAB-T and Square, each on the points still robust.

    Parameters
    ----------
    version : "standard" | "fast"
        See the module docstring.
    steps : int >= 1
        Iterations of the APGDs and FAB (the paper's 100).
    n_target_classes : int >= 1
        Target classes of APGD-T and FAB-T (9).
    square_queries : int >= 1
        Queries of Square (5000).

    >>> res = AutoAttack()(model, x, y, threat=EvasionThreat(eps=8 / 255))  # doctest: +SKIP
    >>> res.breakdown()  # doctest: +SKIP
    {'apgd-ce': 412, 'apgd-t': 9, 'fab-t': 0, 'square': 1}
    """

    name: ClassVar[str] = "autoattack"
    version: str = "standard"
    steps: int = 100
    n_target_classes: int = 9
    square_queries: int = 5000

    def __post_init__(self) -> None:
        validate_choice("version", self.version, VERSIONS)
        object.__setattr__(self, "steps", validate_scalar("steps", self.steps, lo=1, integer=True))
        object.__setattr__(self, "n_target_classes", validate_scalar(
            "n_target_classes", self.n_target_classes, lo=1, integer=True))
        object.__setattr__(self, "square_queries", validate_scalar(
            "square_queries", self.square_queries, lo=1, integer=True))

    def parts(self, *, image: bool, targeted: bool,
              n_classes: int) -> list[tuple[str, Attack]]:
        """The components (name, attack) for inputs of this kind, this targeting and a
        model with ``n_classes`` outputs."""
        s, k = self.steps, self.n_target_classes
        if targeted:
            out: list[tuple[str, Attack]] = [("apgd-ce", APGD(steps=s, loss="ce"))]
            if n_classes >= 4:  # the targeted DLR loss's denominator needs 4 classes
                out.append(("apgd-dlr", APGD(steps=s, loss="dlr")))
            if self.version == "standard":
                out.append(("fab", FAB(steps=s)))
        else:
            out = [("apgd-ce", APGD(steps=s, loss="ce")),
                   ("apgd-t", APGDT(steps=s, n_target_classes=k))]
            if self.version == "standard":
                out.append(("fab-t", FAB(steps=s, runner_ups=True, n_target_classes=k)))
        if self.version == "standard" and image:
            out.append(("square", Square(n_queries=self.square_queries)))
        return out

    def components(self, *, image: bool, targeted: bool, n_classes: int) -> tuple[str, ...]:
        return tuple(n for n, _ in self.parts(image=image, targeted=targeted,
                                              n_classes=n_classes))

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        x_adv, grads, _ = self._perturb_detail(model, x, y, threat=threat, target=target,
                                               rng=rng)
        return x_adv, grads

    def _perturb_detail(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            logits = model(x)
        parts = self.parts(image=x.dim() == 4, targeted=target is not None,
                           n_classes=int(logits.shape[1]))
        seeds = child_seeds(rng.seed, len(parts))
        robust = ~is_success(logits.argmax(dim=1), y, target)
        found = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
        x_adv = x.clone()
        gradients = 0
        for i, (_, attack) in enumerate(parts):
            todo = torch.nonzero(robust).flatten()
            if todo.numel() == 0:
                break
            xt, yt = x[todo], y[todo]
            tt = None if target is None else target[todo]
            sub = SampleRNG(seeds[i], rng.index[todo.cpu()])
            xa, g = attack._perturb(model, xt, yt, threat=threat, target=tt, rng=sub)
            gradients += g
            xa = project(xt, xa.detach(), threat, clip=attack._clip())
            with torch.no_grad():
                ok = is_success(model(xa).argmax(dim=1), yt, tt)
            if i == 0:  # the robust points keep APGD-CE's highest-loss point
                x_adv[todo] = xa
            x_adv[todo[ok]] = xa[ok]
            found[todo[ok]] = i
            robust[todo[ok]] = False
        return x_adv, gradients, found
