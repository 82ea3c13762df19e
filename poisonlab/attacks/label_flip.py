"""Label-flip poisoning: the attacker changes a fraction of the training labels.

``flip_labels`` is the pure core; ``LabelFlip`` binds a :class:`PoisonThreat` (the budget)
and its algorithm settings, and is called with the data and a seed. A flip always moves a
label to a different class, and exactly ``round(rate * n)`` labels change (Python's
``round``: halves go to even), whatever the strategy. With ``max_per_class`` set, at most
``floor(max_per_class * n_j)`` labels of each training class ``j`` flip; when the caps
cannot hold the whole budget, ``DataError`` says so (the budget is never silently cut).

Strategies
----------
random
    Choose ``round(rate * n)`` training points uniformly without replacement and move each
    label uniformly to one of the other K - 1 classes (symmetric label noise, as in
    Biggio et al. 2011's random flips). With a cap: a uniformly random order of the points,
    skipping those whose class is full.
pairwise
    Choose ``round(rate * n)`` points of class ``source`` and relabel them ``target``
    (the source->target flip of Paudice et al. 2018). The budget is a fraction of the whole
    training set, so on a balanced K-class set a rate near 1/K relabels nearly the whole
    source class; asking for more flips than the class has (or its cap allows) raises
    ``DataError``.
noise_matrix
    Class-conditional noise with the *shape* of a K x K matrix in cleanlab's convention,
    ``T[i][j] = P(observed label = i | true label = j)``, and the *size* ``rate``: the
    ``round(rate * n)`` flips are split over source classes in proportion to
    ``n_j * (1 - T[j][j])`` and, within source ``j``, over destinations ``i != j`` in
    proportion to ``T[i][j]``, both as exact integers by largest-remainder rounding
    (exact rational arithmetic, ties to the lower class id; a class whose share exceeds
    its labels or cap is clamped and the rest re-split). Which points of a class flip is
    uniformly random. A class whose off-diagonal column is zero never flips.
margin
    Fit a surrogate on the clean labels and flip the points it is most confident about,
    by the margin ``p_y - max_{c != y} p_c`` (largest first, ties to the lower index),
    each to its runner-up class ``argmax_{c != y} p_c``: the attacker's cheap heuristic.
    One surrogate fit; no randomness with the default surrogate.
adversarial
    ALFA (Xiao et al. 2012, "Adversarial Label Flips Attack on Support Vector Machines"):
    choose the flips that most increase the surrogate's loss on clean validation data,
    greedily in batches. Each round scores every candidate flip ``i -> c`` by the
    influence-function estimate (Koh & Liang 2017, "Understanding Black-box Predictions via
    Influence Functions") of the change in validation loss. With
    ``v = (H + damping I)^{-1} grad L_val`` (H: Hessian of the regularised training loss)
    and cross-entropy, relabelling ``i`` from ``y_i`` to ``c`` changes the validation loss
    by about ``(u_ic - u_iy_i) / n`` where ``u_i = J_i v`` is the directional derivative of
    the logits of ``x_i`` along ``v``; for softmax regression ``u_i = V x_i``. The best
    ``batch_size`` points (one destination each, the best one) flip, the surrogate is
    refitted from where it was, and the loop repeats until the budget is spent. Points flip
    at most once. Without ``x_val``/``y_val`` the objective is the loss on the clean
    *training* labels, which is ALFA's original objective.

Surrogates
----------
``"logistic"`` (default) is multinomial logistic (softmax) regression on the flattened
inputs plus a bias, fitted exactly (Newton's method with a line search, float64, L2 penalty
``l2 / 2 * ||W||^2``; no randomness), with the exact Hessian factorised once per refit.
Cost per ALFA round: O(n K^2 d^2) for each Hessian (one or two per round) and O((K d)^3)
for its Cholesky factor, d = features + 1, plus O(n K d) to score every candidate flip; the
number of rounds is ``ceil(round(rate * n) / batch_size)``. Measured on scikit-learn's digits
(n = 1167, d = 65, K = 10) at rate 0.2 (233 flips, 15 rounds of 16), 2 shared CPU cores:
about 1.6 s for ``adversarial`` and 0.1-0.2 s for ``margin`` (one fit). An MLP trained on
those labels for 30 epochs loses about 0.20 test accuracy to ``adversarial``, 0.07 to
``margin`` and 0.01 to ``random`` flips (mean over seeds 0, 1, 2).

Any other registered model name (``"mlp"``, ``"cnn"``...), an ``nn.Module`` (trained from
its current weights; the caller's module is left untouched) or a callable ``seed -> nn.Module``
is trained with :func:`poisonlab.training.train` (Adam, ``epochs`` then ``refit_epochs`` per
round, ``weight_decay = l2``) and the influence solve uses conjugate gradient with
Hessian-vector products (double backward, full batch in chunks of 1024) for at most
``cg_steps`` steps, stopping at negative curvature. Each ALFA round then costs
``refit_epochs`` epochs of training plus up to ``cg_steps`` double-backward passes over the
training set: with ``surrogate="mlp"`` (two hidden layers of 128) and the default settings,
the digits case above took about 40 s instead of 1.6 s.

Devices
-------
Label flips run on the CPU: the labels are read back to the CPU, every draw comes from a
numpy generator and the default surrogate is fitted on the CPU in float64, so the flips
do not depend on where the data lives. ``x``, ``y``, ``x_val`` and ``y_val`` may be
tensors on any device (or numpy arrays); ``y_poisoned`` and ``flipped`` come back on the
device of ``y``, ``flip_counts`` on the CPU. A module surrogate trains where its weights
live (the inputs are moved there and cast to its dtype): a registered name builds it on
the CPU, an ``nn.Module`` is copied on its own device, a callable's model stays where the
callable put it.

>>> y = torch.tensor([0, 1, 2, 0])
>>> r = flip_labels(y, rate=0.5, n_classes=3, rng=0)
>>> r.n_flipped, bool((r.y_poisoned[r.flipped] != y[r.flipped]).all())
(2, True)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import (
    check_choice,
    check_inputs,
    check_labels,
    check_scalar,
    check_seed,
)
from ..errors import ConfigError, DataError
from ..models import build_model, eval_mode, models
from ..threat import FlipStrategy, PoisonThreat
from ..training import model_device, output_width, train

#: A surrogate: a registered model name, a model, or a factory ``seed -> model``.
Surrogate = str | nn.Module | Callable[[int], nn.Module]

_CHUNK = 1024  # samples per forward pass in the influence computations of module surrogates


@dataclass(frozen=True, eq=False)
class FlipResult:
    """Poisoned labels and which of them changed.

    Attributes
    ----------
    y_poisoned : int64 Tensor (n,), on the device of the labels given
    flipped : bool Tensor (n,), on the same device
        True exactly where ``y_poisoned != y``.
    threat : PoisonThreat; seed : int
        ``seed`` is -1 when a numpy Generator was passed instead of a seed.
    flip_counts : int64 Tensor (K, K), on the CPU
        ``flip_counts[i, j]``: labels of true class ``j`` now labelled ``i`` (the convention
        of ``noise_matrix``); the diagonal is zero and the total is ``n_flipped``.
    """

    y_poisoned: torch.Tensor
    flipped: torch.Tensor
    threat: PoisonThreat
    seed: int
    flip_counts: torch.Tensor | None = None

    @property
    def n_flipped(self) -> int:
        return int(self.flipped.sum())


@dataclass(frozen=True)
class FlipSettings:
    """Algorithm settings of the surrogate-based strategies (``margin``, ``adversarial``).

    Built and validated by :class:`LabelFlip` and :func:`flip_labels`; see ``LabelFlip``.
    """

    surrogate: Surrogate = "logistic"
    batch_size: int = 16
    l2: float = 1e-3
    damping: float = 0.0
    epochs: int = 30
    refit_epochs: int = 5
    lr: float = 1e-3
    cg_steps: int = 100

    def __post_init__(self) -> None:
        s = self.surrogate
        if isinstance(s, str):
            check_choice("surrogate", s, models.names())
        elif not isinstance(s, nn.Module) and not callable(s):
            raise ConfigError(
                f"surrogate={s!r} is not allowed: expected a model name "
                f"({', '.join(models.names())}), an nn.Module or a callable seed -> nn.Module"
            )
        for name, lo, integer, lo_closed in (
            ("batch_size", 1, True, True), ("l2", 0, False, False), ("damping", 0, False, True),
            ("epochs", 1, True, True), ("refit_epochs", 1, True, True),
            ("lr", 0, False, False), ("cg_steps", 1, True, True),
        ):
            value = check_scalar(name, getattr(self, name), lo=lo, integer=integer,
                                 lo_closed=lo_closed)
            object.__setattr__(self, name, value)


def flip_labels(
    y: Any,
    *,
    rate: float,
    n_classes: int,
    strategy: FlipStrategy | str = FlipStrategy.RANDOM,
    source: int | None = None,
    target: int | None = None,
    noise_matrix: Any = None,
    max_per_class: float | None = None,
    x: Any = None,
    x_val: Any = None,
    y_val: Any = None,
    surrogate: Surrogate = "logistic",
    batch_size: int = 16,
    l2: float = 1e-3,
    damping: float = 0.0,
    epochs: int = 30,
    refit_epochs: int = 5,
    lr: float = 1e-3,
    cg_steps: int = 100,
    rng: int | np.random.Generator = 0,
) -> FlipResult:
    """Flip exactly ``round(rate * len(y))`` labels of ``y`` according to ``strategy``.

    The strategies, their papers and their costs are described in the module docstring.

    Parameters
    ----------
    y : int Tensor or array (n,), class ids in ``0 .. n_classes - 1``
    rate : float in [0, 1)
    n_classes : int >= 2
    strategy : "random" | "pairwise" | "noise_matrix" | "margin" | "adversarial"
    source, target : int, for "pairwise"
    noise_matrix : K x K nested sequence or array, for "noise_matrix"
        ``noise_matrix[i][j] = P(observed i | true j)``, columns summing to 1, K = n_classes.
    max_per_class : float in (0, 1], optional
        At most ``floor(max_per_class * n_j)`` flips in each class j (pairwise: the source).
    x : Tensor or array (n, *input_shape), required by "margin" and "adversarial"
    x_val, y_val : Tensor or array (m, *input_shape) and (m,), optional
        Clean validation data whose loss "adversarial" increases; default: ``(x, y)``.
    surrogate, batch_size, l2, damping, epochs, refit_epochs, lr, cg_steps
        Algorithm settings of "margin" and "adversarial"; see :class:`LabelFlip`.
    rng : int seed or numpy Generator
        The only source of randomness (numpy for the draws; module surrogates are
        initialised and trained from seeds drawn from it).

    Returns
    -------
    FlipResult
        ``y_poisoned`` on the device of ``y``.

    Raises
    ------
    ConfigError
        Bad parameters, a noise matrix whose size is not ``n_classes``, or ``x`` missing
        for "margin"/"adversarial".
    DataError
        Malformed labels or inputs, or a budget the classes (or their caps) cannot hold.

    >>> y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    >>> r = flip_labels(y, rate=0.25, n_classes=2, strategy="noise_matrix",
    ...                 noise_matrix=[[1.0, 0.5], [0.0, 0.5]], rng=0)
    >>> r.flip_counts.tolist()  # column 0 has no off-diagonal mass: class 0 never flips
    [[0, 2], [0, 0]]
    """
    threat = PoisonThreat(rate=rate, strategy=strategy, source=source, target=target,
                          noise_matrix=noise_matrix, max_per_class=max_per_class)
    settings = FlipSettings(surrogate=surrogate, batch_size=batch_size, l2=l2, damping=damping,
                            epochs=epochs, refit_epochs=refit_epochs, lr=lr, cg_steps=cg_steps)
    return _flip(threat, y, n_classes=n_classes, x=x, x_val=x_val, y_val=y_val,
                 settings=settings, rng=rng, rng_name="rng")


class LabelFlip:
    """A label-flip attack bound to its threat: ``LabelFlip(threat)(x, y, n_classes=, seed=)``.

    The threat holds the budget (rate, strategy, source/target, noise matrix, per-class
    cap); the constructor holds the algorithm settings, which only "margin" and
    "adversarial" use.

    Parameters
    ----------
    threat : PoisonThreat
    surrogate : str | nn.Module | callable seed -> nn.Module
        The attacker's model. ``"logistic"`` (default): exact softmax regression (Newton,
        float64, exact Hessian). Another registered name: ``build_model(name, ...)`` seeded
        from the call's seed. An ``nn.Module``: a copy is trained from its current weights.
        A callable: called as ``surrogate(seed)`` and must build its weights from that seed
        only (``lambda s: build_model("mlp", shape, k, seed=s)``). Module surrogates cost
        far more (see the module docstring) and train under
        :func:`poisonlab.training.train`; a module whose forward pass draws random numbers
        (dropout in training mode) draws them from torch's global generator.
    batch_size : int >= 1
        Flips per ALFA round; smaller is closer to one-at-a-time greedy and slower.
    l2 : float > 0
        L2 penalty ``l2 / 2 * ||theta||^2`` of the surrogate (Adam's ``weight_decay`` for
        module surrogates); keeps the softmax-regression Hessian invertible.
    damping : float >= 0
        Added to the Hessian's diagonal in the influence solve (Koh & Liang's damping);
        worth raising (e.g. 0.01) for non-convex module surrogates.
    epochs, refit_epochs : int >= 1
        Training epochs of a module surrogate: first fit, then the warm refit of each round.
    lr : float > 0
        Adam learning rate of a module surrogate.
    cg_steps : int >= 1
        Conjugate-gradient steps of the influence solve for module surrogates.

    >>> out = LabelFlip(PoisonThreat(rate=0.2))(None, torch.arange(10) % 2, n_classes=2)
    >>> out.n_flipped
    2
    >>> x = torch.tensor([[0.0], [0.4], [1.0], [1.6]])
    >>> out = LabelFlip(PoisonThreat(rate=0.5, strategy="margin"))(
    ...     x, torch.tensor([0, 0, 1, 1]), n_classes=2)
    >>> out.y_poisoned.tolist()  # the most confident point of each class moved
    [1, 0, 1, 0]
    """

    def __init__(
        self,
        threat: PoisonThreat,
        *,
        surrogate: Surrogate = "logistic",
        batch_size: int = 16,
        l2: float = 1e-3,
        damping: float = 0.0,
        epochs: int = 30,
        refit_epochs: int = 5,
        lr: float = 1e-3,
        cg_steps: int = 100,
    ) -> None:
        if not isinstance(threat, PoisonThreat):
            raise ConfigError(f"threat={threat!r} is not allowed: expected a PoisonThreat")
        self.threat = threat
        self.settings = FlipSettings(
            surrogate=surrogate, batch_size=batch_size, l2=l2, damping=damping, epochs=epochs,
            refit_epochs=refit_epochs, lr=lr, cg_steps=cg_steps,
        )

    def __repr__(self) -> str:
        default = FlipSettings()
        extra = "".join(
            f", {f.name}={getattr(self.settings, f.name)!r}" for f in fields(FlipSettings)
            if getattr(self.settings, f.name) != getattr(default, f.name)
        )
        return f"LabelFlip({self.threat.id!r}{extra})"

    def __call__(
        self,
        x: Any,
        y: Any,
        *,
        n_classes: int,
        seed: int = 0,
        x_val: Any = None,
        y_val: Any = None,
    ) -> FlipResult:
        """Poison ``y``; ``x`` (and ``x_val``, ``y_val``) feed the surrogate strategies.

        ``x`` may be ``None`` for "random", "pairwise" and "noise_matrix". The data may
        live on any device: the flips are computed on the CPU (see the module docstring)
        and ``y_poisoned`` comes back on the device of ``y``.
        """
        seed = check_seed("seed", seed)
        return _flip(self.threat, y, n_classes=n_classes, x=x, x_val=x_val, y_val=y_val,
                     settings=self.settings, rng=seed, rng_name="seed")


# --------------------------------------------------------------------------- core


@dataclass
class _Context:
    """What a strategy needs: the validated labels, budget, caps and randomness."""

    threat: PoisonThreat
    y: np.ndarray  # int64 (n,)
    y_t: torch.Tensor  # int64 (n,), as given
    k: int
    n_flip: int
    caps: np.ndarray  # int64 (k,): most flips each class allows
    gen: np.random.Generator
    x: Any
    x_val: Any
    y_val: Any
    settings: FlipSettings

    def inputs(self) -> torch.Tensor:
        if self.x is None:
            strategy = FlipStrategy(self.threat.strategy).value
            raise ConfigError(
                f"x=None is not allowed: strategy {strategy!r} needs the training inputs "
                "(call with x=...)"
            )
        x_t, _ = check_inputs(self.x, self.y_t, n_classes=self.k)
        return x_t

    def validation(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean validation data, or the clean training data when none was given."""
        if self.x_val is None:
            return x_t, self.y_t.cpu()
        xv, yv = check_inputs(self.x_val, self.y_val, n_classes=self.k,
                              name_x="x_val", name_y="y_val")
        if xv.shape[1:] != x_t.shape[1:]:
            raise DataError(
                f"x_val has input shape {tuple(xv.shape[1:])}: expected "
                f"{tuple(x_t.shape[1:])} to match x"
            )
        return xv, yv.cpu()


