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

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from .._validation import (
    validate_seed,
)
from ..errors import ConfigError
from ..threat import FlipStrategy, PoisonThreat
from .flip_strategies import STRATEGIES, make_context, validate_capacity

# their home until the split of issue 20: re-exported so old imports keep working
from .flip_strategies import largest_remainder as largest_remainder
from .flip_strategies import margins as margins
from .surrogates import FlipSettings, Surrogate
from .surrogates import fit_softmax_regression as fit_softmax_regression


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
        seed = validate_seed("seed", seed)
        return _flip(self.threat, y, n_classes=n_classes, x=x, x_val=x_val, y_val=y_val,
                     settings=self.settings, rng=seed, rng_name="seed")


# --------------------------------------------------------------------------- core


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
        seed = validate_seed(rng_name, rng)
        gen = np.random.default_rng(seed)
    if (x_val is None) != (y_val is None):
        given, missing = ("x_val", "y_val") if y_val is None else ("y_val", "x_val")
        raise ConfigError(f"{missing}=None is not allowed with {given} given: expected both "
                          "or neither")
    ctx = make_context(threat, y, n_classes, gen, x=x, x_val=x_val, y_val=y_val,
                   settings=settings)
    y_np, y_t, k = ctx.y, ctx.y_t, ctx.k
    new = STRATEGIES[FlipStrategy(threat.strategy)](ctx)
    y_new = torch.from_numpy(new).to(y_t.device)
    changed = new != y_np
    flip_counts = np.bincount(new[changed] * k + y_np[changed], minlength=k * k).reshape(k, k)
    return FlipResult(y_poisoned=y_new, flipped=y_new != y_t, threat=threat, seed=seed,
                      flip_counts=torch.from_numpy(flip_counts.astype(np.int64)))


#: Strategies cheap enough to run in full when only their budget is checked.
_LABELS_ONLY = (FlipStrategy.RANDOM, FlipStrategy.PAIRWISE, FlipStrategy.NOISE_MATRIX)


def validate_flip_budget(threat: PoisonThreat, y: Any, *, n_classes: int) -> None:
    """Raise what flipping ``y`` under ``threat`` would raise about its budget, cheaply.

    The checks that depend on the data (class ids within ``n_classes``, more pairwise
    flips than the source class has, per-class caps too small for the budget, a noise
    matrix of another size) run before any cell: ``random``, ``pairwise`` and
    ``noise_matrix`` are run on the labels alone (milliseconds), ``margin`` and
    ``adversarial`` have their caps checked without training their surrogate.

    >>> validate_flip_budget(PoisonThreat(rate=0.5, strategy="pairwise", source=0, target=1),
    ...                   np.array([0, 1, 1, 1]), n_classes=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    poisonlab.errors.DataError: rate=0.5 asks for 2 pairwise flips but source class 0 has 1 ...
    """
    strategy = FlipStrategy(threat.strategy)
    ctx = make_context(threat, y, n_classes, np.random.default_rng(0))
    if strategy in _LABELS_ONLY:
        STRATEGIES[strategy](ctx)
    elif threat.max_per_class is not None:
        validate_capacity(ctx)
