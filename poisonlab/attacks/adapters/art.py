"""ART (Adversarial Robustness Toolbox) evasion attacks inside poisonlab's attack template.

Nicolae et al. 2018, "Adversarial Robustness Toolbox v1.0.0", arXiv:1807.01069.

``ARTAttack(name, settings)`` runs any ART evasion attack class that accepts a
``PyTorchClassifier``; the registry builds it from ``"art:<Class>"``. ``Square`` is ART's
``SquareAttack`` (Andriushchenko et al. 2020) under poisonlab's setting names, registered as
``"square"``. Data crosses to ART once, as numpy arrays, and comes back once.

Mapping from the threat: ``eps`` -> ``eps``; ``norm`` linf / l2 -> ``norm=np.inf`` / ``2``;
``targeted`` -> ``targeted=True`` with ``y=target``; ``bounds`` -> the classifier's
``clip_values``; the model's device -> ``device_type`` (``"gpu"`` on CUDA). Defaults that
differ from ART's (faster, silent): ``batch_size=256`` and ``verbose=False``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import art
import art.attacks.evasion as art_evasion
import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification import PyTorchClassifier
from art.estimators.classification.classifier import ClassGradientsMixin
from art.estimators.estimator import LossGradientsMixin
from art.exceptions import EstimatorError
from torch import nn

from ..._torch import model_device, output_width
from ..._validation import validate_scalar
from ...errors import AttackError, ConfigError, PoisonlabError, first_line
from ...threat import EvasionThreat, Knowledge, Norm
from ..base import Attack
from . import LibraryAttack, effective_settings, library_boundary

_NORM: dict[Norm, float] = {Norm.LINF: np.inf, Norm.L2: 2}

#: ART classes without a ``norm`` parameter that work in one norm only.
_FIXED_NORM: dict[str, str] = {
    "BasicIterativeMethod": "linf",
    "CarliniL0Method": "l0",
    "CarliniL2Method": "l2",
    "CarliniLInfMethod": "linf",
    "DeepFool": "l2",
    "ElasticNet": "l1",
}
_OTHER_NORM: dict[str, str] = {
    "BasicIterativeMethod": "ProjectedGradientDescent",
    "CarliniL2Method": "CarliniLInfMethod",
    "CarliniLInfMethod": "CarliniL2Method",
}

#: Iterative gradient attacks: one input gradient per sample, step and random start.
_ITERATIVE: frozenset[str] = frozenset({
    "AutoConjugateGradient", "AutoProjectedGradientDescent", "BasicIterativeMethod",
    "MomentumIterativeMethod", "ProjectedGradientDescent", "ProjectedGradientDescentNumpy",
    "ProjectedGradientDescentPyTorch", "RescalingAutoConjugateGradient",
})

#: Classes that take image batches (n, channels, height, width) only.
_IMAGES_ONLY: frozenset[str] = frozenset({"SquareAttack"})

#: Our defaults where ART's are slow or chatty (applied only where the class takes them).
FAST_DEFAULTS: Mapping[str, Any] = {"batch_size": 256, "verbose": False}

#: poisonlab's names for the settings of ART's iterative gradient attacks -> ART's names
#: (the first the class takes). ``rel_stepsize`` (a fraction of eps, as in
#: :class:`~poisonlab.PGD`) becomes ``eps_step = rel_stepsize * eps`` at the call, when the
#: threat's eps is known.
ALIASES: Mapping[str, tuple[str, ...]] = {
    "steps": ("max_iter",), "random_start": ("num_random_init", "nb_random_init"),
}

#: ART's PGD classes get poisonlab's PGD defaults (40 steps of 0.1 * eps, one random
#: start), so ``art:ProjectedGradientDescent`` and ``pgd`` with no settings are the same
#: attack; ART's own (100 steps of an absolute 0.1, no random start) take a step larger
#: than eps at 8/255.
PGD_DEFAULTS: Mapping[str, Any] = {"max_iter": 40, "num_random_init": 1, "rel_stepsize": 0.1}
_PGD_CLASSES: frozenset[str] = frozenset({
    "ProjectedGradientDescent", "ProjectedGradientDescentNumpy",
    "ProjectedGradientDescentPyTorch",
})


def takes_rel_stepsize(name: str) -> bool:
    """Does the ART class ``name`` have an ``eps_step`` that ``rel_stepsize`` can set?"""
    return "eps_step" in inspect.signature(_art_class(name)).parameters


def translate_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with poisonlab's names (``steps``, ``random_start``) in ART's, for the
    ART class ``name``; ART's own names, ``rel_stepsize`` and names the class lacks pass
    unchanged (the settings check refuses the last with a did-you-mean).

    Raises ConfigError when one setting is given under both names.

    >>> translate_settings("ProjectedGradientDescent", {"steps": 10, "random_start": False})
    {'max_iter': 10, 'num_random_init': 0}
    """
    params = inspect.signature(_art_class(name)).parameters
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "rel_stepsize" and "eps_step" in settings:
            raise ConfigError(
                f"art:{name} got both rel_stepsize and eps_step: expected one of them "
                "(rel_stepsize is a fraction of eps, eps_step an absolute step)")
        art_key = next((k for k in ALIASES.get(key, ()) if k in params), None)
        if art_key is None:
            out[key] = value
            continue
        if art_key in settings:
            raise ConfigError(
                f"art:{name} got both {key} and {art_key}: expected one of them "
                f"({key} is poisonlab's name for ART's {art_key})")
        if key == "random_start":
            if not isinstance(value, bool):
                raise ConfigError(
                    f"art:{name}: random_start={value!r} is not allowed: expected true or false")
            value = int(value)
        out[art_key] = value
    return out


