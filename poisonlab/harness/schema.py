"""The two documents the harness writes and reads, checked where they are read.

``results.json`` (written by ``poisonlab run`` / ``evaluate``; the full format is
poisonlab/schemas/results.schema.json) and the baseline a ``poisonlab baseline`` makes of it
(poisonlab/schemas/baseline.schema.json). :func:`validate_results` and
:func:`validate_baseline` check what the readers use and name the field that is wrong; the
readers (:mod:`.results`, :mod:`.gate`) call them once, on load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_write
from .._version import BASELINE_SCHEMA_VERSION, RESULTS_SCHEMA_VERSION
from ..errors import ConfigError, DataError

#: ``kind`` of a baseline file (its layout version and results.json's are in _version).
BASELINE_KIND = "poisonlab-baseline"
#: The file a run writes its results to, in every output folder.
RESULTS_NAME = "results.json"
#: The coordinates that identify one gated number, in order.
IDENTITY = ("dataset", "model", "defense", "poisoning", "metric", "threat", "attack")
Identity = tuple[str, str, str, str, str, str | None, str | None]
#: Environment fields compared between the baseline and the results (besides packages).
ENV_FIELDS = ("python", "platform", "machine", "torch_threads")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _field(where: str, obj: Mapping[str, Any], key: str, ok: Any, expected: str) -> Any:
    if key not in obj:
        raise DataError(f"{where} has no {key!r}: expected {expected}")
    if not ok(obj[key]):
        raise DataError(f"{where}.{key}={obj[key]!r} is not allowed: expected {expected}")
    return obj[key]


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _identity_checks(where: str, obj: Mapping[str, Any]) -> Identity:
    for key in IDENTITY[:5]:
        _field(where, obj, key, _is_str, "a string")
    for key in IDENTITY[5:]:
        _field(where, obj, key, _is_opt_str, "a string or null")
    return tuple(obj[k] for k in IDENTITY)  # type: ignore[return-value]


def _identified(where: str, doc: Mapping[str, Any], key: str,
                what: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, entry)`` for each entry of the list ``doc[key]``, each checked to be a
    mapping with the identity fields (:data:`IDENTITY`) and to be the only one with its
    identity; the caller checks the rest of each entry."""
    items = _field(where, doc, key, lambda v: isinstance(v, list), "a list")
    seen: dict[Identity, int] = {}
    for i, item in enumerate(items):
        at = f"{where}.{key}[{i}]"
        if not isinstance(item, Mapping):
            raise DataError(f"{at}={item!r} is not allowed: expected a mapping")
        ident = _identity_checks(at, item)
        if ident in seen:
            raise DataError(f"{at} repeats {key}[{seen[ident]}] ({cell_label(ident)}, "
                            f"{ident[4]}): expected one {what} per cell and metric")
        seen[ident] = i
        yield at, item


def validate_results(doc: Any, *, where: str = "results") -> dict[str, Any]:
    """Check that ``doc`` is a results document the gate can read; return it.

    Checks what the gate uses (schema version, suite, environment, aggregates); the full
    format is poisonlab/schemas/results.schema.json.

    Raises
    ------
    DataError
        ``doc`` is a baseline, another JSON document, or an aggregate is malformed or
        repeated; the message names the field.
    """
    if not isinstance(doc, Mapping):
        raise DataError(f"{where} is a {type(doc).__name__}: expected a poisonlab results "
                        "document (a JSON object)")
    if doc.get("kind") == BASELINE_KIND:
        raise DataError(f"{where} is a poisonlab baseline: expected a results.json written "
                        "by 'poisonlab run'")
    if doc.get("schema_version") != RESULTS_SCHEMA_VERSION or "aggregates" not in doc:
        raise DataError(f"{where} is not a poisonlab results.json: "
                        f"schema_version={doc.get('schema_version')!r}, expected "
                        f"{RESULTS_SCHEMA_VERSION} with 'aggregates'")
    suite = _field(where, doc, "suite", lambda v: isinstance(v, Mapping), "a mapping")
    _field(f"{where}.suite", suite, "name", _is_str, "a string")
    _field(f"{where}.suite", suite, "version", _is_count, "an integer")
    _field(where, doc, "environment", lambda v: isinstance(v, Mapping), "a mapping")
    for at, a in _identified(where, doc, "aggregates", "aggregate"):
        _field(at, a, "mean", lambda v: v is None or _is_num(v), "a number or null")
        _field(at, a, "std", lambda v: v is None or (_is_num(v) and v >= 0),
               "a number >= 0 or null")
        _field(at, a, "n", _is_count, "an integer >= 0")
        _field(at, a, "higher_is_better", lambda v: v is None or isinstance(v, bool),
               "true, false or null (descriptive)")
    return dict(doc)