def _flip(
    threat: PoisonThreat,
    y: Any,
    *,
    n_classes: int,
    x: Any,
    x_val: Any,
    y_val: Any,
    settings: FlipSettings,
    rng: int | np.random.Generator,
    rng_name: str,
) -> FlipResult:
    if isinstance(rng, np.random.Generator):
        gen, seed = rng, -1
    else:
        seed = check_seed(rng_name, rng)
        gen = np.random.default_rng(seed)
    if (x_val is None) != (y_val is None):
        given, missing = ("x_val", "y_val") if y_val is None else ("y_val", "x_val")
        raise ConfigError(f"{missing}=None is not allowed with {given} given: expected both "
                          "or neither")
    ctx = _context(threat, y, n_classes, gen, x=x, x_val=x_val, y_val=y_val,
                   settings=settings)
    y_np, y_t, k = ctx.y, ctx.y_t, ctx.k
    new = _STRATEGIES[FlipStrategy(threat.strategy)](ctx)
    y_new = torch.from_numpy(new).to(y_t.device)
    changed = new != y_np
    flip_counts = np.bincount(new[changed] * k + y_np[changed], minlength=k * k).reshape(k, k)
    return FlipResult(y_poisoned=y_new, flipped=y_new != y_t, threat=threat, seed=seed,
                      flip_counts=torch.from_numpy(flip_counts.astype(np.int64)))


