"""Why a baseline and a run differ beyond the numbers: the suite's changed keys, and the
missing / new rows those changes explain, grouped (``poisonlab check`` prints these
before any row).

One changed defense parameter makes every row of that defense "missing" (the baseline's
label) and "new" (the run's): listed row by row that is dozens of lines for one cause.
:func:`config_changes` names each changed key of the suite once; :func:`group_rows`
gathers the missing and new rows by the dataset, model, defense or poisoning that only one
side has.

>>> config_changes({"defenses": [{"name": "ls", "params": {"eps": 0.1}}], "seeds": [0]},
...                {"defenses": [{"name": "ls", "params": {"eps": 0.2}}], "seeds": [0, 1]})
['defenses[0] (ls).params.eps: 0.1 -> 0.2', 'seeds: [0] -> [0, 1]']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .._text import short_repr

#: Keys of a suite config that change no measured number (and are not worth a line).
_QUIET = ("description", "expectations", "tolerances")
#: The coordinates a row group can differ in, in the order rows name them.
COORDINATES = ("dataset", "model", "defense", "poisoning")
_MISSING = object()


def config_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """One line per key whose value differs between two suite configs (mappings as
    results.json stores them): ``path: old -> new``, ``path: added (value)``,
    ``path: removed (was value)``. [] when either side is unknown (None)."""
    if old is None or new is None:
        return []
    return list(_diff(old, new, path))


def _diff(old: Any, new: Any, path: str) -> Iterable[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in dict.fromkeys([*old, *new]):
            if not path and key in _QUIET:
                continue
            sub = f"{path}.{key}" if path else str(key)
            yield from _diff(old.get(key, _MISSING), new.get(key, _MISSING), sub)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            named = (isinstance(a, Mapping) and isinstance(b, Mapping)
                     and a.get("name") == b.get("name") and isinstance(a.get("name"), str))
            yield from _diff(a, b, f"{path}[{i}]" + (f" ({a['name']})" if named else ""))
    elif old is _MISSING:
        yield f"{path}: added ({short_repr(new)})"
    elif new is _MISSING:
        yield f"{path}: removed (was {short_repr(old)})"
    elif old != new:
        yield f"{path}: {short_repr(old)} -> {short_repr(new)}"


def group_rows(rows: Iterable[Any]) -> tuple[list[str], set[tuple[Any, ...]]]:
    """Lines for the missing and new rows that one coordinate value explains, and the
    identities of the rows they explain.

    A value of ``dataset``, ``model``, ``defense`` or ``poisoning`` whose every row is
    missing (the baseline has it, the results have no value for it), or whose every row
    is new, explains those rows: ``defense 'ls(eps=0.1)': 30 numbers of the baseline have
    no value in the results``. ``rows`` are the gate's
    :class:`~poisonlab.harness.verdicts.Comparison` rows, all of them.
    """
    rows = list(rows)
    lines: list[str] = []
    explained: set[tuple[Any, ...]] = set()
    for verdict, side in (("missing", "of the baseline have no value in the results"),
                          ("new", "are new in the results, not in the baseline")):
        for coord in COORDINATES:
            values = Counter(getattr(r, coord) for r in rows
                             if r.verdict.value == verdict and r.identity not in explained)
            elsewhere = {getattr(r, coord) for r in rows if r.verdict.value != verdict}
            for value, n in values.items():
                if value in elsewhere:
                    continue
                lines.append(f"{coord} {value!r}: {n} number{'s' * (n != 1)} {side}")
                explained |= {r.identity for r in rows
                              if r.verdict.value == verdict and getattr(r, coord) == value}
    return lines, explained
