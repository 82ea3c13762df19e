"""One registry type for datasets, models, attacks, defenses and executors.

Entries are registered with a decorator, or lazily as ``"module:attr"`` strings so that an
optional dependency (ART, foolbox, ray) is imported only when its entry is used. An unknown
name raises :class:`UnknownNameError` with a did-you-mean hint.

>>> r: Registry[int] = Registry("number")
>>> @r.register("one")
... def one() -> int:
...     return 1
>>> r.get("one")()
1
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """A name -> object table with decorator registration and did-you-mean errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, help=help)
            return obj

        return deco

    def add(self, name: str, obj: T | str, *, help: str = "") -> None:
        """Add an entry; ``obj`` may be a lazy ``"package.module:attr"`` string."""
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        if not help and not isinstance(obj, str):  # a lazy "module:attr" has no doc yet
            lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            help = lines[0] if lines else ""
        self._help[name] = help

    def get(self, name: str) -> T:
        if not isinstance(name, str) or name not in self._entries:
            options = sorted(self._entries)
            raise UnknownNameError(
                f"{self.kind}={name!r} is not known: expected one of {', '.join(options)}"
                f"{did_you_mean(str(name), options)}"
            )
        obj = self._entries[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
        return obj  # type: ignore[return-value]

    def build(self, name: str, **params: Any) -> Any:
        """Look up ``name`` and call it with ``params``, refusing unknown parameters."""
        from ._validation import check_params

        factory = self.get(name)
        check_params(f"{self.kind} {name!r}", factory, params)
        return factory(**params)  # type: ignore[operator]

    def help(self, name: str) -> str:
        self.get(name)
        return self._help.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
