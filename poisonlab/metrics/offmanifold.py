"""Off-manifold and confidence-scale metrics: confidence on noise and along rays, alpha*,
the AUROC of clean vs noise, mean entropy, logit and weight norms, the temperature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import (
    validate_bounds,
    validate_int_sequence,
    validate_label_array,
    validate_scalar,
    validate_seed,
    validate_x,
)
from ..batching import DEFAULT_BATCH_SIZE
from ..defenses.posthoc import fit_temperature
from ..errors import DataError
from .predict import (
    _batched,
    _confidence,
    _logits,
    max_softmax,
    predict_logits,
)
from .scores import _np, auroc

#: Multipliers of the ``alpha * x`` rays (design section 4).
RAY_ALPHAS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 100.0)
#: Geometric grid of alpha for ``alpha_star``: 1 .. 1e4, 8 points per decade.
ALPHA_GRID: np.ndarray = np.geomspace(1.0, 1e4, 33)
#: The max-softmax level that counts as "fully confident" for ``alpha_star``.
ALPHA_STAR_LEVEL = 0.999


def uniform_noise(
    n: int, input_shape: Sequence[int], bounds: tuple[float, float], seed: int, *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` inputs uniform inside ``bounds`` (float32), from a generator seeded by ``seed``.

    Drawn on the CPU (a CPU generator) and then moved to ``device`` (default: the CPU), so
    the noise is the same on every device.

    >>> bool((uniform_noise(3, (2,), (0.0, 1.0), 0, device="cpu") >= 0).all())
    True
    """
    g = torch.Generator().manual_seed(validate_seed("seed", seed))
    n = validate_scalar("n", n, lo=0, integer=True)
    shape = validate_int_sequence("input_shape", input_shape)
    lo, hi = validate_bounds("bounds", bounds)
    out = lo + (hi - lo) * torch.rand((n, *shape), generator=g)
    return out if device is None else out.to(device)


