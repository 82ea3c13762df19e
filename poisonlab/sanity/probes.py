"""The probes of the sanity checks: lazy attacks on a seeded subset of test points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._torch import child_seeds, eval_mode, model_device
from .._validation import validate_inputs
from ..attacks import FGSM, PGD, AttackResult, Noise, get_attack
from ..attacks.losses import LOSSES
from ..batching import DEFAULT_BATCH_SIZE, iter_slices, validate_batch_size
from ..errors import ConfigError
from ..metrics import predict_logits
from ..threat import EvasionThreat, Knowledge, Norm
from .judges import CONVERGENCE_RESTARTS, NOISE_SAMPLES, SQUARE_ITERS
from .settings import SanitySettings

# --------------------------------------------------------------------------- probes

#: Child seeds of the checks' seed, by purpose (append only: children are index-stable).
_PROBE_SLOTS = ("subset", "pgd", "margin", "convergence", "noise", "unbounded", "transfer",
                "square")


@dataclass(frozen=True, eq=False)
class SuiteAttack:
    """One of the suite's own attacks under one threat, as measure.py measured it."""

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
                 groups: Sequence[Sequence[EvasionThreat]], settings: SanitySettings,
                 seed: int, suite_results: Sequence[SuiteAttack] = (),
                 surrogate: Callable[[], nn.Module] | None = None,
                 batch_size: int | None = DEFAULT_BATCH_SIZE) -> None:
        self.model = model
        self.settings = settings
        self.batch_size = validate_batch_size("batch_size", batch_size)
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
        x, y = validate_inputs(x, y)
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
        from ..attacks.transfer import Transfer

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