def _context(threat: PoisonThreat, y: Any, n_classes: int, gen: np.random.Generator, *,
             x: Any = None, x_val: Any = None, y_val: Any = None,
             settings: FlipSettings | None = None) -> _Context:
    """The validated labels, the budget round(rate * n) and the per-class caps."""
    k = check_scalar("n_classes", n_classes, lo=2, integer=True)
    y_t = check_labels(y, n_classes=k)
    y_np = y_t.cpu().numpy().astype(np.int64)
    counts = np.bincount(y_np, minlength=k)
    cap = threat.max_per_class
    caps = counts if cap is None else np.floor(cap * counts + 1e-9).astype(np.int64)
    return _Context(threat=threat, y=y_np, y_t=y_t, k=k, n_flip=round(threat.rate * len(y_np)),
                    caps=caps, gen=gen, x=x, x_val=x_val, y_val=y_val,
                    settings=settings or FlipSettings())


#: Strategies cheap enough to run in full when only their budget is checked.
_LABELS_ONLY = (FlipStrategy.RANDOM, FlipStrategy.PAIRWISE, FlipStrategy.NOISE_MATRIX)


def check_flip_budget(threat: PoisonThreat, y: Any, *, n_classes: int) -> None:
    """Raise what flipping ``y`` under ``threat`` would raise about its budget, cheaply.

    The checks that depend on the data (class ids within ``n_classes``, more pairwise
    flips than the source class has, per-class caps too small for the budget, a noise
    matrix of another size) run before any cell: ``random``, ``pairwise`` and
    ``noise_matrix`` are run on the labels alone (milliseconds), ``margin`` and
    ``adversarial`` have their caps checked without training their surrogate.

    >>> check_flip_budget(PoisonThreat(rate=0.5, strategy="pairwise", source=0, target=1),
    ...                   np.array([0, 1, 1, 1]), n_classes=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    poisonlab.errors.DataError: rate=0.5 asks for 2 pairwise flips but source class 0 has 1 ...
    """
    strategy = FlipStrategy(threat.strategy)
    ctx = _context(threat, y, n_classes, np.random.default_rng(0))
    if strategy in _LABELS_ONLY:
        _STRATEGIES[strategy](ctx)
    elif threat.max_per_class is not None:
        _check_capacity(ctx)


