"""The information metrics: how much the logits remember about which training example
they saw (the mutual information of Müller, Kornblith & Hinton 2019), and the
augmentation of the copies it compares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._torch import output_width
from .._validation import (
    validate_bounds,
    validate_inputs,
    validate_scalar,
    validate_seed,
)
from ..batching import DEFAULT_BATCH_SIZE, validate_batch_size
from ..errors import ConfigError, DataError
from .predict import as_model_input, predict_logits
from .scores import _np

#: Default class pair, examples and augmentations of :func:`mutual_information`.
MI_CLASSES: tuple[int, int] = (0, 1)
MI_N_EXAMPLES = 200
MI_N_AUGMENT = 32
#: Largest translation (pixels per axis) and noise std (fraction of ``hi - lo``) of
#: :func:`augment`.
AUGMENT_SHIFT = 1
AUGMENT_NOISE = 0.05
#: Smallest flat input length :func:`augment` treats as a square image (8 x 8).
_MIN_FLAT_IMAGE = 64


# --------------------------------------------------------------------------- information


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int] | None:
    """(C, H, W) for image-like per-sample shapes, None otherwise."""
    if len(shape) == 3 and shape[1] >= 2 and shape[2] >= 2:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    if len(shape) == 1 and shape[0] >= _MIN_FLAT_IMAGE:
        side = math.isqrt(int(shape[0]))
        if side * side == shape[0]:
            return (1, side, side)
    return None


def augment(x: torch.Tensor, generator: torch.Generator, bounds: tuple[float, float], *,
            shift: int = AUGMENT_SHIFT, noise: float = AUGMENT_NOISE) -> torch.Tensor:
    """A random augmentation of each input of ``x``: a small translation and Gaussian noise.

    Our choice for :func:`mutual_information` (Müller et al. 2019 used the standard image
    augmentations of their datasets). Image-like inputs, per-sample shape (C, H, W) or a
    flat vector whose length is a perfect square >= 64 (read as one H x H channel), are
    shifted by a uniform random integer in ``[-shift, shift]`` pixels along each axis, the
    uncovered border filled with the low bound. Every input then gets Gaussian noise of
    std ``noise * (hi - lo)`` and is clipped to ``bounds``. Other inputs (tabular, 2-D
    points) get the noise only. Pure: ``x`` is not modified; all randomness comes from
    ``generator`` (the shifts first, then the noise).

    Parameters
    ----------
    x : Tensor, shape (n, *input_shape), float
    generator : torch.Generator
        A CPU generator: the shifts and the noise are drawn on the CPU and moved to the
        device of ``x``, so they are the same on every device.
    bounds : (lo, hi)
    shift : int >= 0
    noise : float >= 0

    Returns
    -------
    Tensor, the shape, dtype and device of ``x``, inside ``bounds``.

    >>> g = torch.Generator().manual_seed(0)
    >>> augment(torch.zeros(5, 1, 8, 8), g, (0.0, 1.0)).shape
    torch.Size([5, 1, 8, 8])
    """
    lo, hi = validate_bounds("bounds", bounds)
    shift = validate_scalar("shift", shift, lo=0, integer=True)
    noise = validate_scalar("noise", noise, lo=0)
    n = x.shape[0]
    out = x.clone()
    img = _image_shape(tuple(x.shape[1:]))
    if img is not None and shift > 0 and n:
        c, h, w = img
        flat = x.reshape(n, c, h, w)
        padded = torch.nn.functional.pad(flat, (shift, shift, shift, shift), value=lo)
        # drawn on the CPU generator, then moved: the same shifts on every device
        offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator).to(x.device)
        moved = torch.empty_like(flat)
        for dy in range(2 * shift + 1):
            for dx in range(2 * shift + 1):
                m = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
                if m.any():
                    moved[m] = padded[m, :, dy : dy + h, dx : dx + w]
        out = moved.reshape(x.shape)
    if noise > 0:
        out = out + noise * (hi - lo) * torch.randn(x.shape, generator=generator,
                                                    dtype=x.dtype).to(x.device)
    return out.clamp(lo, hi)


def validate_information_settings(classes: Any, n_examples: Any, n_augment: Any
                               ) -> tuple[tuple[int, int], int, int]:
    """Validate the settings of :func:`mutual_information` (shared with the suite parser).

    ``classes``: two different class ids >= 0; ``n_examples``: int >= 4; ``n_augment``:
    int >= 2. Raises :class:`ConfigError` naming the field.
    """
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) != 2:
        raise ConfigError(f"classes={classes!r} is not allowed: expected two class ids [a, b]")
    a = validate_scalar("classes[0]", classes[0], lo=0, integer=True)
    b = validate_scalar("classes[1]", classes[1], lo=0, integer=True)
    if a == b:
        raise ConfigError(f"classes={list(classes)!r} is not allowed: expected two different "
                          "class ids")
    return ((a, b), validate_scalar("n_examples", n_examples, lo=4, integer=True),
            validate_scalar("n_augment", n_augment, lo=2, integer=True))


def gaussian_mi(samples: Any) -> float:
    """Gaussian estimate of ``I(X; Y)`` from ``L`` samples of a scalar ``Y`` per value of ``X``.

    Müller, Kornblith & Hinton 2019, section 5 (see :func:`mutual_information`). With
    ``y_xl`` the samples (row x, column l), ``mu_x`` the row means and ``sigma^2`` the
    pooled within-row variance ``sum (y_xl - mu_x)^2 / (N (L - 1))``, ``p(y | x)`` is
    ``N(mu_x, sigma^2)`` and ``p(y)`` the uniform mixture of the N rows::

        I = 1/(N L) sum_x sum_l [ -(y_xl - mu_x)^2 / (2 sigma^2)
                                  - log( 1/N sum_x' exp(-(y_xl - mu_x')^2 / (2 sigma^2)) ) ]

    computed in float64 with a log-sum-exp. Each term is at most ``log N``; the mean is
    clipped to ``[0, log N]`` (sampling can push a near-zero estimate a hair below 0). The
    pooled variance is floored at ``1e-12`` times the mean square of ``y`` (1 when every
    ``y`` is 0), which gives the limits of a zero variance: 0 when all rows have one mean,
    ``log N`` when all means differ.

    Parameters
    ----------
    samples : array or Tensor, shape (N, L), N >= 2, L >= 2, finite

    Returns
    -------
    float in ``[0, log N]``, in nats.

    Raises
    ------
    DataError
        Not an (N, L) array with N >= 2, L >= 2, or not finite.

    >>> round(gaussian_mi(np.array([[0.0, 0.1], [5.0, 5.1]])), 4)  # log 2
    0.6931
    """
    s = _np(samples).astype(np.float64)
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 2:
        raise DataError(f"samples has shape {s.shape}: expected (N, L) with N >= 2, L >= 2")
    if not np.isfinite(s).all():
        raise DataError("samples holds NaN or Inf: expected finite values")
    n, reps = s.shape
    mu = s.mean(axis=1)
    sigma2 = float(((s - mu[:, None]) ** 2).sum()) / (n * (reps - 1))
    scale = float(np.mean(s**2))
    # floor: no spread within rows (all rows one constant when scale is 0)
    sigma2 = max(sigma2, 1e-12 * scale) if scale > 0 else 1.0
    flat = s.reshape(-1)
    own = -((flat - np.repeat(mu, reps)) ** 2) / (2 * sigma2)
    # log sum_x' exp(cross), in place on one (N L, N) array: the row maximum is taken out
    # first, so every exponent is <= 0 and the sum >= 1.
    cross = np.subtract.outer(flat, mu)
    np.square(cross, out=cross)
    cross *= -1.0 / (2 * sigma2)
    top = cross.max(axis=1)
    cross -= top[:, None]
    np.exp(cross, out=cross)
    terms = own - (top + np.log(cross.sum(axis=1)) - math.log(n))
    return float(np.clip(terms.mean(), 0.0, math.log(n)))


def mutual_information(
    model: nn.Module,
    x: Any,
    y: Any,
    *,
    classes: Sequence[int] = MI_CLASSES,
    n_examples: int = MI_N_EXAMPLES,
    n_augment: int = MI_N_AUGMENT,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    shift: int = AUGMENT_SHIFT,
    noise: float = AUGMENT_NOISE,
) -> float:
    """How much a logit gap remembers of which training example it came from, in nats.

    Müller, Kornblith & Hinton 2019, "When Does Label Smoothing Help?" (NeurIPS), section 5
    and figure 6: label smoothing "erases" information about the individual examples,
    which is why a label-smoothed teacher distils worse. X is the index of one of N
    training examples of classes a and b; Y is the logit difference ``z_a - z_b`` of the
    model on a random augmentation (:func:`augment`) of that example, seen L times. The
    Gaussian estimate is :func:`gaussian_mi` of the (N, L) table of Y. It lies in
    ``[0, log N]``: 0 when the logit gap forgets which example it saw (the augmentations
    of every example land on one distribution), ``log N`` when every example keeps its own
    well separated gap. Descriptive: neither direction is better for the defender.

    The examples are up to ``n_examples // 2`` of class b and the rest of class a (up to
    what each class has), drawn without replacement by a generator seeded from ``seed``;
    the augmentations use a second generator from the same seed.

    Parameters
    ----------
    model : nn.Module returning logits (n, K), on any device
    x : Tensor (n, *input_shape); y : Tensor (n,) of class ids
        The training split and its (clean) labels, which pick the examples of each class;
        on any device (or numpy arrays). The augmentations are drawn on the CPU, so the
        result does not depend on the devices beyond floating-point rounding.
    classes : two different class ids in ``0 .. K - 1``, default (0, 1)
    n_examples : int >= 4, default 200
        N (at most), split evenly between the two classes.
    n_augment : int >= 2, default 32
        L, augmentations per example.
    bounds : (lo, hi), optional
        The input domain for :func:`augment`; default: the range of ``x``.
    seed : int >= 0
    batch_size : int >= 1 or None
        Augmented copies per forward pass (None: all at once). The augmentations are
        drawn for all N x L copies first, so they do not depend on it.
    shift, noise
        The augmentation (:func:`augment`): largest translation in pixels, noise std as a
        fraction of ``hi - lo``. The default shift of 1 pixel is, on 8 x 8 digits, about
        the 4 pixels of the paper's 32 x 32 crops; ``shift=0`` keeps only the noise.

    Returns
    -------
    float in ``[0, log N]``, with N the examples used.

    Raises
    ------
    ConfigError
        ``classes`` not two different ids in range; bad ``n_examples``, ``n_augment``,
        ``seed``, ``bounds``.
    DataError
        Malformed ``x``/``y``; a class with fewer than 2 examples in ``y``.

    >>> class Constant(nn.Module):
    ...     def forward(self, x):
    ...         return torch.zeros(x.shape[0], 2)
    >>> x, y = torch.rand(20, 3), torch.arange(20) % 2
    >>> mutual_information(Constant(), x, y, n_examples=10, n_augment=4)
    0.0
    """
    (a, b), n_examples, n_augment = validate_information_settings(classes, n_examples, n_augment)
    seed = validate_seed("seed", seed)
    batch_size = validate_batch_size("batch_size", batch_size)
    x_t, y_t = validate_inputs(x, y)
    k = output_width(model, as_model_input(model, x_t[:1]))
    for i, c in enumerate((a, b)):
        if c >= k:
            raise ConfigError(f"classes[{i}]={c} is not allowed: expected a class id in "
                              f"[0, {k - 1}] for a model with {k} outputs")
    if bounds is None:
        lo, hi = float(x_t.min()), float(x_t.max())
        bounds = (lo, hi if hi > lo else lo + 1.0)
    bounds = validate_bounds("bounds", bounds)
    s_pick, s_aug = (int(s.generate_state(1)[0] >> 1)
                     for s in np.random.SeedSequence(seed).spawn(2))
    rng = np.random.default_rng(s_pick)
    labels = _np(y_t)
    picked = []
    for c, want in ((a, n_examples - n_examples // 2), (b, n_examples // 2)):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise DataError(f"y has {len(idx)} example(s) of class {c}: expected at least 2 "
                            "for mutual_information")
        picked.append(np.sort(rng.choice(idx, size=min(want, len(idx)), replace=False)))
    chosen = torch.from_numpy(np.concatenate(picked))
    # augmented on the device of x (the draws are made on the CPU and moved)
    reps = x_t[chosen.to(x_t.device)].repeat_interleave(n_augment, dim=0)
    views = augment(reps, torch.Generator().manual_seed(s_aug), bounds, shift=shift,
                    noise=noise)
    logits = predict_logits(model, views, batch_size).to(torch.float64)
    gap = (logits[:, a] - logits[:, b]).reshape(len(chosen), n_augment)
    return gaussian_mi(gap)
