"""Named threat models of a suite (``threat_model.threats``) and the mapping a
:class:`~poisonlab.ThreatModel` stands for: the attackers the report's verdicts compare
defenses against (harness/report/threats.py), each naming threats the suite measures."""

from __future__ import annotations

from typing import Any

from .._text import short_repr as _r
from .._validation import validate_distinct
from ..errors import SuiteError
from ..registry import did_you_mean
from ..threat import NamedThreat, ThreatModel
from .spec import Suite, group_threats
from .suite_file import EntryContext as _Ctx
from .suite_file import raw_list as _list
from .suite_file import refuse_unknown_keys


def threat_model_mapping(tm: ThreatModel) -> dict[str, Any]:
    """A ThreatModel as the ``threat_model:`` mapping of a suite file: its poisonings, its
    evasion threats grouped (one entry per norm, targeting and bounds), its named threats."""
    poisoning = [{k: v for k, v in p.to_dict().items() if k != "id" and v is not None}
                 for p in tm.poisoning]
    evasion = [{"norm": g.norm.value, "eps": list(g.eps), "targeted": g.targeted,
                "bounds": None if g.bounds is None else list(g.bounds)}
               for g in group_threats(tm.evasion)]
    threats = [{k: v for k, v in t.to_dict().items() if v is not None} for t in tm.threats]
    return {"poisoning": poisoning, "evasion": evasion,
            **({"threats": threats} if threats else {})}


def parse_named_threats(raw: dict[str, Any], suite: Suite) -> tuple[NamedThreat, ...]:
    """``threat_model.threats``: the named attackers the report compares defenses against,
    each naming threats (and attacks) the suite measures."""
    tm = raw.get("threat_model")
    entries = _list(tm, "threats", required=False) if isinstance(tm, dict) else []
    poisonings = [p.id for p in suite.poisoning]
    evasions = [t.id for e in suite.evasion for t in e.threats((0.0, 1.0))]
    attacks = [a.label for a in suite.attacks] + (["worst-case"] if len(suite.attacks) > 1
                                                   else [])
    out: list[NamedThreat] = []
    for i, entry in enumerate(entries):
        where = f"threat_model.threats[{i}]"
        if isinstance(entry, dict):
            allowed = ("name", "poisoning", "evasion", "attack", "knowledge")
            refuse_unknown_keys(entry, allowed, entry=where)
            with _Ctx(where):
                entry = NamedThreat(**entry)
        elif not isinstance(entry, NamedThreat):
            raise SuiteError(f"{where}={_r(entry)} is not allowed: expected a mapping like "
                             "{name: ..., poisoning: 'random 0.2', evasion: 'linf eps=0.1'}")
        for field_name, value, known, what in (
                ("poisoning", entry.poisoning, poisonings, "threat_model.poisoning"),
                ("evasion", entry.evasion, evasions, "threat_model.evasion"),
                ("attack", entry.attack, attacks, "attacks")):
            if value is not None and value not in known:
                raise SuiteError(f"{where}.{field_name}={value!r} is not one of the suite's "
                                 f"{what}: expected one of {', '.join(known) or '(none)'}"
                                 f"{did_you_mean(value, known)}")
        known = sorted(set(suite.attack_knowledge))
        if entry.knowledge is not None and entry.knowledge not in known:
            raise SuiteError(f"{where}.knowledge={str(entry.knowledge)!r}: no attack of the "
                             f"suite has it (theirs: {', '.join(known)})")
        out.append(entry)
    validate_distinct("threat_model.threats", [t.name for t in out], show=str,
                      error=SuiteError)
    return tuple(out)
