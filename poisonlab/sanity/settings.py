"""A suite's ``checks:`` block (:class:`SanitySettings`) and the names of every check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._validation import validate_bool, validate_distinct, validate_scalar
from ..errors import ConfigError, UnknownNameError
from ..registry import did_you_mean

#: Every check, in the order they run and are reported.
ALL_CHECKS: tuple[str, ...] = (
    "iterative_vs_single_step", "monotone_in_eps", "suite_attacks_ordered",
    "unbounded_eps", "transfer_vs_whitebox",
    "blackbox_vs_whitebox", "convergence", "margin_vs_ce", "noise_vs_attack",
    "gradient_norms",
)

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SanitySettings:
    """A suite's ``checks:`` block.

    Parameters
    ----------
    n_probe : int >= 1
        Most correctly classified test points the probes attack (default 200).
    enabled : sequence of check names
        The checks to run, in any order (default: all; ``[]`` runs none).
    steps : int >= 1
        PGD steps of the probes (default 20, step size 2.5 eps / steps); the convergence
        probe doubles them.
    transfer : bool
        Also probe a transfer attack (PGD on a surrogate) where the caller can supply a
        surrogate: in a suite, the harness's default one (the model's architecture trained
        without defense on the clean labels, once per dataset, model and seed, shared with
        the suite's own transfer attacks). On by default.
    square : bool
        Also probe the Square attack (gradient-free, via ART; image inputs only): off by
        default, it costs SQUARE_ITERS model queries per point.
    """

    n_probe: int = 200
    enabled: tuple[str, ...] = ALL_CHECKS
    steps: int = 20
    transfer: bool = True
    square: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_probe", validate_scalar("n_probe", self.n_probe, lo=1,
                                                         integer=True))
        object.__setattr__(self, "steps", validate_scalar("steps", self.steps, lo=1,
                                                       integer=True))
        validate_bool("transfer", self.transfer)
        validate_bool("square", self.square)
        if isinstance(self.enabled, str) or not isinstance(self.enabled, Sequence):
            raise ConfigError(f"enabled={self.enabled!r} is not allowed: expected a list of "
                              f"check names ({', '.join(ALL_CHECKS)})")
        names = tuple(self.enabled)
        for i, name in enumerate(names):
            if not isinstance(name, str) or name not in ALL_CHECKS:
                raise UnknownNameError(
                    f"enabled[{i}]={name!r} is not known: expected one of "
                    f"{', '.join(ALL_CHECKS)}{did_you_mean(str(name), list(ALL_CHECKS))}")
            validate_distinct("enabled", names[: i + 1], what="checks")
        object.__setattr__(self, "enabled", names)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SanitySettings | None) -> SanitySettings:
        """From a suite's ``checks:`` mapping (keys: n_probe, enabled, steps, transfer,
        square); None gives the defaults."""
        if config is None:
            return cls()
        if isinstance(config, SanitySettings):
            return config
        keys = ("n_probe", "enabled", "steps", "transfer", "square")
        if not isinstance(config, Mapping):
            raise ConfigError(f"checks={config!r} is not allowed: expected a mapping like "
                              "{n_probe: 200, enabled: [gradient_norms, ...]}")
        for k in config:
            if k not in keys:
                raise ConfigError(f"unknown key {k!r}: expected one of {', '.join(keys)}"
                                  f"{did_you_mean(str(k), list(keys))}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return {"n_probe": self.n_probe, "enabled": list(self.enabled), "steps": self.steps,
                "transfer": self.transfer, "square": self.square}
