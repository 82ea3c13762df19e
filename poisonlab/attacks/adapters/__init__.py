"""Adapters that run ART and foolbox attacks inside poisonlab's attack template.

``ARTAttack("ProjectedGradientDescent", {"max_iter": 40})`` and
``FoolboxAttack("LinfPGD", {"steps": 40})`` hold a library class name and its parameters;
the call takes model, data, threat and seed like every poisonlab attack, so the template
validates the input, runs the model in eval mode, projects into the eps-ball and bounds,
refuses NaN and computes success from the model's own predictions. The registry resolves
the names ``"art:<Class>"`` and ``"foolbox:<Class>"`` to these adapters.

The threat supplies what the libraries call eps / epsilons, norm (or the foolbox class's
distance), targeted and the input bounds (ART ``clip_values``, foolbox ``bounds``); passing
one of them as a parameter is a :class:`~poisonlab.errors.ConfigError`. Unknown parameters
are refused with a did-you-mean over the library class's constructor parameters (ART's own
constructors raise TypeError or, through ``set_params``, ignore them).

Randomness
----------
ART and foolbox draw from the global numpy, Python and torch generators and take no
generator of their own. :func:`seeded_global_rngs` is **the one place poisonlab touches
global RNG state**: for the duration of a library call it seeds those generators from an
int drawn from the call's ``torch.Generator`` and restores their previous states
afterwards, so a call is reproducible and leaves the caller's RNG streams as they were. It
is not thread-safe: another thread drawing from the global generators during the call
draws from the seeded stream (and changes what the attack draws).

This package does not import ART or foolbox; ``poisonlab.attacks.adapters.art`` and
``.foolbox`` do, and the registry imports them only when such a name is used.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError, UnknownNameError
from ...registry import did_you_mean
from ..base import Attack

#: Parameters that come from the threat or the call, never from an adapter's settings:
#: name -> where to set it instead.
THREAT_OWNED: dict[str, str] = {
    "eps": "the threat: EvasionThreat(eps=...)",
    "epsilons": "the threat: EvasionThreat(eps=...)",
    "norm": "the threat: EvasionThreat(norm='linf' | 'l2')",
    "distance": "the threat: EvasionThreat(norm='linf' | 'l2')",
    "targeted": "the threat: EvasionThreat(targeted=True), with target= at the call",
    "criterion": "the threat: EvasionThreat(targeted=True), with target= at the call",
    "bounds": "the threat: EvasionThreat(bounds=(lo, hi))",
    "clip_values": "the threat: EvasionThreat(bounds=(lo, hi))",
    "estimator": "the call: attack(model, x, y, threat=...)",
    "classifier": "the call: attack(model, x, y, threat=...)",
    "model": "the call: attack(model, x, y, threat=...)",
}


# --------------------------------------------------------------------------- randomness


def derive_seed(generator: torch.Generator) -> int:
    """An int in [0, 2**31 - 1) drawn from ``generator``: the seed of one library call."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