def _check_capacity(ctx: _Context) -> None:
    """Raise DataError when the per-class caps cannot hold the whole budget."""
    total = int(ctx.caps.sum())
    if ctx.n_flip > total:
        n = len(ctx.y)
        raise DataError(
            f"max_per_class={ctx.threat.max_per_class:g} allows at most {total} flips "
            f"(floor({ctx.threat.max_per_class:g} * n_j) per class) but rate="
            f"{ctx.threat.rate:g} asks for {ctx.n_flip} of {n}: expected rate <= "
            f"{total / max(n, 1):.4f} or a larger max_per_class"
        )


def _first_within_caps(order: np.ndarray, classes: np.ndarray, room: np.ndarray,
                       m: int) -> np.ndarray:
    """The first ``m`` entries of ``order`` taken in turn while their class has room.

    ``classes[order[t]]`` is the class of the t-th entry; a class ``c`` accepts at most
    ``room[c]`` entries. Equivalent to walking ``order`` and skipping full classes.
    """
    cls = classes[order]
    rank = np.empty(len(order), dtype=np.int64)
    for c in np.unique(cls):
        where = cls == c
        rank[where] = np.arange(int(where.sum()))
    taken = order[rank < room[cls]]
    return taken[:m]


def _random(ctx: _Context) -> np.ndarray:
    y, k, n_flip, gen = ctx.y, ctx.k, ctx.n_flip, ctx.gen
    if ctx.threat.max_per_class is None:
        chosen = gen.choice(len(y), size=n_flip, replace=False)
    else:
        _check_capacity(ctx)
        chosen = _first_within_caps(gen.permutation(len(y)), y, ctx.caps, n_flip)
    new = y.copy()
    new[chosen] = (y[chosen] + gen.integers(1, k, size=n_flip)) % k
    return new