def validate_baseline(doc: Any, *, where: str = "baseline") -> dict[str, Any]:
    """Check that ``doc`` is a baseline written by :func:`make_baseline`; return it.

    Raises
    ------
    DataError
        ``doc`` is a results document, another JSON document, a baseline of another
        schema version, or an entry is malformed; the message names the field.
    """
    if not isinstance(doc, Mapping):
        raise DataError(f"{where} is a {type(doc).__name__}: expected a poisonlab baseline "
                        "(a JSON object)")
    if doc.get("kind") != BASELINE_KIND:
        if "aggregates" in doc and "cells" in doc:
            raise DataError(f"{where} is a results.json, not a baseline: make one with "
                            "'poisonlab baseline RESULTS.json --out BASELINE.json'")
        raise DataError(f"{where} is not a poisonlab baseline: kind={doc.get('kind')!r}, "
                        f"expected {BASELINE_KIND!r}")
    if doc.get("schema_version") != BASELINE_SCHEMA_VERSION:
        raise DataError(f"{where}: schema_version={doc.get('schema_version')!r} is not "
                        f"supported: expected {BASELINE_SCHEMA_VERSION} (remake the baseline "
                        "with this poisonlab)")
    suite = _field(where, doc, "suite", lambda v: isinstance(v, Mapping), "a mapping")
    _field(f"{where}.suite", suite, "name", _is_str, "a string")
    _field(where, doc, "environment", lambda v: isinstance(v, Mapping), "a mapping")
    for at, e in _identified(where, doc, "entries", "entry"):
        _field(at, e, "value", _is_num, "a finite number")
        _field(at, e, "std", lambda v: _is_num(v) and v >= 0, "a number >= 0")
        _field(at, e, "n", lambda v: _is_count(v) and v >= 1, "an integer >= 1")
        _field(at, e, "higher_is_better", lambda v: isinstance(v, bool), "true or false")
        _field(at, e, "tolerance", lambda v: _is_num(v) and v >= 0, "a number >= 0")
        fixed = _field(at, e, "fixed", lambda v: isinstance(v, bool), "true or false")
        if not fixed:
            _field(at, e, "k", lambda v: _is_num(v) and v > 0, "a number > 0")
            _field(at, e, "floor", lambda v: _is_num(v) and v >= 0, "a number >= 0")
            _field(at, e, "rel_floor", lambda v: _is_num(v) and v >= 0, "a number >= 0")
    return dict(doc)


def _read_json(path: str | Path, what: str) -> Any:
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{what}={str(path)!r} is a folder: expected a JSON file")
    if not p.is_file():
        raise DataError(f"{what}={str(path)!r} does not exist: expected a JSON file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{what}={str(path)!r} is not a JSON file: "
                        f"{type(e).__name__}: {e}".replace("\n", " ")) from None


def load_results_doc(path: str | Path) -> dict[str, Any]:
    """Read and check a results.json (or the run folder holding it) for the gate."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_NAME
    return validate_results(_read_json(p, "results"), where=f"results {str(p)!r}")


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file written by ``poisonlab baseline``."""
    return validate_baseline(_read_json(path, "baseline"), where=f"baseline {str(path)!r}")


def write_baseline(baseline: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``baseline`` as JSON, atomically (a failed write leaves no half file)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--out={str(p)!r} is a folder: expected a file name such as "
                          "baseline.json")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, json.dumps(baseline, indent=1) + "\n")
    except OSError as e:
        raise ConfigError(f"--out={str(p)!r} cannot be written: {e.strerror or e}") from None
    return p


def evasion_threats(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The evasion threats of a results document, in order, as its numbers name them:
    ``{"id", "norm", "eps", "targeted"}`` per eps of each ``threat_model.evasion`` group
    (``id`` as ``EvasionThreat.id`` writes it, e.g. ``"linf eps=0.1 targeted"``)."""
    return [{"id": f"{g['norm']} eps={e:g}" + (" targeted" if g.get("targeted") else ""),
             "norm": g["norm"], "eps": e, "targeted": bool(g.get("targeted"))}
            for g in (doc.get("threat_model") or {}).get("evasion") or [] for e in g["eps"]]


def cell_label(ident: Identity) -> str:
    """``dataset/model/defense/poisoning @ threat [attack]``: one gated number's cell."""
    dataset, model, defense, poisoning, _, threat, attack = ident
    out = f"{dataset}/{model}/{defense}/{poisoning}"
    if threat is not None:
        out += f" @ {threat}"
    if attack is not None:
        out += f" [{attack}]"
    return out


def environment_warnings(baseline_env: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    """One line per environment field or package version that differs."""
    out = []
    for f in ENV_FIELDS:
        if f in baseline_env and f in env and baseline_env[f] != env[f]:
            out.append(f"environment differs: {f} {baseline_env[f]!r} in the baseline, "
                       f"{env[f]!r} now")
    b_pkgs = baseline_env.get("packages") or {}
    pkgs = env.get("packages") or {}
    for p in sorted(set(b_pkgs) | set(pkgs)):
        if b_pkgs.get(p) != pkgs.get(p):
            out.append(f"environment differs: {p} {b_pkgs.get(p) or 'not installed'} in the "
                       f"baseline, {pkgs.get(p) or 'not installed'} now")
    if out:
        out.append("numbers may move for reasons other than the change under test: make "
                   "the baseline in the environment that checks it")
    return out
