"""Post-hoc defenses: fitted after training, on the validation split only.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides
every logit by one scalar ``T > 0`` chosen to minimise the negative log-likelihood on the
validation split. Dividing by a positive scalar never changes an argmax, so accuracy and
every robust accuracy measured on labels stay the same; only the confidences move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._torch import eval_mode, model_device
from .._validation import validate_scalar
from .base import Defense


class TemperatureScaled(nn.Module):
    """``model(x) / temperature``: the wrapper temperature scaling returns.

    >>> m = TemperatureScaled(nn.Identity(), 2.0)
    >>> m(torch.tensor([[2.0, 4.0]]))
    tensor([[1., 2.]])
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        # On the model's device, so the wrapper's parameters and buffers share one device
        # (``.to()`` on the wrapper moves both).
        self.register_buffer("temperature",
                             torch.tensor(float(temperature), device=model_device(model)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4g}"


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, *, t_min: float = 0.05,
                    t_max: float = 20.0, iters: int = 60) -> float:
    """The temperature in ``[t_min, t_max]`` that minimises mean NLL of ``softmax(logits / T)``.

    The NLL of a temperature-scaled softmax is unimodal in ``log T`` (convex in ``1 / T``),
    so a golden-section search on ``log T`` finds the minimum deterministically, in float64,
    without a learning rate. ``T = 1`` is compared last: the returned temperature never has
    a higher validation NLL than the unscaled model.

    Parameters
    ----------
    logits : Tensor (n, K); y : int Tensor (n,)

    >>> logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    >>> t = fit_temperature(logits, torch.tensor([0, 1, 1, 0]))
    >>> t > 1  # over-confident on a wrong answer: soften
    True
    """
    z = logits.detach().to("cpu", torch.float64)
    y = y.detach().cpu()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))

    lo, hi = math.log(t_min), math.log(t_max)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    best = a if fa < fb else b
    return math.exp(best) if min(fa, fb) < nll(0.0) else 1.0


@dataclass(frozen=True)
class TemperatureScaling(Defense):
    """Temperature scaling (Guo et al. 2017), fitted on the validation split only.

    After training, ``train`` returns :class:`TemperatureScaled` (the model with its
    logits divided by the fitted temperature). Predictions (argmax) are unchanged; the
    validation NLL never rises. Combine it with any other defense through ``compose``.

    Parameters
    ----------
    t_min, t_max : float > 0
        The search interval for the temperature.

    >>> TemperatureScaling().params()
    {'t_min': 0.05, 't_max': 20.0}
    """

    name: ClassVar[str] = "temperature_scaling"
    summary: ClassVar[str] = "divide the logits by one temperature fitted on validation NLL"
    kind: ClassVar[str] = "posthoc"
    t_min: float = 0.05
    t_max: float = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "t_min",
                           validate_scalar("t_min", self.t_min, lo=0, lo_closed=False))
        object.__setattr__(self, "t_max",
                           validate_scalar("t_max", self.t_max, lo=self.t_min, lo_closed=False))

    @property
    def needs_validation(self) -> bool:
        return True

    def post_hoc(self, model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor) -> nn.Module:
        """Fit the temperature on ``(x_val, y_val)`` (any device; the logits are computed
        on the model's device, the fit is on the CPU in float64) and wrap ``model``."""
        with eval_mode(model), torch.no_grad():
            logits = model(x_val.to(model_device(model)))
        t = fit_temperature(logits, y_val, t_min=self.t_min, t_max=self.t_max)
        return TemperatureScaled(model, t).eval()