def _pairwise(ctx: _Context) -> np.ndarray:
    t, y, k, n_flip = ctx.threat, ctx.y, ctx.k, ctx.n_flip
    source, target = int(t.source or 0), int(t.target or 0)  # both set: pairwise
    for name, c in (("source", source), ("target", target)):
        if c >= k:
            raise ConfigError(f"{name}={c} is not allowed: expected a class id in [0, {k - 1}]")
    candidates = np.flatnonzero(y == source)
    n = len(y)
    if n_flip > len(candidates):
        raise DataError(
            f"rate={t.rate:g} asks for {n_flip} pairwise flips but source class "
            f"{source} has {len(candidates)} training labels: expected "
            f"rate <= {len(candidates) / max(n, 1):.4f}"
        )
    if t.max_per_class is not None and n_flip > ctx.caps[source]:
        raise DataError(
            f"rate={t.rate:g} asks for {n_flip} pairwise flips but max_per_class="
            f"{t.max_per_class:g} allows {ctx.caps[source]} of source class {source}'s "
            f"{len(candidates)} training labels: expected rate <= "
            f"{ctx.caps[source] / max(n, 1):.4f} or a larger max_per_class"
        )
    chosen = ctx.gen.choice(candidates, size=n_flip, replace=False)
    new = y.copy()
    new[chosen] = target
    return new