def gaussian_noise(n: int, x_train: Any, seed: int, *,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` Gaussian inputs with the per-feature mean and std of ``x_train`` (unclipped).

    The draws come from a CPU generator seeded by ``seed``; the statistics of ``x_train``
    (a tensor on any device, or a numpy array) are taken on the CPU, so the noise is the
    same whatever device ``x_train`` lives on. Returned on ``device`` (default: the device
    of ``x_train``).
    """
    g = torch.Generator().manual_seed(validate_seed("seed", seed))
    n = validate_scalar("n", n, lo=0, integer=True)
    x_t = validate_x(x_train, "x_train")
    target = x_t.device if device is None else torch.device(device)
    x_cpu = x_t.detach().cpu()
    mean = x_cpu.mean(dim=0)
    # Fewer than 2 inputs (a test-only dataset has no training split): NaN noise, quietly.
    std = x_cpu.std(dim=0) if x_cpu.shape[0] > 1 else torch.full_like(mean, math.nan)
    return (mean + std * torch.randn((n, *x_cpu.shape[1:]), generator=g)).to(target)


def offmanifold_confidence(model: nn.Module, noise: torch.Tensor, *,
                           batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """Mean max-softmax on off-manifold ``noise`` inputs (lower is humbler)."""
    return float(max_softmax(model, noise, batch_size=batch_size).mean())


def ray_confidence(
    model: nn.Module, x: torch.Tensor, alphas: Sequence[float] = RAY_ALPHAS, *,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> dict[float, float]:
    """Mean max-softmax on ``alpha * x`` for each alpha (extrapolation along rays).

    Each batch of ``x`` is scaled by every alpha in turn: no scaled copy of the whole of
    ``x`` is made.
    """
    alphas = [float(a) for a in alphas]

    def per_alpha(xb: torch.Tensor) -> torch.Tensor:  # (m, len(alphas))
        return torch.stack([_confidence(model, a * xb) for a in alphas], dim=1)

    conf = _batched(model, x, batch_size, per_alpha)
    return {a: float(conf[:, j].contiguous().mean()) for j, a in enumerate(alphas)}


def alpha_star(
    model: nn.Module,
    u: torch.Tensor,
    grid: np.ndarray = ALPHA_GRID,
    level: float = ALPHA_STAR_LEVEL,
    *,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> float:
    """Median over inputs ``u`` of the smallest grid alpha with max-softmax(alpha * u) >= level.

    An input that never reaches ``level`` on the grid counts as the grid's last value
    (capped). Higher means the model stays humble longer along the ray. Each batch of
    ``batch_size`` inputs walks the grid until all of them reached ``level``; an input's
    alpha depends only on that input.

    >>> u = torch.tensor([[10.0, 0.0], [10.0, 0.0], [0.0, 0.0]])  # the last: never sure
    >>> alpha_star(nn.Identity(), u, batch_size=2)
    1.0
    """
    grid = [float(a) for a in np.asarray(grid, dtype=np.float64).reshape(-1)]

    def first_alpha(ub: torch.Tensor) -> torch.Tensor:  # (m,) float64
        first = torch.full((ub.shape[0],), grid[-1], dtype=torch.float64)
        reached = torch.zeros(ub.shape[0], dtype=torch.bool)
        for a in grid:
            new = (_confidence(model, a * ub).cpu() >= level) & ~reached
            first[new] = a
            reached |= new
            if bool(reached.all()):
                break
        return first

    first = _batched(model, u, batch_size, first_alpha)
    return float(np.median(first.numpy())) if first.numel() else math.nan


def offmanifold_auroc(model: nn.Module, x_clean: torch.Tensor, noise: torch.Tensor, *,
                      batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """AUROC of max-softmax separating clean inputs (positive) from noise (negative)."""
    return auroc(max_softmax(model, x_clean, batch_size=batch_size),
                 max_softmax(model, noise, batch_size=batch_size))


# --------------------------------------------------------------------------- confidence scale


def mean_entropy(probs: Any) -> float:
    """Mean Shannon entropy, in nats, of the rows of ``probs``.

    ``mean_i -sum_k p_ik log p_ik`` (``0 log 0 = 0``), in ``[0, log K]``: 0 for one-hot
    outputs, ``log K`` for uniform ones. On the clean test split it shows how far a defense
    (label smoothing, the confidence penalty of Pereyra et al. 2017) pushes the outputs
    away from one-hot. Descriptive: higher is neither better nor worse.

    Parameters
    ----------
    probs : array or Tensor, shape (n, K)
        Class probabilities (rows sum to one).

    Returns
    -------
    float; NaN for no rows.

    Raises
    ------
    DataError
        ``probs`` is not 2-D, or holds NaN, Inf or negative values.

    >>> round(mean_entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), 4)  # (log 2 + 0) / 2
    0.3466
    """
    p = _np(probs).astype(np.float64)
    if p.ndim != 2:
        raise DataError(f"probs has shape {p.shape}: expected (n, K)")
    if not np.isfinite(p).all() or (p < 0).any():
        raise DataError("probs holds NaN, Inf or negative values: expected probabilities")
    if not len(p):
        return math.nan
    plogp = p * np.log(np.where(p > 0, p, 1.0))
    return float(np.mean(-plogp.sum(axis=1)))


def logit_norm(model: nn.Module, x: torch.Tensor, *,
               batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """Mean L2 norm of the logit vectors of ``model`` on ``x``.

    ``mean_i ||f(x_i)||_2`` over the rows of ``x`` (the clean test split in a suite), in
    logit units. ``f`` is the model as deployed: for a temperature-scaled model, the
    logits already divided by the temperature. Label smoothing bounds the logit gaps it
    asks for, so it tends to shrink this (Müller, Kornblith & Hinton 2019). Descriptive.

    Parameters
    ----------
    model : nn.Module returning logits (n, K)
    x : Tensor, shape (n, *input_shape)
    batch_size : int >= 1 or None
        Inputs per forward pass (None: all at once); only the (n,) row norms are kept.

    Returns
    -------
    float; NaN for no inputs.

    >>> logit_norm(nn.Identity(), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    3.0
    """
    norms = _batched(model, x, batch_size,
                     lambda xb: _logits(model, xb).to(torch.float64).norm(dim=1))
    return float(norms.mean()) if norms.numel() else math.nan


def weight_norm(model: nn.Module) -> float:
    """L2 norm of every weight of ``model``: parameters with ``ndim >= 2``.

    ``sqrt(sum_W ||W||_F^2)`` over the parameters with two or more dimensions (the
    weight matrices of linear layers and the kernels of convolutions); biases and the
    scales of normalisation layers (1-D) are left out: they do not multiply the input, so
    they set no slope. Large weights let a ReLU network's logits grow steeply away from
    the data (extreme extrapolation, Hein et al. 2019); label smoothing penalises large
    logits and so, indirectly, large weights (Müller et al. 2019). The norm of the model
    as trained: a temperature-scaling wrapper adds no parameter. Descriptive.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    float; NaN for a model without a parameter of two or more dimensions.

    >>> layer = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    >>> weight_norm(layer)
    5.0
    """
    weights = [p for p in model.parameters() if p.dim() >= 2]
    if not weights:
        return math.nan
    total = sum(float(p.detach().to("cpu", torch.float64).pow(2).sum()) for p in weights)
    return math.sqrt(total)


def temperature(model: nn.Module, x_val: torch.Tensor, y_val: Any, *,
                batch_size: int | None = DEFAULT_BATCH_SIZE) -> float:
    """The temperature ``T*`` that minimises the NLL of ``softmax(f(x) / T)`` on validation.

    Guo et al. 2017, "On Calibration of Modern Neural Networks": ``T*`` is fitted by
    :func:`~poisonlab.defenses.posthoc.fit_temperature` (golden-section search on
    ``log T`` in ``[0.05, 20]``, float64; 1 when no temperature lowers the NLL) on the
    validation split, never on train or test. ``f`` is the model as deployed, so after
    the ``temperature_scaling`` defense ``T*`` is about 1. ``T* > 1``: the model is
    over-confident (its logits need softening); ``T* < 1``: under-confident. A value at
    20 or 0.05 is the end of the search interval. Descriptive.

    Parameters
    ----------
    model : nn.Module returning logits (n, K)
    x_val : Tensor (m, *input_shape); y_val : Tensor (m,) of class ids
    batch_size : int >= 1 or None
        Inputs per forward pass (None: all at once).

    Returns
    -------
    float; NaN for an empty validation split.

    >>> x = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    >>> temperature(nn.Identity(), x, torch.tensor([0, 1, 1, 0])) > 1
    True
    """
    if not len(validate_label_array("y_val", y_val)):
        return math.nan
    logits = predict_logits(model, x_val, batch_size)
    y = validate_label_array("y_val", y_val, n_classes=logits.shape[1])
    if logits.dim() != 2 or logits.shape[0] != len(y):
        raise DataError(f"y_val has shape {y.shape}: expected ({logits.shape[0]},) to match "
                        "x_val")
    return float(fit_temperature(logits, torch.from_numpy(y)))