class _CastInputs(nn.Module):
    """``model(x.to(dtype))``: ART's decision-based attacks (HopSkipJump, Boundary) hand
    the classifier float64 arrays, which a float32 model refuses."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype))


def _requirements_met(cls: type) -> bool:
    reqs = getattr(cls, "_estimator_requirements", None)
    if reqs is None:
        return False
    mro = PyTorchClassifier.__mro__
    return all(
        any(r in mro for r in req) if isinstance(req, tuple) else req in mro for req in reqs
    )


@functools.cache
def art_attack_names() -> tuple[str, ...]:
    """ART's evasion attack classes that can attack a ``PyTorchClassifier``, sorted."""
    names = []
    for name in dir(art_evasion):
        obj = getattr(art_evasion, name)
        if (inspect.isclass(obj) and issubclass(obj, EvasionAttack) and not inspect.isabstract(obj)
                and "TensorFlow" not in name and _requirements_met(obj)):
            names.append(name)
    return tuple(sorted(names))


def _needs_gradients(name: str) -> bool:
    """Does the ART class require an estimator with loss or class gradients?"""
    reqs = getattr(_art_class(name), "_estimator_requirements", None) or ()
    flat = [r for req in reqs for r in (req if isinstance(req, tuple) else (req,))]
    return any(r in (LossGradientsMixin, ClassGradientsMixin) for r in flat)


def _art_class(name: str) -> type:
    cls: type = getattr(art_evasion, name)
    return cls


def _gradients(name: str, settings: Mapping[str, Any], n: int) -> int:
    """Best estimate of the per-sample input gradients an ART attack computes."""
    restarts = max(1, int(settings.get("num_random_init", settings.get("nb_random_init", 1))))
    if name in _ITERATIVE:
        return int(settings.get("max_iter", 0)) * n * restarts
    if name == "FastGradientMethod" and not settings.get("minimal", False):
        return n * restarts
    # Other classes do not report their work: 0 means unknown here (and is exact for the
    # gradient-free ones: SquareAttack, HopSkipJump, BoundaryAttack, ...).
    return 0


def validate_art_threat(name: str, threat: EvasionThreat) -> None:
    """Refuse a threat the ART class cannot honour (targeting, a fixed other norm)."""
    params = inspect.signature(_art_class(name)).parameters
    if threat.targeted and "targeted" not in params:
        raise ConfigError(
            f"threat={threat.id!r} is not allowed for art:{name}: the class has no targeted "
            "mode (expected an untargeted threat)"
        )
    fixed = _FIXED_NORM.get(name)
    if fixed is not None and fixed != Norm(threat.norm).value:
        other = _OTHER_NORM.get(name)
        hint = f" (did you mean 'art:{other}'?)" if other else ""
        raise ConfigError(
            f"threat={threat.id!r} is not allowed for art:{name}: the class attacks in the "
            f"{fixed} norm only{hint}"
        )