@contextlib.contextmanager
def seeded_global_rngs(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed the global numpy, Python and torch generators; restore their states on exit.

    The one place poisonlab touches global RNG state (ART and foolbox accept no
    generator). The torch CPU generator is always saved and restored; the CUDA generator of
    ``device`` too when it is a CUDA device. Not thread-safe.

    Parameters
    ----------
    seed : int in [0, 2**32)
    device : torch.device, optional
        The model's device.

    >>> state = np.random.get_state()[1].copy()
    >>> with seeded_global_rngs(0):
    ...     a = np.random.rand()
    >>> with seeded_global_rngs(0):
    ...     b = np.random.rand()
    >>> a == b, bool((np.random.get_state()[1] == state).all())
    (True, True)
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    devices: list[int] = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        try:
            np.random.seed(seed)
            random.seed(seed)
            torch.default_generator.manual_seed(seed)
            for d in devices:
                with torch.cuda.device(d):
                    torch.cuda.manual_seed(seed)
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@contextlib.contextmanager
def library_boundary(model: nn.Module, seed: int, device: torch.device) -> Iterator[None]:
    """Everything a library call needs around it, restored on exit.

    Seeds the global generators (:func:`seeded_global_rngs`); switches off ``requires_grad``
    on the model's parameters (the libraries need input gradients only, and ART's
    ``loss_gradient`` would otherwise fill and zero the parameters' ``.grad``), restoring the
    flags and any ``.grad`` afterwards; makes ``device`` the current CUDA device when the
    model lives there (ART places its classifier on the current device).
    """
    params = list(model.parameters())
    saved = [(p, p.requires_grad, p.grad) for p in params]
    cuda_ctx = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        for p in params:
            p.requires_grad_(False)
        with cuda_ctx, seeded_global_rngs(seed, device):
            yield
    finally:
        for p, flag, grad in saved:
            p.requires_grad_(flag)
            p.grad = grad


# --------------------------------------------------------------------------- settings


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``cls(...)`` (without ``self`` and ``*args``/``**kwargs``)."""
    sig = inspect.signature(cls)
    return {n: p for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def validate_settings(qualname: str, cls: type, settings: Any) -> dict[str, Any]:
    """Check ``settings`` against the constructor of the library class ``cls``.

    Returns a deep copy as a plain dict. Raises :class:`ConfigError` for a non-mapping, a
    threat-owned parameter (naming where it comes from) or an unknown one (with a
    did-you-mean over the constructor's parameters).
    """
    if not isinstance(settings, Mapping):
        raise ConfigError(
            f"settings={settings!r} is not allowed: expected a mapping of {qualname} parameters"
        )
    allowed = [n for n in constructor_parameters(cls) if n not in THREAT_OWNED]
    for key in settings:
        if key in THREAT_OWNED:
            raise ConfigError(
                f"{qualname} parameter {key!r} is not allowed: it comes from "
                f"{THREAT_OWNED[key]}"
            )
        if key not in allowed:
            raise ConfigError(
                f"{qualname} got unknown parameter {key!r}: expected one of "
                f"{', '.join(allowed) or '(none)'}{did_you_mean(str(key), allowed)}"
            )
    return copy.deepcopy(dict(settings))


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars unwrapped and any other non-JSON object as its repr.

    >>> jsonable({"a": np.float32(0.5), "b": (1, None), "c": object})
    {'a': 0.5, 'b': [1, None], 'c': "<class 'object'>"}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


def effective_settings(
    cls: type, settings: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The library's defaults, overridden by ours (where the class takes them), then the user's.

    Threat-owned parameters and those without a default (the estimator) are left out.
    """
    params = constructor_parameters(cls)
    out = {n: p.default for n, p in params.items()
           if n not in THREAT_OWNED and p.default is not p.empty}
    out.update({k: v for k, v in defaults.items() if k in params and k not in settings})
    out.update(settings)
    return out


# --------------------------------------------------------------------------- base


@dataclass(frozen=True)
class LibraryAttack(Attack):
    """Base of the ART and foolbox adapters: a library class name and its parameters.

    Subclasses set ``library`` and implement ``available``, ``library_class``,
    ``library_version``, ``describe`` and ``_perturb``; ``fast_defaults`` replaces slow
    library defaults.

    Parameters
    ----------
    attack : str
        The library's class name, e.g. ``"ProjectedGradientDescent"``.
    settings : mapping
        Parameters of that class's constructor, except the threat-owned ones
        (:data:`THREAT_OWNED`).
    """

    library: ClassVar[str] = ""
    fast_defaults: ClassVar[Mapping[str, Any]] = {}

    attack: str
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)  # dicts don't hash

    def __post_init__(self) -> None:
        options = list(self.available())
        if not isinstance(self.attack, str) or self.attack not in options:
            close = did_you_mean(str(self.attack), options)
            hint = close.replace("'", f"'{self.library}:", 1) if close else ""
            raise UnknownNameError(
                f"attack='{self.library}:{self.attack}' is not known: expected an evasion "
                f"attack class of {self.library}, one of {', '.join(options)}{hint}"
            )
        checked = validate_settings(self.name, self.library_class(self.attack), self.settings)
        object.__setattr__(self, "settings", checked)

    @property  # type: ignore[misc]
    def name(self) -> str:  # type: ignore[override]
        """``"<library>:<Class>"``, the name recorded in every AttackResult."""
        return f"{self.library}:{self.attack}"

    @classmethod
    def available(cls) -> list[str]:
        """The library's evasion attack classes that this adapter can run, sorted."""
        raise NotImplementedError

    @classmethod
    def library_class(cls, name: str) -> type:
        raise NotImplementedError

    @classmethod
    def library_version(cls) -> str:
        raise NotImplementedError

    @classmethod
    def describe(cls, name: str) -> str:
        """The first line of the library class's docstring."""
        lines = (cls.library_class(name).__doc__ or "").strip().splitlines()
        return lines[0].strip() if lines else ""

    @classmethod
    def from_name(cls, name: str, /, **params: Any) -> LibraryAttack:
        """``cls(name, params)``: what the registry calls for ``"<library>:<name>"``."""
        return cls(name, params)

    def defaults(self) -> Mapping[str, Any]:
        """Our defaults that replace the library's for this class (``fast_defaults``, and
        for PGD-family classes poisonlab's PGD settings)."""
        return self.fast_defaults

    def effective(self) -> dict[str, Any]:
        """The constructor parameters the library class gets (defaults filled in)."""
        return effective_settings(self.library_class(self.attack), self.settings,
                                  self.defaults())

    def params(self) -> dict[str, Any]:
        """Library, version, class and effective parameters, JSON-ready (see :func:`jsonable`).

        Recorded in every AttackResult.
        """
        effective = {k: jsonable(v) for k, v in self.effective().items()}
        return {"library": self.library, "version": self.library_version(),
                "class": self.attack, **effective}


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing this package must not import ART or foolbox.
    if name in ("ARTAttack", "Square"):
        from . import art

        return getattr(art, name)
    if name == "FoolboxAttack":
        from . import foolbox

        return foolbox.FoolboxAttack
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "THREAT_OWNED",
    "LibraryAttack",
    "derive_seed",
    "effective_settings",
    "jsonable",
    "library_boundary",
    "seeded_global_rngs",
    "validate_settings",
]
