"""Running a model over inputs in batches: logits, probabilities, top confidence.

Every function takes ``batch_size`` (default 256; None: all at once) and moves each batch
to the model's device, bringing the results back to the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._torch import eval_mode, forward, model_device, validate_logits
from .._validation import (
    as_tensor,
    validate_model,
)
from ..batching import DEFAULT_BATCH_SIZE, iter_slices, validate_batch_size
from ..errors import DataError


def _param_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating-point parameter (None: it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def as_model_input(model: nn.Module, x: Any) -> torch.Tensor:
    """``x`` (a tensor or numpy array, on any device) as a tensor ``model`` can take.

    Moved to the model's device (:func:`~poisonlab._torch.model_device`) and, when ``x``
    is floating point and the model has floating-point parameters of another dtype (float64
    inputs from numpy, a float32 model), cast to their dtype. A tensor that needs neither
    is returned as it is.

    >>> import numpy as np
    >>> as_model_input(nn.Linear(2, 1), np.zeros((3, 2))).dtype
    torch.float32
    """
    validate_model(model)
    x = as_tensor("x", x)
    if x.is_complex():
        raise DataError(f"x has dtype {x.dtype}: expected real numbers")
    dtype = _param_dtype(model)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    return x.to(model_device(model))


def _batched(model: nn.Module, x: Any, batch_size: int | None,
             fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` of each batch of ``x``, gathered on the CPU: (n, *fn's per-sample shape).

    ``x`` (a tensor or numpy array, on any device; a memory-mapped array is read batch by
    batch) is checked once; ``fn`` gets ``batch_size`` rows of it at a time (None: all),
    with ``model`` in eval mode and without grad, and returns one row per input. The
    result is filled batch by batch, so no more than one batch of activations is alive
    at once, whatever ``n``.
    """
    validate_model(model)
    batch_size = validate_batch_size("batch_size", batch_size)
    x = as_tensor("x", x)
    if x.dim() < 2:
        raise DataError(f"x has shape {tuple(x.shape)}: expected (n, *input_shape)")
    out: torch.Tensor | None = None
    with eval_mode(model), torch.no_grad():
        for sl in iter_slices(x.shape[0], batch_size):
            rows = fn(x[sl]).cpu()
            if out is None:
                out = torch.empty((x.shape[0], *rows.shape[1:]), dtype=rows.dtype)
            out[sl] = rows
    return torch.empty(0) if out is None else out


def _logits(model: nn.Module, xb: Any) -> torch.Tensor:
    """Checked logits (m, K) of ``model`` on one batch ``xb`` (moved and cast for it)."""
    xb = as_model_input(model, xb)
    return validate_logits(forward(model, xb), xb.shape[0])


def _confidence(model: nn.Module, xb: Any) -> torch.Tensor:
    """Max-softmax (m,) of ``model`` on one batch ``xb``."""
    return torch.softmax(_logits(model, xb), dim=1).max(dim=1).values


def predict_logits(model: nn.Module, x: Any,
                   batch_size: int | None = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (n, K), in eval mode, without grad; on the CPU.

    ``x`` may live on any device (or be a numpy array, memory-mapped or not): each batch
    of ``batch_size`` inputs (None: all at once) is moved to the model's device (see
    :func:`as_model_input`) and its logits come back to the CPU. ``batch_size`` changes
    memory and speed, never a number beyond float rounding (docs/batching.md).

    >>> predict_logits(nn.Identity(), torch.eye(3), batch_size=2).shape
    torch.Size([3, 3])
    """
    return _batched(model, x, batch_size, lambda xb: _logits(model, xb))


def predict_proba(model: nn.Module, x: Any,
                  batch_size: int | None = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``x`` (n, K), in eval mode, without grad.

    On the CPU, whatever the devices of ``model`` and ``x`` (see :func:`predict_logits`).
    """
    return _batched(model, x, batch_size,
                    lambda xb: torch.softmax(_logits(model, xb), dim=1))


def max_softmax(model: nn.Module, x: Any, *,
                batch_size: int | None = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Max-softmax confidence of ``model`` on each input of ``x``, shape (n,), on the CPU.

    Computed ``batch_size`` inputs at a time (None: all at once); only the (n,) result is
    kept, never the (n, K) probabilities.
    """
    return _batched(model, x, batch_size, lambda xb: _confidence(model, xb))
