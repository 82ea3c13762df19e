"""One registry type for datasets, models, attacks, defenses and executors.

Entries are registered with a decorator, or lazily as ``"module:attr"`` strings so that an
optional dependency (ART, foolbox, ray) is imported only when its entry is used. An unknown
name raises :class:`UnknownNameError` with a did-you-mean hint.

A *namespace* resolves prefixed names that nobody registered one by one: after
``attacks.add_namespace("art", "poisonlab.attacks.adapters.art:ARTAttack")`` the name
``"art:ProjectedGradientDescent"`` is looked up by the namespace's factory (see
:class:`Namespace`), which is imported on first use only.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ._validation import validate_params
from .errors import ConfigError, UnknownNameError, did_you_mean

T = TypeVar("T")


def _resolve(obj: Any) -> Any:
    """Import a lazy ``"package.module:attr"`` entry; anything else is returned as is."""
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        return getattr(importlib.import_module(module), attr)
    return obj


def import_target(target: str, *, kind: str = "target") -> Any:
    """Import ``"package.module:attr"`` and return ``attr``; errors are one line.

    >>> import_target("math:sqrt", kind="function")(4.0)
    2.0
    >>> import_target("no_such_mod:f", kind="model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    poisonlab.errors.UnknownNameError: model='no_such_mod:f' is not known: module ...
    """
    module, sep, attr = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not sep or not module or not attr or ":" in attr:
        raise UnknownNameError(f"{kind}={target!r} is not known: expected a registered name "
                               "or 'package.module:attr'")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UnknownNameError(f"{kind}={target!r} is not known: module {module!r} cannot be "
                               f"imported ({e})") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownNameError(f"{kind}={target!r} is not known: module {module!r} has no "
                                   f"attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{kind}={target!r} is a {type(obj).__name__}: expected a callable")
    return obj


def split_named(entry: Any, key: str = "name") -> tuple[str, dict[str, Any]] | None:
    """A registry entry as written in a suite: ``"pgd"`` or ``{name: pgd, steps: 40}``.

    Returns ``(name, params)``, or None when ``entry`` is neither a string nor a mapping
    with a string under ``key`` (the caller raises its own error).

    >>> split_named({"name": "pgd", "steps": 40}), split_named("fgsm"), split_named(3)
    (('pgd', {'steps': 40}), ('fgsm', {}), None)
    """
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and isinstance(entry.get(key), str):
        return entry[key], {k: v for k, v in entry.items() if k != key}
    return None


@runtime_checkable
class Namespace(Protocol):
    """What a namespace factory provides (e.g. :class:`~poisonlab.attacks.adapters.ARTAttack`).

    ``available()`` lists the member names (for did-you-mean), ``from_name(name, **params)``
    builds one member with validated parameters (raising :class:`ConfigError` for unknown
    ones), and ``describe(name)`` gives a one-line help text.
    """

    def available(self) -> Sequence[str]: ...

    def from_name(self, name: str, /, **params: Any) -> Any: ...

    def describe(self, name: str) -> str: ...


@dataclass(frozen=True)
class NamespacedFactory:
    """What :meth:`Registry.get` returns for ``"prefix:Member"``: call it with parameters.

    ``factory(**params)`` is ``namespace.from_name(member, **params)``.
    """

    qualname: str
    namespace: Namespace
    member: str

    def __call__(self, **params: Any) -> Any:
        return self.namespace.from_name(self.member, **params)


class Registry(Generic[T]):
    """A name -> object table with decorator registration and did-you-mean errors.

    Besides plain names, a registry may hold namespaces (:meth:`add_namespace`) that resolve
    ``"prefix:Member"`` names through a lazily imported factory.

    >>> class Powers:
    ...     @staticmethod
    ...     def available() -> list[str]:
    ...         return ["square", "cube"]
    ...     @staticmethod
    ...     def from_name(name: str, /, **params: int) -> int:
    ...         return params["x"] ** {"square": 2, "cube": 3}[name]
    ...     @staticmethod
    ...     def describe(name: str) -> str:
    ...         return f"x to the power of {name}"
    >>> r: Registry[int] = Registry("fn")
    >>> r.add_namespace("pow", Powers, help="powers of x", member="Power")
    >>> r.build("pow:cube", x=2), r.help("pow:square"), r.namespaces()
    (8, 'x to the power of square', {'pow:<Power>': 'powers of x'})
    >>> r.get("pow:cub")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    poisonlab.errors.UnknownNameError: fn='pow:cub' is not known: ... (did you mean 'pow:cube'?)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}
        self._namespaces: dict[str, Namespace | str] = {}
        self._ns_listed: dict[str, bool] = {}
        self._ns_help: dict[str, str] = {}
        self._ns_member: dict[str, str] = {}

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

    def add_namespace(
        self, prefix: str, factory: Namespace | str, *, help: str = "", member: str = "name",
        listed: bool = False,
    ) -> None:
        """Resolve every ``"prefix:Member"`` name through ``factory``.

        Parameters
        ----------
        prefix : str
            The namespace, e.g. ``"art"``; no ``":"`` inside.
        factory : Namespace or "package.module:attr"
            Imported on first use when given as a string, so an optional dependency is
            loaded only when one of its names is asked for.
        help : str
            One line for listings (``poisonlab list``).
        member : str
            What a member is called in listings: ``"art:<Attack>"`` for ``member="Attack"``.
        listed : bool
            List every member in ``poisonlab list`` (see :meth:`members`); off for
            namespaces of thousands of names (timm) or whose package may be missing.
        """
        if not isinstance(prefix, str) or not prefix or ":" in prefix:
            raise ConfigError(
                f"prefix={prefix!r} is not allowed: expected a non-empty name without ':'"
            )
        if prefix in self._namespaces:
            raise ConfigError(f"{self.kind} namespace {prefix!r} is already registered")
        self._namespaces[prefix] = factory
        self._ns_help[prefix] = help
        self._ns_member[prefix] = member
        self._ns_listed[prefix] = listed

    def namespaces(self) -> dict[str, str]:
        """``{"prefix:<Member>": help}`` for each namespace, sorted by prefix."""
        return {f"{p}:<{self._ns_member[p]}>": self._ns_help[p] for p in sorted(self._namespaces)}

    def members(self, prefix: str) -> list[tuple[str, str]]:
        """``[("prefix:Member", one-line help), ...]`` of a namespace registered with
        ``listed=True`` (imports its factory); ``[]`` for the others."""
        if not self._ns_listed.get(prefix):
            return []
        ns = self._namespace(prefix)
        return [(f"{prefix}:{m}", ns.describe(m)) for m in ns.available()]

    def _namespace(self, prefix: str) -> Namespace:
        ns = self._namespaces[prefix] = _resolve(self._namespaces[prefix])
        return ns  # type: ignore[return-value]

    def _unknown(self, name: object) -> UnknownNameError:
        options = sorted(self._entries) + list(self.namespaces())
        hint = did_you_mean(str(name), options)
        if not hint and isinstance(name, str) and ":" in name:
            prefix, _, rest = name.partition(":")
            close = difflib.get_close_matches(prefix, sorted(self._namespaces), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0] + ':' + rest!r}?)" if close else ""
        return UnknownNameError(
            f"{self.kind}={name!r} is not known: expected one of {', '.join(options)}{hint}"
        )

    def _get_namespaced(self, name: str) -> NamespacedFactory:
        prefix, _, member = name.partition(":")
        ns = self._namespace(prefix)
        options = list(ns.available())
        if member not in options:
            close = difflib.get_close_matches(member, options, n=1, cutoff=0.6)
            hint = f" (did you mean {prefix + ':' + close[0]!r}?)" if close else ""
            raise UnknownNameError(
                f"{self.kind}={name!r} is not known: expected {prefix}:<"
                f"{self._ns_member[prefix]}> with one of {', '.join(options)}{hint}"
            )
        return NamespacedFactory(name, ns, member)

    def _is_namespaced(self, name: object) -> bool:
        if not isinstance(name, str) or name in self._entries:
            return False
        prefix, sep, _ = name.partition(":")
        return bool(sep) and prefix in self._namespaces

    def get(self, name: str) -> T:
        """The entry ``name``; for ``"prefix:Member"``, a :class:`NamespacedFactory`."""
        if self._is_namespaced(name):
            return self._get_namespaced(name)  # type: ignore[return-value]
        if not isinstance(name, str) or name not in self._entries:
            raise self._unknown(name)
        obj = self._entries[name] = _resolve(self._entries[name])
        return obj  # type: ignore[return-value]

    def resolve(self, name: str) -> T:
        """Like :meth:`get`, but an unregistered ``"package.module:attr"`` is imported.

        This is how a suite or the CLI names user code (``"mypkg.models:make_net"``):
        registered names and namespaces win; otherwise the module is imported (running its
        code, as any import does) and ``attr`` is returned.

        Raises
        ------
        UnknownNameError
            The name is neither registered nor an importable ``module:attr``; the message
            names the module or attribute that is missing.
        """
        if not isinstance(name, str) or ":" not in name or name in self._entries or \
                self._is_namespaced(name):
            return self.get(name)
        try:
            return import_target(name, kind=self.kind)  # type: ignore[no-any-return]
        except UnknownNameError as e:  # "torchvison:resnet18": a namespace misspelt
            prefix, _, rest = name.partition(":")
            close = difflib.get_close_matches(prefix, sorted(self._namespaces), n=1, cutoff=0.6)
            if not close:
                raise
            raise UnknownNameError(f"{e} (did you mean {close[0] + ':' + rest!r}?)") from None

    def build(self, name: str, **params: Any) -> Any:
        """Look up ``name`` and call it with ``params``, refusing unknown parameters."""

        factory = self.get(name)
        validate_params(f"{self.kind} {name!r}", factory, params)
        return factory(**params)  # type: ignore[operator]

    def help(self, name: str) -> str:
        entry = self.get(name)
        if isinstance(entry, NamespacedFactory):
            return entry.namespace.describe(entry.member)
        return self._help.get(name, "")

    def names(self) -> list[str]:
        """The plain registered names, sorted (namespaces are listed by :meth:`namespaces`)."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        # A namespaced name imports its factory to check the member.
        if self._is_namespaced(name):
            prefix, _, member = str(name).partition(":")
            return member in self._namespace(prefix).available()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