def art_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: EvasionThreat,
    attack: str,
    settings: Mapping[str, Any],
    seed: int,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Run the ART evasion attack class ``attack`` on ``model`` under ``threat``.

    Parameters
    ----------
    model : nn.Module returning logits, already in eval mode
    x : Tensor (n, *input_shape) on the model's device, inside the threat's bounds
    y : int64 Tensor (n,)
        True labels (the attack's ``y`` when untargeted).
    threat : EvasionThreat
        Supplies ``eps``, ``norm``, ``targeted`` and ``clip_values``.
    attack : str
        Name of a class in ``art.attacks.evasion`` (see :func:`art_attack_names`).
    settings : mapping
        The other constructor parameters, passed unchanged (already checked).
    seed : int
        Seeds the global numpy / Python / torch generators for the call (restored after).
    target : int64 Tensor (n,), optional
        Target classes of a targeted threat (the attack's ``y`` then).

    Returns
    -------
    (x_adv, gradients) : Tensor like ``x`` (not yet projected), int (best estimate)

    Raises
    ------
    ConfigError
        If the class cannot honour the threat or ART refuses the settings.
    """
    validate_art_threat(attack, threat)
    cls = _art_class(attack)
    params = inspect.signature(cls).parameters
    if attack in _IMAGES_ONLY and x.dim() != 4:
        raise ConfigError(
            f"x has shape {tuple(x.shape)}: art:{attack} expected image batches "
            "(n, channels, height, width)"
        )
    if threat.eps == 0:  # the ball is the point x; some ART classes refuse eps=0
        return x.clone(), 0
    kwargs = dict(settings)
    kwargs.update({k: v for k, v in (("eps", threat.eps), ("norm", _NORM[Norm(threat.norm)]),
                                     ("targeted", threat.targeted)) if k in params})
    rel = kwargs.pop("rel_stepsize", None)
    if rel is not None:
        kwargs["eps_step"] = float(rel) * threat.eps
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters()), x.dtype)
    with library_boundary(model, seed, device):
        classifier = PyTorchClassifier(
            model=_CastInputs(model, dtype), loss=nn.CrossEntropyLoss(),
            input_shape=tuple(x.shape[1:]),
            nb_classes=output_width(model, x), clip_values=threat.bounds,
            device_type="gpu" if device.type == "cuda" else "cpu",
        )
        try:
            instance = cls(classifier, **kwargs)
        except (ValueError, TypeError, EstimatorError) as e:
            raise ConfigError(
                f"art:{attack} refused its settings under {threat.id}: {e}"
            ) from None
        except ImportError as e:
            raise ConfigError(
                f"art:{attack} needs a package that is not installed: {e}"
            ) from None
        except Exception as e:
            raise _failed(attack, threat, e) from e
        labels = y if target is None else target
        x_np = x.detach().cpu().numpy()
        try:
            out = instance.generate(x=x_np, y=labels.cpu().numpy())
        except ImportError as e:
            raise ConfigError(
                f"art:{attack} needs a package that is not installed: {e}"
            ) from None
        except ValueError as e:
            raise ConfigError(f"art:{attack} failed under {threat.id}: {first_line(e)}") from e
        except PoisonlabError:
            raise
        except Exception as e:
            raise _failed(attack, threat, e) from e
    x_adv = torch.from_numpy(np.asarray(out)).to(device=x.device, dtype=x.dtype)
    return x_adv.reshape(x.shape), _gradients(attack, effective_settings(cls, settings, {}),
                                              int(x.shape[0]))


def _failed(attack: str, threat: EvasionThreat, e: BaseException) -> AttackError:
    return AttackError(
        f"art:{attack} failed under {threat.id}: {type(e).__name__}: {first_line(e)}")


@dataclass(frozen=True)
class ARTAttack(LibraryAttack):
    """Any ART evasion attack, by class name, as a poisonlab attack.

    Nicolae et al. 2018, "Adversarial Robustness Toolbox v1.0.0". The threat supplies eps,
    norm, targeting and bounds; the model's device picks ART's ``device_type``; ART's
    ``batch_size`` defaults to 256 and its progress bars are off. ``AttackResult.params``
    records the effective constructor parameters and ART's version.

    Parameters
    ----------
    attack : str
        A class in ``art.attacks.evasion`` that accepts a ``PyTorchClassifier``, e.g.
        ``"ProjectedGradientDescent"``, ``"FastGradientMethod"``, ``"SquareAttack"``,
        ``"CarliniL2Method"``.
    settings : mapping
        Its other constructor parameters, e.g. ``{"max_iter": 40, "eps_step": 0.01}``.
        Unknown ones raise ConfigError, as do eps, norm, targeted and estimator.
        poisonlab's names work too and mean what they mean for :class:`~poisonlab.PGD`:
        ``steps`` (ART's ``max_iter``), ``random_start`` (``num_random_init`` 1 or 0) and
        ``rel_stepsize`` (``eps_step = rel_stepsize * eps``). ART's PGD classes default to
        our PGD's settings (40 steps of 0.1 * eps, one random start).

    Errors: a failure inside ART is an :class:`~poisonlab.errors.AttackError` of one line
    (the class, the threat, ART's error type and first line); refused settings and
    missing packages are ConfigErrors. Inputs reach the model in its parameters' dtype
    (ART's decision-based attacks hand it float64).

    Randomness: ART draws from the global numpy generator; the call seeds it (and the
    Python and torch ones) from ``seed`` and restores it afterwards (see
    :func:`~poisonlab.attacks.adapters.seeded_global_rngs`).

    >>> from poisonlab.attacks.adapters.art import ARTAttack
    >>> pgd = ARTAttack("ProjectedGradientDescent", {"max_iter": 20, "eps_step": 0.01})
    >>> pgd.name, pgd.params()["batch_size"], pgd.params()["num_random_init"]
    ('art:ProjectedGradientDescent', 256, 1)
    >>> ARTAttack("ProjectedGradientDescent", {"steps": 10, "rel_stepsize": 0.25}).settings
    {'max_iter': 10, 'rel_stepsize': 0.25}
    >>> res = pgd(model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    library: ClassVar[str] = "art"
    fast_defaults: ClassVar[Mapping[str, Any]] = FAST_DEFAULTS

    def __post_init__(self) -> None:
        settings = self.settings
        if isinstance(settings, Mapping):
            settings = dict(settings)  # never change the caller's mapping
            if isinstance(self.attack, str) and self.attack in art_attack_names():
                settings = translate_settings(self.attack, settings)
        rel = settings.pop("rel_stepsize", None) if isinstance(settings, dict) else None
        object.__setattr__(self, "settings", settings)
        super().__post_init__()
        if rel is not None:
            if not takes_rel_stepsize(self.attack):
                raise ConfigError(
                    f"art:{self.attack} got unknown parameter 'rel_stepsize': the class "
                    "has no eps_step to set")
            rel = validate_scalar("rel_stepsize", rel, lo=0, lo_closed=False)
            object.__setattr__(self, "settings", {**self.settings, "rel_stepsize": rel})

    def defaults(self) -> Mapping[str, Any]:
        if self.attack not in _PGD_CLASSES:
            return self.fast_defaults
        ours = {k: v for k, v in PGD_DEFAULTS.items()
                if not (k == "rel_stepsize" and "eps_step" in self.settings)}
        return {**self.fast_defaults, **ours}

    def effective(self) -> dict[str, Any]:
        """ART's constructor parameters with our defaults; ``rel_stepsize`` (when set by
        the settings or our PGD defaults) stands in for ``eps_step``, which the call sets
        to ``rel_stepsize * eps``."""
        mine = {k: v for k, v in self.settings.items() if k != "rel_stepsize"}
        out = effective_settings(_art_class(self.attack), mine, self.defaults())
        rel = self.settings.get("rel_stepsize", self.defaults().get("rel_stepsize"))
        if rel is not None:
            out.pop("eps_step", None)
            out["rel_stepsize"] = rel
        return out

    @classmethod
    def available(cls) -> list[str]:
        return list(art_attack_names())

    @classmethod
    def library_class(cls, name: str) -> type:
        return _art_class(name)

    @classmethod
    def library_version(cls) -> str:
        return str(art.__version__)

    @property  # type: ignore[misc]
    def knowledge(self) -> Knowledge:  # type: ignore[override]
        """White-box when the class needs the estimator's gradients, else black-box."""
        return Knowledge.WHITE_BOX if _needs_gradients(self.attack) else Knowledge.BLACK_BOX

    def validate_threat(self, threat: EvasionThreat) -> None:
        validate_art_threat(self.attack, threat)

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        passed = {k: v for k, v in self.effective().items()
                  if k in self.settings or k in self.defaults()}
        return art_attack(model, x, y, threat=threat, attack=self.attack, settings=passed,
                          seed=rng.batch_seed(stream=0), target=target)


@dataclass(frozen=True)
class Square(Attack):
    """Square Attack: random square-shaped updates, no gradients (Andriushchenko et al. 2020).

    Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a query-efficient
    black-box adversarial attack via random search" (ECCV). Gradient-free, so it is not
    fooled by gradients that mislead (masked, obfuscated or saturated); a defense whose
    robust accuracy under Square is lower than under PGD is masking its gradients. Runs
    ART's ``SquareAttack`` (margin loss on the logits); linf and l2, untargeted only, on
    image batches (n, channels, height, width).

    Parameters
    ----------
    max_iter : int >= 1
        Iterations (one model query per still-robust sample each).
    p_init : float in (0, 1)
        Initial fraction of the pixels a square covers; the schedule halves it as the
        iterations proceed. The first square's side, round(sqrt(p_init * h * w)), must be
        smaller than the image.
    restarts : int >= 1
        Independent runs for the samples not fooled yet (ART's ``nb_restarts``).
    batch_size : int >= 1
        Batch size of the model queries.

    Randomness: ART draws from the global numpy and Python generators; the call seeds them
    from ``seed`` and restores them afterwards.

    >>> Square(max_iter=300).params()["class"]
    'SquareAttack'
    >>> res = Square()(model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    name: ClassVar[str] = "square"
    knowledge: ClassVar[Knowledge] = Knowledge.BLACK_BOX
    max_iter: int = 1000
    p_init: float = 0.8
    restarts: int = 1
    batch_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "max_iter", validate_scalar("max_iter", self.max_iter, lo=1, integer=True))
        object.__setattr__(
            self, "p_init",
            validate_scalar("p_init", self.p_init, lo=0, hi=1, lo_closed=False, hi_closed=False))
        object.__setattr__(
            self, "restarts", validate_scalar("restarts", self.restarts, lo=1, integer=True))
        object.__setattr__(
            self, "batch_size", validate_scalar("batch_size", self.batch_size, lo=1, integer=True))

    def art_settings(self) -> dict[str, Any]:
        """The ``SquareAttack`` constructor parameters these settings stand for."""
        return {"max_iter": self.max_iter, "p_init": self.p_init,
                "nb_restarts": self.restarts, "batch_size": self.batch_size,
                "verbose": False}

    def params(self) -> dict[str, Any]:
        return {**super().params(), "library": "art", "version": str(art.__version__),
                "class": "SquareAttack"}

    def validate_threat(self, threat: EvasionThreat) -> None:
        if threat.targeted:
            raise ConfigError(
                f"threat={threat.id!r} is not allowed for square: ART's SquareAttack is "
                "untargeted only (expected targeted=False)"
            )

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        if x.dim() == 4:  # ART draws a square's corner with randint(0, image size - side)
            l2 = Norm(threat.norm) is Norm.L2
            h, w = int(x.shape[2]), int(x.shape[3])
            side = max(round((self.p_init * h * w) ** 0.5), 3 if l2 else 1)
            side += 1 if l2 and side % 2 == 0 else 0
            if side >= min(h, w):
                raise ConfigError(
                    f"p_init={self.p_init!r} is not allowed for {h}x{w} images under "
                    f"{Norm(threat.norm).value}: the first square (side {side}) must be "
                    "smaller than the image"
                )
        # ART's l2 branch divides by zero on small images (its initial tiles are
        # height // 5 pixels wide, and an empty window has norm 0); the NaN proposals it
        # makes are never accepted (their loss compares False), so the warnings are noise.
        with np.errstate(divide="ignore", invalid="ignore"):
            x_adv, _ = art_attack(model, x, y, threat=threat, attack="SquareAttack",
                                  settings=self.art_settings(), seed=rng.batch_seed(stream=0))
        return x_adv, 0  # gradient-free: model queries only
