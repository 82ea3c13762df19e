"""Surrogate models of the optimised label-flip strategies (``margin``, ``adversarial``).

The strategies in :mod:`poisonlab.attacks.label_flip` rank flips by a surrogate fitted on
the training data: the default ``"logistic"`` is multinomial logistic regression fitted
exactly in float64 (Newton's method, :class:`_SoftmaxRegression`); any registered model
name, ``nn.Module`` or factory ``seed -> nn.Module`` is trained with SGD instead
(:class:`_ModuleSurrogate`), its influence computed with conjugate gradients on
Hessian-vector products (Koh and Liang 2017, "Understanding Black-box Predictions via
Influence Functions"). :class:`FlipSettings` holds their algorithm settings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._torch import eval_mode, model_device, output_width
from .._validation import validate_choice, validate_inputs, validate_scalar
from ..errors import ConfigError, DataError
from ..models import build_model, models
from ..training import train

#: A surrogate: a registered model name, a model, or a factory ``seed -> model``.
Surrogate = str | nn.Module | Callable[[int], nn.Module]

_CHUNK = 1024  # samples per forward pass in the influence computations of module surrogates


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
            validate_choice("surrogate", s, models.names())
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
            value = validate_scalar(name, getattr(self, name), lo=lo, integer=integer,
                                 lo_closed=lo_closed)
            object.__setattr__(self, name, value)




class _Surrogate(Protocol):
    def fit(self, y: torch.Tensor) -> None:
        """(Re)fit on labels ``y`` (n,), warm-starting from the current parameters."""

    def proba(self) -> torch.Tensor:
        """Class probabilities (n, K), float64 on the CPU, on the training inputs."""

    def influence(self, y: torch.Tensor, x_val: torch.Tensor,
                  y_val: torch.Tensor) -> torch.Tensor:
        """``J_i v`` (n, K) float64, ``v = (H + damping I)^-1 grad L_val`` at the fit."""


def make_surrogate(s: FlipSettings, x: torch.Tensor, k: int,
                   gen: np.random.Generator) -> _Surrogate:
    """The surrogate ``s`` names for inputs ``x`` (n, ...) and ``k`` classes, unfitted.

    A model built from a name or a factory is seeded from ``gen``; a given module is copied.
    """
    if isinstance(s.surrogate, str) and s.surrogate == "logistic":
        return _SoftmaxRegression(x, k, l2=s.l2, damping=s.damping)
    if isinstance(s.surrogate, str):
        model = build_model(s.surrogate, tuple(x.shape[1:]), k, seed=_draw_seed(gen))
    elif isinstance(s.surrogate, nn.Module):
        model = copy.deepcopy(s.surrogate)
    else:
        model = s.surrogate(_draw_seed(gen))
        if not isinstance(model, nn.Module):
            raise ConfigError(f"surrogate(seed) returned {type(model).__name__}: expected an "
                              "nn.Module")
    width = output_width(model, x.to(_input_dtype(model, x)))
    if width != k:
        raise DataError(f"surrogate returns {width} logits: expected n_classes={k}")
    return _ModuleSurrogate(model, x, settings=s, gen=gen)


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
    k = validate_scalar("n_classes", n_classes, lo=2, integer=True)
    l2 = validate_scalar("l2", l2, lo=0, lo_closed=False)
    x_t, y_t = validate_inputs(x, y, n_classes=k)
    model = _SoftmaxRegression(x_t, k, l2=l2, damping=0.0)
    model.fit(y_t.cpu())
    return model.module()