def largest_remainder(total: int, weights: Sequence[float | Fraction],
                      capacity: Sequence[int]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights``, never beyond ``capacity``.

    Hamilton's largest-remainder method in exact rational arithmetic: each entry gets the
    floor of its quota ``total * w_j / sum(w)``, and the units left over go to the largest
    remainders (ties to the lower index). An entry whose share exceeds its capacity gets
    its capacity and the rest is re-split over the others. Entries with zero weight get
    nothing.

    Raises
    ------
    DataError
        When the capacities of the positive-weight entries sum to less than ``total``.

    >>> largest_remainder(10, [1, 1, 1], [10, 10, 10])
    [4, 3, 3]
    >>> largest_remainder(10, [1, 1, 2], [10, 10, 3])
    [4, 3, 3]
    """
    w = [Fraction(v) for v in weights]
    alloc = [0] * len(w)
    active = [j for j, v in enumerate(w) if v > 0 and capacity[j] > 0]
    room = sum(capacity[j] for j in active)
    if total > room:
        raise DataError(f"total={total} is not allowed: the entries with positive weight hold "
                        f"{room}")
    remaining = total
    while remaining > 0:
        wsum = sum(w[j] for j in active)
        quota = {j: remaining * w[j] / wsum for j in active}
        share = {j: math.floor(quota[j]) for j in active}
        left = remaining - sum(share.values())
        for j in sorted(active, key=lambda j: (share[j] - quota[j], j))[:left]:
            share[j] += 1
        over = [j for j in active if share[j] > capacity[j]]
        if not over:
            for j in active:
                alloc[j] = share[j]
            break
        for j in over:
            alloc[j] = capacity[j]
            remaining -= capacity[j]
            active.remove(j)
    return alloc


def _noise_matrix(ctx: _Context) -> np.ndarray:
    t, y, k, n_flip = ctx.threat, ctx.y, ctx.k, ctx.n_flip
    matrix = t.noise_matrix or ()
    if len(matrix) != k:
        raise ConfigError(
            f"noise_matrix is {len(matrix)}x{len(matrix)}: expected {k}x{k} to match "
            f"n_classes={k}"
        )
    counts = np.bincount(y, minlength=k)
    off = [any(matrix[i][j] > 0 for i in range(k) if i != j) for j in range(k)]
    weights = [Fraction(int(counts[j])) * Fraction(max(0.0, 1.0 - matrix[j][j])) if off[j]
               else Fraction(0) for j in range(k)]
    room = sum(int(ctx.caps[j]) for j in range(k) if weights[j] > 0)
    if n_flip > room:
        cap = "" if t.max_per_class is None else f" under max_per_class={t.max_per_class:g}"
        movable = [j for j in range(k) if weights[j] > 0]
        raise DataError(
            f"rate={t.rate:g} asks for {n_flip} flips but the classes noise_matrix lets flip "
            f"({movable}) hold {room} labels{cap}: expected rate <= {room / max(len(y), 1):.4f}"
        )
    per_source = largest_remainder(n_flip, weights, [int(c) for c in ctx.caps])
    new = y.copy()
    for j, m in enumerate(per_source):
        if m == 0:
            continue
        dest_w = [0.0 if i == j else matrix[i][j] for i in range(k)]
        per_dest = largest_remainder(m, dest_w, [m] * k)
        chosen = ctx.gen.choice(np.flatnonzero(y == j), size=m, replace=False)
        new[chosen] = np.repeat(np.arange(k), per_dest)
    return new


def _margin(ctx: _Context) -> np.ndarray:
    x_t = ctx.inputs()
    _check_capacity(ctx)
    new = ctx.y.copy()
    if ctx.n_flip == 0:
        return new
    surrogate = _make_surrogate(ctx, x_t)
    surrogate.fit(ctx.y_t.cpu())
    margin, runner_up = margins(surrogate.proba(), ctx.y_t.cpu())
    order = np.argsort(-margin.numpy(), kind="stable")
    chosen = _first_within_caps(order, ctx.y, ctx.caps, ctx.n_flip)
    new[chosen] = runner_up.numpy()[chosen]
    return new


def margins(probs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample margin ``p_y - max_{c != y} p_c`` and the runner-up ``argmax_{c != y} p_c``.

    ``probs``: (n, K) probabilities; ``y``: (n,) class ids. Ties go to the lower class id.

    >>> margins(torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([0]))
    (tensor([0.5000]), tensor([1]))
    """
    y = y.to(probs.device)
    rows = torch.arange(len(y), device=probs.device)
    others = probs.clone()
    others[rows, y] = -math.inf
    best_other, runner_up = others.max(dim=1)
    return probs[rows, y] - best_other, runner_up


def _adversarial(ctx: _Context) -> np.ndarray:
    x_t = ctx.inputs()
    x_val, y_val = ctx.validation(x_t)
    _check_capacity(ctx)
    y_cur = ctx.y_t.cpu().clone()
    n = len(y_cur)
    if ctx.n_flip == 0:
        return y_cur.numpy()
    surrogate = _make_surrogate(ctx, x_t)
    surrogate.fit(y_cur)
    flipped = torch.zeros(n, dtype=torch.bool)
    room = ctx.caps.copy()
    rows = torch.arange(n)
    done = 0
    while done < ctx.n_flip:
        u = surrogate.influence(y_cur, x_val, y_val)  # (n, K): d logits along H^-1 grad L_val
        gain = u - u[rows, y_cur][:, None]  # n * estimated increase of the validation loss
        gain[rows, y_cur] = -math.inf
        best, dest = gain.max(dim=1)
        best[flipped] = -math.inf
        m = min(ctx.settings.batch_size, ctx.n_flip - done)
        order = np.argsort(-best.numpy(), kind="stable")
        order = order[~flipped.numpy()[order]]
        chosen = _first_within_caps(order, ctx.y, room, m)
        if len(chosen) == 0:  # cannot happen after _check_capacity; never loop forever
            raise DataError(f"max_per_class leaves no class room for the last "
                            f"{ctx.n_flip - done} flips")
        y_cur[chosen] = dest[chosen]
        flipped[chosen] = True
        np.subtract.at(room, ctx.y[chosen], 1)
        done += len(chosen)
        if done < ctx.n_flip:
            surrogate.fit(y_cur)
    return y_cur.numpy()


_STRATEGIES: dict[FlipStrategy, Callable[[_Context], np.ndarray]] = {
    FlipStrategy.RANDOM: _random,
    FlipStrategy.PAIRWISE: _pairwise,
    FlipStrategy.NOISE_MATRIX: _noise_matrix,
    FlipStrategy.MARGIN: _margin,
    FlipStrategy.ADVERSARIAL: _adversarial,
}


# --------------------------------------------------------------------------- surrogates


class _Surrogate(Protocol):
    def fit(self, y: torch.Tensor) -> None:
        """(Re)fit on labels ``y`` (n,), warm-starting from the current parameters."""

    def proba(self) -> torch.Tensor:
        """Class probabilities (n, K), float64 on the CPU, on the training inputs."""

    def influence(self, y: torch.Tensor, x_val: torch.Tensor,
                  y_val: torch.Tensor) -> torch.Tensor:
        """``J_i v`` (n, K) float64, ``v = (H + damping I)^-1 grad L_val`` at the fit."""


def _make_surrogate(ctx: _Context, x: torch.Tensor) -> _Surrogate:
    s = ctx.settings
    if isinstance(s.surrogate, str) and s.surrogate == "logistic":
        return _SoftmaxRegression(x, ctx.k, l2=s.l2, damping=s.damping)
    if isinstance(s.surrogate, str):
        model = build_model(s.surrogate, tuple(x.shape[1:]), ctx.k, seed=_draw_seed(ctx.gen))
    elif isinstance(s.surrogate, nn.Module):
        model = copy.deepcopy(s.surrogate)
    else:
        model = s.surrogate(_draw_seed(ctx.gen))
        if not isinstance(model, nn.Module):
            raise ConfigError(f"surrogate(seed) returned {type(model).__name__}: expected an "
                              "nn.Module")
    width = output_width(model, x.to(_input_dtype(model, x)))
    if width != ctx.k:
        raise DataError(f"surrogate returns {width} logits: expected n_classes={ctx.k}")
    return _ModuleSurrogate(model, x, settings=s, gen=ctx.gen)


def _draw_seed(gen: np.random.Generator) -> int:
    return int(gen.integers(0, 2**31 - 1))


def _input_dtype(model: nn.Module, x: torch.Tensor) -> torch.dtype:
    """The dtype ``model`` takes: that of its floating-point parameters, else ``x``'s."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)


def _design(x: torch.Tensor) -> torch.Tensor:
    """Flattened float64 inputs with a trailing column of ones (the bias)."""
    flat = x.detach().reshape(len(x), -1).to("cpu", torch.float64)
    return torch.cat([flat, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)


class _SoftmaxRegression:
    """Multinomial logistic regression ``softmax(W [x; 1])`` fitted exactly in float64.

    Minimises ``mean CE + l2 / 2 * ||W||^2`` by Newton's method with an Armijo line search,
    reusing a Cholesky factor of the Hessian while the gradient shrinks fast (the Hessian of
    the cross-entropy does not depend on the labels, so after a few flips the previous one
    is a good preconditioner) and refactorising when it does not. Deterministic; no RNG.
    """

    def __init__(self, x: torch.Tensor, n_classes: int, *, l2: float, damping: float,
                 tol: float = 1e-10, max_steps: int = 200) -> None:
        self.x = _design(x)
        self.k, self.l2, self.damping, self.tol, self.max_steps = (
            n_classes, l2, damping, tol, max_steps)
        self.w = torch.zeros(n_classes, self.x.shape[1], dtype=torch.float64)
        self.chol: torch.Tensor | None = None  # Cholesky factor of the Hessian at self.w
        self.hessian: torch.Tensor | None = None

    def _objective(self, w: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        logits = self.x @ w.T
        loss = F.cross_entropy(logits, y) + 0.5 * self.l2 * float((w * w).sum())
        return float(loss), _ce_grad(logits, y, self.x) + self.l2 * w

    def _factorise(self, w: torch.Tensor) -> torch.Tensor:
        self.hessian = _softmax_hessian(torch.softmax(self.x @ w.T, dim=1), self.x, self.l2)
        return torch.linalg.cholesky(self.hessian)

    def fit(self, y: torch.Tensor) -> None:
        w = self.w
        chol = self._factorise(w) if self.chol is None else self.chol
        fresh = self.chol is None
        loss, grad = self._objective(w, y)
        for _ in range(self.max_steps):
            step = torch.cholesky_solve(grad.reshape(-1, 1), chol).reshape(w.shape)
            decrement = float((grad * step).sum())
            if decrement / 2 < self.tol:
                break
            t = 1.0
            while True:
                w_new = w - t * step
                loss_new, grad_new = self._objective(w_new, y)
                if loss_new <= loss - 0.25 * t * decrement or t < 1e-10:
                    break
                t /= 2
            slow = float((grad_new * grad_new).sum()) > 0.25 * float((grad * grad).sum())
            w, loss, grad = w_new, loss_new, grad_new
            fresh = False
            if slow:
                chol, fresh = self._factorise(w), True
        self.w = w
        self.chol = chol if fresh else self._factorise(w)

    def proba(self) -> torch.Tensor:
        return torch.softmax(self.x @ self.w.T, dim=1)

    def influence(self, y: torch.Tensor, x_val: torch.Tensor,
                  y_val: torch.Tensor) -> torch.Tensor:
        xv = _design(x_val)
        grad_val = _ce_grad(xv @ self.w.T, y_val, xv)
        chol = self.chol
        if self.damping > 0 and self.hessian is not None:
            eye = torch.eye(len(self.hessian), dtype=torch.float64)
            chol = torch.linalg.cholesky(self.hessian + self.damping * eye)
        if chol is None:
            raise RuntimeError("influence() before fit()")  # internal misuse, not user input
        v = torch.cholesky_solve(grad_val.reshape(-1, 1), chol).reshape(self.w.shape)
        return self.x @ v.T

    def module(self) -> nn.Module:
        """The fit as ``Flatten -> Linear`` (float64)."""
        d = self.x.shape[1] - 1
        linear = nn.Linear(d, self.k, dtype=torch.float64, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            linear.weight.copy_(self.w[:, :d])
            linear.bias.copy_(self.w[:, d])
        return nn.Sequential(nn.Flatten(), linear).eval()


def _ce_grad(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean cross-entropy of ``softmax(x W^T)`` with respect to W: (K, d)."""
    residual = torch.softmax(logits, dim=1)
    residual[torch.arange(len(y), device=logits.device), y.to(logits.device)] -= 1
    return residual.T @ x / len(y)


def _softmax_hessian(p: torch.Tensor, x: torch.Tensor, l2: float) -> torch.Tensor:
    """Hessian (K d, K d) of ``mean CE + l2/2 ||W||^2`` for softmax regression, W row-major.

    ``sum_i (diag(p_i) - p_i p_i^T) kron x_i x_i^T / n + l2 I``, built from one GEMM for the
    outer-product part and K for the diagonal blocks.
    """
    n, k = p.shape
    d = x.shape[1]
    px = (p[:, :, None] * x[:, None, :]).reshape(n, k * d)
    h = -(px.T @ px)
    diag_blocks = torch.bmm((p.T[:, :, None] * x[None]).transpose(1, 2), x.expand(k, n, d))
    blocks = h.view(k, d, k, d)
    for a in range(k):
        blocks[a, :, a, :] += diag_blocks[a]
    h /= n
    h.diagonal().add_(l2)
    return h


class _ModuleSurrogate:
    """Any ``nn.Module`` trained with :func:`train`; influence by CG on Hessian-vector products."""

    def __init__(self, model: nn.Module, x: torch.Tensor, *, settings: FlipSettings,
                 gen: np.random.Generator) -> None:
        self.model, self.settings, self.gen = model, settings, gen
        self.device = model_device(model)
        self.dtype = _input_dtype(model, x)
        self.x = x.to(self.device, self.dtype)
        self.fitted = False

    def fit(self, y: torch.Tensor) -> None:
        s = self.settings
        train(self.model, self.x, y.to(self.device),
              epochs=s.refit_epochs if self.fitted else s.epochs, lr=s.lr, weight_decay=s.l2,
              seed=_draw_seed(self.gen))
        self.fitted = True

    def proba(self) -> torch.Tensor:
        with eval_mode(self.model), torch.no_grad():
            out = [torch.softmax(self.model(xb), dim=1) for xb in self.x.split(_CHUNK)]
        return torch.cat(out).to("cpu", torch.float64)

    def influence(self, y: torch.Tensor, x_val: torch.Tensor,
                  y_val: torch.Tensor) -> torch.Tensor:
        model, s = self.model, self.settings
        params = [p for p in model.parameters() if p.requires_grad]
        y = y.to(self.device)
        xv, yv = x_val.to(self.device, self.dtype), y_val.to(self.device)

        def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
            """(H_CE + (l2 + damping) I) v, by double backward over chunks of the data."""
            out = [(s.l2 + s.damping) * t for t in v]
            for xb, yb in zip(self.x.split(_CHUNK), y.split(_CHUNK), strict=True):
                loss = F.cross_entropy(model(xb), yb, reduction="sum") / len(y)
                grads = torch.autograd.grad(loss, params, create_graph=True)
                dot = torch.stack([(g * t).sum() for g, t in zip(grads, v, strict=True)]).sum()
                hv = torch.autograd.grad(dot, params)
                out = [o + h for o, h in zip(out, hv, strict=True)]
            return out

        def jvp(v: list[torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            """J v for the logits of ``xb``: the double-backward trick through J^T w."""
            logits = model(xb)
            w = torch.zeros_like(logits, requires_grad=True)
            jtw = torch.autograd.grad(logits, params, grad_outputs=w, create_graph=True)
            dot = torch.stack([(g * t).sum() for g, t in zip(jtw, v, strict=True)]).sum()
            return torch.autograd.grad(dot, w)[0]

        with eval_mode(model):
            g_val = [torch.zeros_like(p) for p in params]
            for xb, yb in zip(xv.split(_CHUNK), yv.split(_CHUNK), strict=True):
                loss = F.cross_entropy(model(xb), yb, reduction="sum") / len(yv)
                g_val = [a + b for a, b in
                         zip(g_val, torch.autograd.grad(loss, params), strict=True)]
            v = _conjugate_gradient(hvp, g_val, steps=s.cg_steps)
            u = [jvp(v, xb).detach() for xb in self.x.split(_CHUNK)]
        return torch.cat(u).to("cpu", torch.float64)


def _conjugate_gradient(
    matvec: Callable[[list[torch.Tensor]], list[torch.Tensor]],
    b: list[torch.Tensor],
    *,
    steps: int,
    rtol: float = 1e-6,
) -> list[torch.Tensor]:
    """Solve ``A v = b`` for symmetric ``A`` given as ``matvec``; stops at negative curvature.

    Vectors are lists of tensors (one per parameter). At most ``steps`` products with A.
    """

    def dot(a: list[torch.Tensor], c: list[torch.Tensor]) -> float:
        return float(sum((s * t).sum() for s, t in zip(a, c, strict=True)))

    v = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr = dot(r, r)
    stop = (rtol**2) * rr
    for _ in range(steps):
        if rr <= stop:
            break
        ap = matvec(p)
        curvature = dot(p, ap)
        if curvature <= 0:
            break
        alpha = rr / curvature
        v = [vi + alpha * pi for vi, pi in zip(v, p, strict=True)]
        r = [ri - alpha * api for ri, api in zip(r, ap, strict=True)]
        rr_new = dot(r, r)
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p, strict=True)]
        rr = rr_new
    return v


def fit_softmax_regression(x: Any, y: Any, *, n_classes: int, l2: float = 1e-3) -> nn.Module:
    """Fit the default surrogate exactly and return it as a float64 ``Flatten -> Linear``.

    The same fit "margin" and "adversarial" use with ``surrogate="logistic"``: multinomial
    logistic regression minimising ``mean CE + l2 / 2 * ||(W, b)||^2`` by Newton's method
    in float64 (deterministic, no randomness). Feed it float64 inputs.

    Parameters
    ----------
    x : Tensor or array (n, *input_shape); y : Tensor or array (n,) of class ids
    n_classes : int >= 2; l2 : float > 0

    >>> x = torch.tensor([[0.0], [1.0]]); y = torch.tensor([0, 1])
    >>> m = fit_softmax_regression(x, y, n_classes=2)
    >>> m(x.double()).argmax(dim=1).tolist()
    [0, 1]
    """
    k = check_scalar("n_classes", n_classes, lo=2, integer=True)
    l2 = check_scalar("l2", l2, lo=0, lo_closed=False)
    x_t, y_t = check_inputs(x, y, n_classes=k)
    model = _SoftmaxRegression(x_t, k, l2=l2, damping=0.0)
    model.fit(y_t.cpu())
    return model.module()
