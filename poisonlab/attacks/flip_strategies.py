"""The label-flip strategies: each turns validated labels and a budget into new labels.

:func:`poisonlab.attacks.label_flip.flip_labels` builds a :class:`_Context` (the labels,
the budget ``round(rate * n)``, the per-class caps, the generator) and calls the strategy
its threat names from ``STRATEGIES``; the module docstring of ``label_flip`` describes
what each strategy does and the paper it follows. ``margin`` and ``adversarial`` rank
flips with a surrogate model (:mod:`poisonlab.attacks.surrogates`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from .._validation import validate_inputs, validate_labels, validate_scalar
from ..errors import ConfigError, DataError
from ..threat import FlipStrategy, PoisonThreat
from .surrogates import FlipSettings, make_surrogate


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
        x_t, _ = validate_inputs(self.x, self.y_t, n_classes=self.k)
        return x_t

    def validation(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean validation data, or the clean training data when none was given."""
        if self.x_val is None:
            return x_t, self.y_t.cpu()
        xv, yv = validate_inputs(self.x_val, self.y_val, n_classes=self.k,
                              name_x="x_val", name_y="y_val")
        if xv.shape[1:] != x_t.shape[1:]:
            raise DataError(
                f"x_val has input shape {tuple(xv.shape[1:])}: expected "
                f"{tuple(x_t.shape[1:])} to match x"
            )
        return xv, yv.cpu()


def make_context(threat: PoisonThreat, y: Any, n_classes: int, gen: np.random.Generator, *,
             x: Any = None, x_val: Any = None, y_val: Any = None,
             settings: FlipSettings | None = None) -> _Context:
    """The validated labels, the budget round(rate * n) and the per-class caps."""
    k = validate_scalar("n_classes", n_classes, lo=2, integer=True)
    y_t = validate_labels(y, n_classes=k)
    y_np = y_t.cpu().numpy().astype(np.int64)
    counts = np.bincount(y_np, minlength=k)
    cap = threat.max_per_class
    caps = counts if cap is None else np.floor(cap * counts + 1e-9).astype(np.int64)
    return _Context(threat=threat, y=y_np, y_t=y_t, k=k, n_flip=round(threat.rate * len(y_np)),
                    caps=caps, gen=gen, x=x, x_val=x_val, y_val=y_val,
                    settings=settings or FlipSettings())


def validate_capacity(ctx: _Context) -> None:
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
        validate_capacity(ctx)
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
    validate_capacity(ctx)
    new = ctx.y.copy()
    if ctx.n_flip == 0:
        return new
    surrogate = make_surrogate(ctx.settings, x_t, ctx.k, ctx.gen)
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
    validate_capacity(ctx)
    y_cur = ctx.y_t.cpu().clone()
    n = len(y_cur)
    if ctx.n_flip == 0:
        return y_cur.numpy()
    surrogate = make_surrogate(ctx.settings, x_t, ctx.k, ctx.gen)
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


STRATEGIES: dict[FlipStrategy, Callable[[_Context], np.ndarray]] = {
    FlipStrategy.RANDOM: _random,
    FlipStrategy.PAIRWISE: _pairwise,
    FlipStrategy.NOISE_MATRIX: _noise_matrix,
    FlipStrategy.MARGIN: _margin,
    FlipStrategy.ADVERSARIAL: _adversarial,
}
