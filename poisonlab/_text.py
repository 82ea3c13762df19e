"""Plain text shared by the checks, the harness, the report and the gate: how a spec
(``{"name": ..., "params": {...}}``) reads, how a number reads in a table, a fixed-width
table. A leaf module: none of its users has to import another for it.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any


def spec_label(spec: dict[str, Any]) -> str:
    """``name(k=v, ...)`` with parameters sorted by key, e.g. ``label_smoothing(eps=0.1)``.

    A nested mapping with a ``name`` reads the same way, others as ``{k=v}``:
    ``transfer(attack=pgd(steps=10), surrogate={defense=none})``.
    """
    params = spec.get("params") or {}
    if not params:
        return str(spec["name"])
    return spec["name"] + "(" + ", ".join(
        f"{k}={_value_label(v)}" for k, v in sorted(params.items())) + ")"


def _value_label(v: Any) -> str:
    if isinstance(v, list | tuple) and any(isinstance(x, dict) for x in v):
        return "[" + ", ".join(_value_label(x) for x in v) + "]"
    if not isinstance(v, dict):
        return str(v)
    if isinstance(v.get("name"), str):
        return spec_label({"name": v["name"], "params": {k: x for k, x in v.items()
                                                         if k != "name"}})
    return "{" + ", ".join(f"{k}={_value_label(x)}" for k, x in sorted(v.items())) + "}"


def fmt_number(v: float | None, *, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4g}" if sign else f"{v:.4g}"


def text_table(headers: list[str], rows: Iterable[list[str]]) -> str:
    rows = list(rows)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


def markdown_table(headers: list[str], rows: Iterable[list[str]], *,
                   escape: bool = False) -> list[str]:
    """The lines of a Markdown table; ``escape`` protects ``|`` inside the cells.

    >>> for line in markdown_table(["a", "b"], [["1", "x|y"]], escape=True):
    ...     print(line)
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """
    def cell(c: str) -> str:
        return c.replace("|", "\\|") if escape else c

    return (["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
            + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 seed``, ``3 seeds``, ``1 check run``.

    >>> plural(1, "seed"), plural(2, "seed"), plural(0, "analysis", "analyses")
    ('1 seed', '2 seeds', '0 analyses')
    """
    return f"{n} {word if n == 1 else (words or word + 's')}"


def short_repr(value: Any) -> str:
    """repr() shortened for a one-line message (a value may be a whole YAML subtree)."""
    return _repr.repr(value)
