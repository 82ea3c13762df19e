"""The model contract: what poisonlab asks of a model, and the torch helpers every layer shares.

A model is an ``nn.Module`` mapping a batch ``(n, *input_shape)`` to finite floating-point
logits ``(n, K)``. :func:`probe_model` checks that on one input (and, when asked, that input
gradients flow); :func:`validate_once` makes a cell or an ``evaluate_model`` call probe
each model once; :func:`eval_mode` measures a model in eval mode and restores its modes;
:func:`model_device` and :func:`match_dtype` move inputs to the model; :func:`child_seeds`
derives independent seeds (restarts, batches, cells) from one.

>>> import torch
>>> from torch import nn
>>> probe_model(nn.Linear(4, 3), torch.zeros(2, 4))
3
>>> len(child_seeds(0, 3))
3
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import validate_model
from .errors import ConfigError, DataError, EvaluationWarning, PoisonlabError, first_line


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


#: Inputs the model probe runs on: one forward pass per call (never one per attack step).
PROBE_N = 1
#: Most that the rows of a model output may differ from summing to 1 and still be taken
#: for probabilities rather than logits.
PROB_SUM_TOL = 1e-4


#: False inside :func:`probes_quiet`: the probe then checks but does not warn.
_PROBE_WARNS: ContextVar[bool] = ContextVar("poisonlab_probe_warns", default=True)


#: Inside :func:`validate_once`: per model and input shape, the model itself (kept alive so
#: that its id is not reused), its number of logits and whether its input gradients passed.
_VALIDATED: ContextVar[dict[tuple[int, tuple[int, ...], torch.dtype],
                            tuple[nn.Module, int, bool]] | None] = ContextVar(
    "poisonlab_validated", default=None)


@contextmanager
def validate_once() -> Iterator[None]:
    """Inside the block each model is probed once per input shape (issue 20).

    A suite cell (and ``evaluate_model``) checks a model at its boundary; every attack,
    metric and sanity check after it would probe the same model again. Inside the block
    :func:`probe_model` remembers a model that passed (its logits and, if asked, its input
    gradients) and answers a later probe of it from memory, unless the later one asks for
    more (input gradients the first did not check). Training probes are never answered
    from memory: the weights change, and the first probe after training checks the
    trained model. Blocks nest; each starts empty.
    """
    token = _VALIDATED.set({})
    try:
        yield
    finally:
        _VALIDATED.reset(token)


@contextmanager
def probes_quiet() -> Iterator[None]:
    """Inside the block :func:`probe_model` raises as usual but does not warn.

    For poisonlab's own calls behind a boundary that has probed the model already (the
    sanity checks' probe attacks, the attacks of ``evaluate_model``): one warning per user
    call, not one per internal attack.
    """
    token = _PROBE_WARNS.set(False)
    try:
        yield
    finally:
        _PROBE_WARNS.reset(token)


def match_dtype(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Floating-point ``x`` cast to the dtype of ``model``'s floating-point parameters.

    float64 arrays from numpy meet a float32 model; a tensor that already matches (and any
    input of a model without floating-point parameters) is returned as it is.
    """
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x


def forward(model: nn.Module, x: torch.Tensor, *, name_x: str = "x") -> Any:
    """``model(x)``, with an error of the forward pass turned into one line.

    A RuntimeError (torch's way of saying the shapes or dtypes do not fit) is a
    :class:`DataError` about ``x``'s input shape; any other exception raised by the model's
    own code (a TypeError, ValueError...) is a :class:`ConfigError` naming the model class;
    a PoisonlabError passes through.
    """
    try:
        return model(x)
    except PoisonlabError:
        raise
    except RuntimeError as e:  # the forward pass cannot take inputs of this shape or dtype
        raise DataError(f"{name_x} has input shape {tuple(x.shape[1:])}, which the model "
                        f"cannot take: {first_line(e)}") from None
    except Exception as e:  # the model's own code failed: name it, keep the cause
        raise ConfigError(f"model {type(model).__name__} raised {type(e).__name__} on "
                          f"{name_x} of shape {tuple(x.shape)}: {first_line(e)}") from e


def validate_logits(out: Any, n: int) -> torch.Tensor:
    """Check a model output for ``n`` inputs: a floating-point tensor (n, K), K >= 1."""
    if not isinstance(out, torch.Tensor):
        raise DataError(f"model output is a {type(out).__name__}: expected a tensor of logits "
                        "(n, n_classes)")
    if out.dim() != 2 or out.shape[0] != n or out.shape[1] == 0:
        raise DataError(f"model output has shape {tuple(out.shape)}: expected (n, n_classes) "
                        f"= ({n}, K) for {n} inputs")
    if not out.is_floating_point():
        raise DataError(f"model output has dtype {out.dtype}: expected floating-point logits")
    return out


def looks_like_probabilities(out: torch.Tensor) -> bool:
    """Whether every row of ``out`` (n, K), K >= 2, lies in [0, 1] and sums to 1, with some
    entry strictly between 0 and 1.

    AutoAttack's ``check_range_output``: logits almost never do, softmax outputs always.
    Rows of exact zeros and ones are let through: integer logits such as (0, 1) are logits
    too, and a softmax saturated that far is what the gradient_norms check flags.
    """
    if out.dim() != 2 or out.shape[1] < 2 or out.numel() == 0:
        return False
    o = out.detach().double()
    return (bool(((o >= 0) & (o <= 1)).all())
            and bool(((o.sum(dim=1) - 1).abs() <= PROB_SUM_TOL).all())
            and bool(((o > 0) & (o < 1)).any()))


