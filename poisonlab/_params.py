"""The parameters of a registered entry as a user reads them: name, default, type and one
line of meaning (``poisonlab list attacks pgd``, docs/suite-reference.md).

Defaults come from the dataclass fields or the factory's signature; type and meaning from
the numpy-style ``Parameters`` section of the docstring (the line after ``name : type``).

>>> from poisonlab.attacks import PGD
>>> rows = parameters(PGD)
>>> rows[0]
Param(name='steps', default='40', type='int >= 1', doc='')
>>> [r for r in rows if r.name == "restarts"][0].doc
'Independent random starts; each sample keeps its strongest result.'
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from typing import Any, NamedTuple


class Param(NamedTuple):
    name: str
    default: str
    type: str
    doc: str


#: Parameters a factory receives from poisonlab rather than from the user.
_SUPPLIED = frozenset({"seed", "input_shape", "n_classes", "self"})


def _documented(doc: str) -> dict[str, tuple[str, str]]:
    """``{name: (type, first line of its description)}`` from a numpy Parameters section;
    ``a, b : int`` documents both names."""
    out: dict[str, tuple[str, str]] = {}
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(i for i, s in enumerate(lines) if s.strip() == "Parameters") + 2
    except StopIteration:
        return out
    i = start
    while i < len(lines):
        line = lines[i]
        if line and not line.startswith(" ") and (i + 1 < len(lines)
                                                  and set(lines[i + 1].strip()) == {"-"}):
            break  # the next section
        m = re.match(r"^(\w[\w, ]*?)\s*:\s*(.*)$", line)
        if m and not line.startswith(" "):
            body = []
            j = i + 1
            while j < len(lines) and lines[j].startswith(" "):
                body.append(lines[j].strip())
                j += 1
            for name in (n.strip() for n in m.group(1).split(",")):
                out[name] = (m.group(2).strip(), _first_sentence(" ".join(body)))
        i += 1
    return out


def _first_sentence(text: str) -> str:
    """The first sentence of ``text`` (to a full stop), at most _WIDTH characters."""
    m = re.search(r"\.(\s|$)", text)
    cut = text[: m.start() + 1] if m else text
    return cut if len(cut) <= _WIDTH else cut[: _WIDTH - 1].rstrip() + "…"


_WIDTH = 120


def _shown(value: Any) -> str:
    if value is dataclasses.MISSING or value is inspect.Parameter.empty:
        return "(required)"
    return repr(value.value) if isinstance(value, enum.Enum) else repr(value)


def parameters(entry: Any) -> list[Param]:
    """The user-settable parameters of a dataclass or a factory, in declaration order."""
    docs = _documented(getattr(entry, "__doc__", None) or "")
    if dataclasses.is_dataclass(entry):
        fields = [(f.name, f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
            else dataclasses.MISSING), f.type) for f in dataclasses.fields(entry) if f.init]
    else:
        try:
            sig = inspect.signature(entry)
        except (TypeError, ValueError):
            return []
        fields = [(p.name, p.default, p.annotation) for p in sig.parameters.values()
                  if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    out = []
    for name, default, hint in fields:
        if name in _SUPPLIED or name.startswith("_"):
            continue
        kind, doc = docs.get(name, (_hint(hint), ""))
        out.append(Param(name, _shown(default), kind, doc))
    return out


def _hint(hint: Any) -> str:
    """A type annotation as text (annotations are strings under postponed evaluation)."""
    if hint is inspect.Parameter.empty:
        return ""
    return hint if isinstance(hint, str) else getattr(hint, "__name__", str(hint))
