"""Transfer attacks: craft adversarial examples on a surrogate, evaluate them on the target.

The attacker of a transfer threat (``knowledge: transfer``) has no access to the deployed
model's gradients, only to data from the same distribution: they train their own model
(the surrogate), attack it with any white-box attack, and submit the result to the target
(Papernot et al. 2016, "Transferability in Machine Learning"; Tramer et al. 2018,
"Ensemble Adversarial Training"). Because the examples never saw the target's gradients,
a transfer attack is also a check for gradient masking: a defense whose white-box robust
accuracy is *higher* than its transfer robust accuracy is hiding its gradients (Athalye et
al. 2018).

``Transfer(attack=PGD(), surrogate=trained_model)`` works on any model in Python. In a suite
the surrogate is declared, not passed (:class:`SurrogateSpec`): by default the target's
architecture trained with defense ``none`` on the clean training labels from another seed,
which the harness trains once per (dataset, seed) and reuses across cells.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from .._torch import eval_mode, model_device, output_width
from .._validation import validate_params, validate_seed
from ..errors import ConfigError, DataError
from ..registry import did_you_mean, split_named
from ..threat import EvasionThreat, Knowledge
from .base import Attack

_SPEC_KEYS = ("model", "defense", "seed")


def _named(value: Any, field: str) -> tuple[str | None, tuple[tuple[str, Any], ...]]:
    """``"mlp"`` or ``{name: mlp, hidden: [64]}`` -> ``("mlp", (("hidden", [64]),))``."""
    if value is None:
        return None, ()
    named = split_named(value)
    if named is not None:
        return named[0], tuple(sorted(named[1].items()))
    raise ConfigError(
        f"{field}={value!r} is not allowed: expected a name or a mapping with a 'name' key"
    )


@dataclass(frozen=True)
class SurrogateSpec:
    """How the harness trains a transfer attack's surrogate.

    Parameters
    ----------
    model : str or None
        Architecture from the models registry, with ``model_params``; None (default): the
        target's own architecture and parameters.
    defense : str
        Defense the surrogate is trained with (default ``"none"``), with ``defense_params``.
    seed : int or None
        Seed of the surrogate's initialisation and training; None (default): a child seed of
        the cell's seed, different from the target's.

    The surrogate is trained on the clean training labels with the suite's training
    settings.

    >>> spec = SurrogateSpec.from_config({"model": {"name": "mlp", "hidden": [32]}})
    >>> spec.model, spec.model_params, spec.defense, spec.seed
    ('mlp', (('hidden', [32]),), 'none', None)
    """

    model: str | None = None
    model_params: tuple[tuple[str, Any], ...] = ()
    defense: str = "none"
    defense_params: tuple[tuple[str, Any], ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        from ..defenses import get_defense
        from ..models import models

        if self.model is not None:
            factory = models.get(self.model)
            validate_params(f"surrogate model {self.model!r}", factory,
                         dict(self.model_params), skip=("input_shape", "n_classes"))
        get_defense(self.defense, **dict(self.defense_params))
        if self.seed is not None:
            object.__setattr__(self, "seed", validate_seed("seed", self.seed))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, *,
                    role: str = "surrogate") -> SurrogateSpec:
        """Parse a suite's ``surrogate:`` (or distillation's ``teacher:``) mapping.

        Keys: model, defense, seed. ``role`` names the field in error messages.
        """
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"{role}={config!r} is not allowed: expected a trained nn.Module or a "
                "mapping like {model: mlp, defense: none, seed: 1}"
            )
        for k in config:
            if k not in _SPEC_KEYS:
                raise ConfigError(
                    f"{role}: unknown key {k!r}: expected one of {', '.join(_SPEC_KEYS)}"
                    f"{did_you_mean(str(k), list(_SPEC_KEYS))}"
                )
        model, model_params = _named(config.get("model"), f"{role}.model")
        defense, defense_params = _named(config.get("defense", "none"), f"{role}.defense")
        seed = config.get("seed")
        if seed is not None:
            seed = validate_seed(f"{role}.seed", seed)
        return cls(model=model, model_params=model_params, defense=defense or "none",
                   defense_params=defense_params, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "model_params": dict(self.model_params),
                "defense": self.defense, "defense_params": dict(self.defense_params),
                "seed": self.seed}


@dataclass(frozen=True)
class Transfer(Attack):
    """Craft with a white-box ``attack`` on ``surrogate``; measure on the target model.

    Parameters
    ----------
    attack : Attack, name, or mapping ``{name: pgd, steps: 40, ...}``
        The white-box attack run on the surrogate (default: PGD with its defaults). It may
        not itself be a transfer attack.
    surrogate : nn.Module, SurrogateSpec, mapping or None
        A trained model with the target's input shape and classes; or a declaration the
        harness trains (see :class:`SurrogateSpec`; None means the default declaration).
        Calling the attack directly needs a trained module.

    The result's ``success`` is measured on the target; ``gradients`` counts the surrogate's.
    With ``early_stop`` in the inner attack, it stops when the *surrogate* is fooled.

    The examples are crafted on the target model's device: a surrogate that lives on
    another device is copied there for the call (the module passed in is not moved; move
    it yourself to spare the copy). The inner attack's random draws come from the call's
    CPU generator, so they do not depend on the device.

    >>> from poisonlab import PGD
    >>> res = Transfer(PGD(steps=20), surrogate=other_model)(
    ...     model, x, y, threat=EvasionThreat(eps=0.1), seed=0)  # doctest: +SKIP
    """

    name: ClassVar[str] = "transfer"
    knowledge: ClassVar[Knowledge] = Knowledge.TRANSFER
    attack: Any = None
    surrogate: Any = None

    def __post_init__(self) -> None:
        from . import get_attack

        inner = self.attack
        if inner is None:
            inner = get_attack("pgd")
        elif isinstance(inner, str | Mapping):
            named = split_named(inner)
            if named is None:
                raise ConfigError(
                    f"attack={self.attack!r} is not allowed: a mapping needs a 'name' key, "
                    "e.g. {name: pgd, steps: 40}"
                )
            inner = get_attack(named[0], **named[1])
        if not isinstance(inner, Attack) or isinstance(inner, Transfer):
            raise ConfigError(
                f"attack={self.attack!r} is not allowed: expected a white-box attack (an "
                "Attack other than transfer, its name or {name: ..., params})"
            )
        object.__setattr__(self, "attack", inner)
        sur = self.surrogate
        if not isinstance(sur, nn.Module | SurrogateSpec):
            sur = SurrogateSpec.from_config(sur)
        object.__setattr__(self, "surrogate", sur)

    @property
    def needs_training(self) -> bool:
        """True while the surrogate is a declaration the harness has not trained yet."""
        return isinstance(self.surrogate, SurrogateSpec)

    def with_surrogate(self, model: nn.Module) -> Transfer:
        """The same attack with a trained surrogate."""
        return dataclasses.replace(self, surrogate=model)

    def params(self) -> dict[str, Any]:
        sur = self.surrogate
        return {
            "attack": self.attack.name,
            "attack_params": self.attack.params(),
            "surrogate": sur.to_dict() if isinstance(sur, SurrogateSpec)
            else type(sur).__name__,
        }

    def _clip(self) -> bool:
        return bool(self.attack._clip())

    def validate_threat(self, threat: EvasionThreat) -> None:
        self.attack.validate_threat(threat)

    def _perturb(self, model, x, y, *, threat, target, rng):  # type: ignore[no-untyped-def]
        sur = self.surrogate
        if not isinstance(sur, nn.Module):
            raise ConfigError(
                f"surrogate={sur!r} is not trained: pass surrogate=<trained nn.Module> "
                "(a suite's declared surrogate is trained by the harness)"
            )
        device = model_device(model)  # where x, y and target already are
        if model_device(sur) != device:
            # Craft where the target lives, on a copy: the caller's module stays put.
            sur = copy.deepcopy(sur).to(device)
        k_sur = output_width(sur, x[:1])
        k_target = output_width(model, x[:1])
        if k_sur != k_target:
            raise DataError(
                f"surrogate has {k_sur} outputs: expected {k_target}, the target model's"
            )
        with eval_mode(sur):
            x_adv, grads = self.attack._perturb(
                sur, x.to(device), y.to(device), threat=threat,
                target=None if target is None else target.to(device), rng=rng,
            )
        return x_adv.detach().to(x.device), grads

