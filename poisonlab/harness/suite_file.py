"""A suite file as plain YAML: reading it, merging its includes, and the limits on it.

:func:`read_suite_file` turns a file into a mapping (no key given twice, includes merged,
each failure one :class:`~poisonlab.errors.SuiteError` line); :func:`validate_plain` makes
sure the mapping holds settings, not data or objects (plain values only, nested at most
``MAX_DEPTH`` deep, at most ``MAX_VALUES`` values, no recursive alias). What the keys mean
is :func:`poisonlab.harness.suite.parse_suite`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from .._text import short_repr as _r
from ..errors import PoisonlabError, SuiteError

#: Nesting and size limits of a suite's values: a suite is settings, not data; the size
#: counts a value each time it is reached, so that a YAML alias bomb is refused.
MAX_DEPTH, MAX_VALUES = 32, 100_000


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(f"key {key!r} is given twice in one mapping (lines {first.line + 1} "
                         f"and {again.line + 1}): expected each key once")
        self.problem_mark = again


class _SuiteLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML would keep
    the last one silently, so ``seeds:`` written twice would drop the first list)."""


def _unique_keys_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterator[Any]:
    first: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # merge keys (<<) may override; unhashable keys fail in PyYAML itself
        key = loader.construct_object(key_node)
        if key in first:
            raise _DuplicateKey(key, first[key], key_node.start_mark)
        first[key] = key_node.start_mark
    return (yield from loader.construct_yaml_map(node))


_SuiteLoader.add_constructor("tag:yaml.org,2002:map", _unique_keys_map)


def read_suite_file(p: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping a suite file holds, its ``include:`` files merged under it (the including
    file's keys win). Refuses a missing or unreadable file, malformed YAML, a key given
    twice in one mapping and an include cycle, each with one SuiteError line."""
    if p.resolve() in seen:
        raise SuiteError(f"{p}: include cycle through {' -> '.join(map(str, seen))}")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"suite file {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise SuiteError(f"suite file {str(p)!r} is a folder: expected a YAML file") from None
    except UnicodeDecodeError as e:
        raise SuiteError(f"suite file {str(p)!r} cannot be read: byte {e.start} is not "
                         "UTF-8: expected a UTF-8 text file") from None
    except OSError as e:
        raise SuiteError(f"suite file {str(p)!r} cannot be read: "
                         f"{e.strerror or type(e).__name__}") from None
    try:
        data = yaml.load(text, Loader=_SuiteLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SuiteError(f"{p}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise SuiteError(f"{p}: malformed YAML: nested too deeply: expected a suite of at "
                         f"most {MAX_DEPTH} levels") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise SuiteError(f"{p}: malformed YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{p}: expected a mapping of suite keys, got {type(data).__name__}")
    inc = data.pop("include", None)
    if inc is None:
        return data
    base_files = inc if isinstance(inc, list) else [inc]
    if not base_files:
        raise SuiteError(f"{p}: include=[] is not allowed: expected a file path or a "
                         "non-empty list of them")
    merged: dict[str, Any] = {}
    for f in base_files:
        if not isinstance(f, str) or not f.strip():
            raise SuiteError(f"{p}: include={f!r} is not allowed: expected a file path")
        merged.update(read_suite_file(p.parent / f, seen=(*seen, p.resolve())))
    merged.update(data)
    return merged


_PLAIN = (str, int, float, type(None))


def validate_plain(raw: dict[str, Any]) -> None:
    """Every value is plain YAML (null, true/false, number, string, list, mapping with
    string keys), nested at most MAX_DEPTH deep, MAX_VALUES values in all, and no list or
    mapping contains itself (a recursive YAML alias)."""
    count = 0
    on_path: set[int] = set()

    def visit(v: Any, where: str, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise SuiteError(f"the suite has more than {MAX_VALUES} values (a YAML alias "
                             "bomb?): expected settings, not data")
        if isinstance(v, _PLAIN):
            return
        if not isinstance(v, dict | list | tuple):
            raise SuiteError(f"{where}={_r(v)} is not allowed: expected a number, a string, "
                             f"true/false, null, a list or a mapping, not a "
                             f"{type(v).__name__}")
        if id(v) in on_path:
            raise SuiteError(f"{where} contains itself (a recursive YAML alias): expected a "
                             "finite value")
        if depth >= MAX_DEPTH:
            raise SuiteError(f"{where} is nested more than {MAX_DEPTH} levels deep: expected "
                             "settings, not data")
        on_path.add(id(v))
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise SuiteError(f"{where}: key {_r(k)} is not allowed: expected a "
                                     "string key (write it in quotes)")
                visit(x, f"{where}.{k}" if where else k, depth + 1)
        else:
            for i, x in enumerate(v):
                visit(x, f"{where}[{i}]", depth + 1)
        on_path.discard(id(v))

    visit(raw, "", 0)


def raw_list(raw: dict[str, Any], key: str, *, required: bool = True) -> list[Any]:
    """``raw[key]`` as a list (SuiteError naming the key otherwise); [] when absent and
    not ``required``."""
    v = raw.get(key)
    if v is None:
        if required:
            raise SuiteError(f"{key} is missing: expected a non-empty list")
        return []
    if not isinstance(v, list) or (required and not v):
        raise SuiteError(f"{key}={_r(v)} is not allowed: expected a non-empty list")
    return v


def raw_mapping(raw: dict[str, Any], key: str) -> Any:
    """``raw[key]``, {} when absent or null (a falsy list or number stays, to be refused)."""
    v = raw.get(key)
    return {} if v is None else v


class EntryContext:
    """Prefixes a ConfigError raised inside the block with the suite path of the entry."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: BaseException | None, tb: Any) -> bool:
        if isinstance(e, SuiteError):
            return False
        if isinstance(e, PoisonlabError):
            raise SuiteError(f"{self.where}: {e}") from None
        return False


def refuse_unknown_keys(raw: Mapping[Any, Any], allowed: tuple[str, ...], *,
                        section: str | None = None, entry: str | None = None) -> None:
    """SuiteError for the first key of ``raw`` not in ``allowed``, with a did-you-mean:
    ``unknown {section} key 'x': expected one of ...`` for a section of the suite
    (``suite``, ``threat_model``), ``{entry}: unknown key 'x': expected one of ...`` for an
    entry of a list (``threat_model.poisoning[0]``)."""
    from ..registry import did_you_mean

    for k in raw:
        if k not in allowed:
            head = f"{entry}: unknown key" if entry is not None else f"unknown {section} key"
            raise SuiteError(f"{head} {_r(k)}: expected one of "
                             f"{', '.join(allowed)}{did_you_mean(str(k), list(allowed))}")