#: Layers whose output depends on train / eval mode.
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def _warn_if_train_mode(model: nn.Module) -> None:
    """Warn when ``model`` comes in train mode with dropout or normalisation layers in it.

    poisonlab measures every model in eval mode (``eval_mode``, restored after), so the
    numbers are deterministic; but a model left in train mode is usually a forgotten
    ``model.eval()``, and a defense that relies on randomness at inference (dropout kept
    on) is then not what is measured.
    """
    layers = sorted({type(m).__name__ for m in model.modules()
                     if m.training and isinstance(m, _MODE_DEPENDENT)})
    if model.training and layers:
        warnings.warn(
            f"the model is in train mode with {', '.join(layers)} layers: poisonlab measures "
            "it in eval mode (deterministic, restored after the call); call model.eval() "
            "first, and note that randomness a defense keeps at inference is not measured "
            "(docs/checks.md#model_outputs)", EvaluationWarning, stacklevel=4)


def probe_model(model: nn.Module, x: torch.Tensor, *, input_grad: bool = False,
                param_grad: bool = False, what: str = "") -> int:
    """Check ``model`` on the first PROBE_N inputs of ``x``; return its number of logits.

    One forward pass (and, with ``input_grad``, one backward pass) on at most PROBE_N
    inputs, in eval mode. Raises one line for: a model that is not an ``nn.Module``; a
    forward pass that fails; an output that is not a floating-point (n, K) tensor; NaN or
    Inf logits; with ``input_grad``, an output with no gradient path back to the input
    (``what`` names the caller, e.g. ``"attack 'pgd'"``); with ``param_grad``, an output
    that does not depend on the trainable parameters. Warns
    (:class:`~poisonlab.errors.EvaluationWarning`) when the outputs look like probabilities
    rather than logits, and, unless ``param_grad`` (training wants train mode), when the
    model is handed in train mode with layers that act differently in it
    (docs/checks.md#model_outputs).
    """
    validate_model(model)
    if x.shape[0] == 0:
        raise DataError(f"x has shape {tuple(x.shape)}: expected at least one input")
    memo = _VALIDATED.get()
    key = (id(model), tuple(x.shape[1:]), x.dtype)
    if memo is not None and not param_grad and key in memo:
        _, k, grads_ok = memo[key]
        if grads_ok or not input_grad:
            return k
    k = _probe(model, x, input_grad=input_grad, param_grad=param_grad, what=what)
    if memo is not None and not param_grad:
        memo[key] = (model, k, input_grad or (key in memo and memo[key][2]))
    return k


def _probe(model: nn.Module, x: torch.Tensor, *, input_grad: bool, param_grad: bool,
           what: str) -> int:
    """:func:`probe_model` without the memory: one forward (and backward) pass."""
    if not param_grad and _PROBE_WARNS.get():
        _warn_if_train_mode(model)
    xs = match_dtype(model, x[:PROBE_N]).to(model_device(model))
    grad = input_grad or param_grad
    with eval_mode(model), torch.set_grad_enabled(grad):
        if input_grad:
            xs = xs.detach().clone().requires_grad_(True)
        out = validate_logits(forward(model, xs), xs.shape[0])
        if input_grad:
            connected = out.requires_grad
            if connected:
                try:
                    (g,) = torch.autograd.grad(out.sum(), xs, allow_unused=True)
                except RuntimeError as e:
                    raise ConfigError(f"{what or 'this call'} needs the model's input "
                                      f"gradients, but the model's output cannot be "
                                      f"differentiated: {first_line(e)}") from None
                connected = g is not None
            if not connected:
                raise ConfigError(
                    f"{what or 'this call'} needs the model's input gradients, but the "
                    "model's output is detached from its input (no autograd graph leads "
                    "back to x): gradient attacks need a differentiable model; use a "
                    "black-box attack such as 'square' or 'noise'")
        if param_grad and not out.requires_grad:
            raise ConfigError("the model's output does not depend on its trainable "
                              "parameters (is it detached, or are they frozen?): training "
                              "needs a differentiable model")
        out = out.detach()
    if not bool(torch.isfinite(out).all()):
        raise DataError(f"the model returned NaN or Inf logits for x[:{out.shape[0]}]: "
                        "expected finite logits")
    if _PROBE_WARNS.get() and looks_like_probabilities(out):
        warnings.warn(
            f"the model's outputs for x[:{out.shape[0]}] lie in [0, 1] and sum to 1 per row: "
            "they look like probabilities, but poisonlab expects logits (a softmax on top "
            "flattens the attacks' losses and masks gradients); return the logits "
            "(docs/checks.md#model_outputs)", EvaluationWarning, stacklevel=3)
    return int(out.shape[1])


def output_width(model: nn.Module, x: torch.Tensor) -> int:
    """Number of logits ``model`` returns for inputs shaped like ``x`` (one forward pass).

    See :func:`probe_model` for what is checked on the way.
    """
    return probe_model(model, x)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode inside the block and restore each one's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.train(was_training)


def child_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 31-bit seeds derived from ``seed`` (numpy SeedSequence.spawn)."""
    return [int(s.generate_state(1)[0] >> 1) for s in np.random.SeedSequence(seed).spawn(n)]
