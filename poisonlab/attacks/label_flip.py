"""Label-flip poisoning: the attacker changes a fraction of the training labels.

``flip_labels`` is the pure core; ``LabelFlip`` binds a :class:`PoisonThreat` and is
called with the data and a seed. A flip always moves a label to a different class, and
exactly ``round(rate * n)`` labels change (Python's ``round``: halves go to even).

Strategies
----------
random
    Choose ``round(rate * n)`` training points uniformly without replacement and move each
    label uniformly to one of the other K - 1 classes (symmetric label noise, as in
    Biggio et al. 2011's random flips).
pairwise
    Choose ``round(rate * n)`` points of class ``source`` and relabel them ``target``
    (the source->target flip of Paudice et al. 2018). The budget is a fraction of the whole
    training set, so on a balanced K-class set a rate near 1/K relabels nearly the whole
    source class; asking for more flips than the class has raises ``DataError``.

>>> y = torch.tensor([0, 1, 2, 0])
>>> r = flip_labels(y, rate=0.5, n_classes=3, rng=0)
>>> r.n_flipped, bool((r.y_poisoned[r.flipped] != y[r.flipped]).all())
(2, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import check_labels, check_scalar, check_seed, coerce_enum
from ..errors import ConfigError, DataError
from ..threat import FlipStrategy, PoisonThreat


@dataclass(frozen=True, eq=False)
class FlipResult:
    """Poisoned labels and which of them changed.

    Attributes
    ----------
    y_poisoned : int64 Tensor (n,)
    flipped : bool Tensor (n,)
        True exactly where ``y_poisoned != y``.
    threat : PoisonThreat; seed : int
    """

    y_poisoned: torch.Tensor
    flipped: torch.Tensor
    threat: PoisonThreat
    seed: int

    @property
    def n_flipped(self) -> int:
        return int(self.flipped.sum())


def flip_labels(
    y: Any,
    *,
    rate: float,
    n_classes: int,
    strategy: FlipStrategy | str = FlipStrategy.RANDOM,
    source: int | None = None,
    target: int | None = None,
    rng: int | np.random.Generator = 0,
) -> FlipResult:
    """Flip exactly ``round(rate * len(y))`` labels of ``y`` according to ``strategy``.

    Parameters
    ----------
    y : int Tensor or array (n,), class ids in ``0 .. n_classes - 1``
    rate : float in [0, 1)
    n_classes : int >= 2
    strategy : "random" | "pairwise"
    source, target : int, for "pairwise"
    rng : int seed or numpy Generator

    Returns
    -------
    FlipResult

    Raises
    ------
    ConfigError for bad parameters; DataError when the source class has too few labels.
    """
    threat = PoisonThreat(rate=rate, strategy=strategy, source=source, target=target)
    k = check_scalar("n_classes", n_classes, lo=2, integer=True)
    if isinstance(rng, np.random.Generator):
        gen, seed = rng, -1
    else:
        seed = check_seed("rng", rng)
        gen = np.random.default_rng(seed)
    y_t = check_labels(y, n_classes=k)
    y_np = y_t.cpu().numpy().astype(np.int64)
    n = len(y_np)
    n_flip = round(threat.rate * n)
    new = y_np.copy()
    strat = coerce_enum("strategy", threat.strategy, FlipStrategy)
    if strat is FlipStrategy.RANDOM:
        chosen = gen.choice(n, size=n_flip, replace=False)
        new[chosen] = (y_np[chosen] + gen.integers(1, k, size=n_flip)) % k
    else:
        source, target = int(threat.source or 0), int(threat.target or 0)  # set: pairwise
        for name, c in (("source", source), ("target", target)):
            if c >= k:
                raise ConfigError(f"{name}={c} is not allowed: expected a class id in [0, {k - 1}]")
        candidates = np.flatnonzero(y_np == source)
        if n_flip > len(candidates):
            raise DataError(
                f"rate={threat.rate:g} asks for {n_flip} pairwise flips but source class "
                f"{source} has {len(candidates)} training labels: expected "
                f"rate <= {len(candidates) / max(n, 1):.4f}"
            )
        chosen = gen.choice(candidates, size=n_flip, replace=False)
        new[chosen] = target
    y_new = torch.from_numpy(new).to(y_t.device)
    return FlipResult(y_poisoned=y_new, flipped=y_new != y_t, threat=threat, seed=seed)


class LabelFlip:
    """A label-flip attack bound to its threat: ``LabelFlip(threat)(x, y, n_classes=, seed=)``.

    >>> out = LabelFlip(PoisonThreat(rate=0.2))(None, torch.arange(10) % 2, n_classes=2)
    >>> out.n_flipped
    2
    """

    def __init__(self, threat: PoisonThreat) -> None:
        if not isinstance(threat, PoisonThreat):
            raise ConfigError(f"threat={threat!r} is not allowed: expected a PoisonThreat")
        self.threat = threat

    def __repr__(self) -> str:
        return f"LabelFlip({self.threat.id!r})"

    def __call__(self, x: Any, y: Any, *, n_classes: int, seed: int = 0) -> FlipResult:
        """Poison ``y``; ``x`` is accepted for strategies that look at the inputs."""
        t = self.threat
        return flip_labels(y, rate=t.rate, n_classes=n_classes, strategy=t.strategy,
                           source=t.source, target=t.target, rng=seed)
