"""The report's opening: one verdict per threat model, the answer a reader can act on.

A threat model is what the attacker does: flip a share of the training labels (a
poisoning), perturb test inputs within a budget (an evasion threat, with the attacks of a
given knowledge), or both (the combined attacker: the robust accuracy of models trained on
poisoned labels). A suite may name its threat models (``threat_model.threats``); by
default the report takes each poisoning, each untargeted evasion threat, and each
poisoning combined with the middle eps.

For each threat model and scope (dataset, model) the defenses are ranked by the threat
model's headline metric (higher is better: test accuracy after poisoning, robust accuracy
under evasion), with a 95% Student-t interval over seeds; defenses whose intervals
overlap the leader's share its rank (:func:`~poisonlab.harness.stats.rank_with_ties`, the
same tiers as every ranking of the report), next to each one's clean-accuracy cost
against ``none``; one sentence says what a reader can quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..stats import CI_LEVEL, confidence_interval, rank_with_ties, tied
from .view import BASELINE, Results, Table


@dataclass(frozen=True)
class ThreatView:
    """One threat model as the report measures it."""

    name: str
    poisoning: str  # a poisoning id, or "none"
    evasion: str | None  # an evasion threat id, or None
    attack: str | None = None  # an attack label; None: the headline (worst case)
    knowledge: str | None = None  # only attacks of this knowledge count

    @property
    def metric(self) -> str:
        return "clean_accuracy" if self.evasion is None else "robust_accuracy"


def threat_models(r: Results) -> list[ThreatView]:
    """The suite's named threat models, or the default set (see the module docstring)."""
    named = r.doc["threat_model"].get("threats")
    if named:
        return [ThreatView(t["name"], t.get("poisoning") or BASELINE, t.get("evasion"),
                           t.get("attack"), t.get("knowledge")) for t in named]
    evasion = [t for t in r.evasion_threats() if not t["targeted"]]
    out = [ThreatView(f"label flips {p}", p, None) for p in r.poisonings]
    out += [ThreatView(f"evasion {t['id']}", BASELINE, t["id"]) for t in evasion]
    if evasion and r.headline_attack():
        mid = evasion[len(evasion) // 2]["id"]
        out += [ThreatView(f"label flips {p}, then evasion {mid}", p, mid)
                for p in r.poisonings]
    return out


def _attack_of(r: Results, scope: tuple[str, str], defense: str, t: ThreatView
               ) -> tuple[str | None, dict[str, Any] | None]:
    """The attack whose number stands for ``t`` and its aggregate: the named attack; with
    a knowledge, the strongest attack of that knowledge (lowest mean); else the headline."""
    if t.evasion is None:  # a poisoning alone: the test accuracy, no attack
        names: list[str | None] = [None]
    elif t.attack is not None:
        names = [t.attack]
    elif t.knowledge is not None:
        known = r.doc["threat_model"].get("attack_knowledge", {})
        names = [a for a in r.attacks if known.get(a) == t.knowledge]
    else:
        names = [r.headline_attack()] if r.headline_attack() else []
    found = [(a, r.get(scope, defense, t.metric, poisoning=t.poisoning, threat=t.evasion,
                       attack=a)) for a in names]
    kept = [(a, s) for a, s in found if s and s["mean"] is not None]
    if not kept:
        return None, None
    return min(kept, key=lambda x: x[1]["mean"])  # type: ignore[index]


def _headline(r: Results, t: ThreatView) -> str:
    """What the numbers of ``t`` are, in words."""
    if t.evasion is None:
        return f"test accuracy after training on the flipped labels ({t.poisoning})"
    under = f" of models trained on the labels flipped by {t.poisoning}" if \
        t.poisoning != BASELINE else ""
    if t.attack is not None:
        by = f"attack {t.attack}"
    elif t.knowledge is not None:
        by = f"the strongest {t.knowledge} attack per defense"
    elif r.headline_attack() == "worst-case":
        by = f"the per-sample worst case over {len(r.attacks)} attacks"
    else:
        by = f"attack {r.headline_attack()}"
    return f"robust accuracy at {t.evasion}{under}, {by}"


def _interval(a: dict[str, Any]) -> tuple[float, float] | None:
    """The interval of an accuracy, clipped to [0, 1] (where an accuracy lives)."""
    ci = confidence_interval(a)
    return None if ci is None else (max(ci[0], 0.0), min(ci[1], 1.0))


def _ci(a: dict[str, Any]) -> str:
    ci = _interval(a)
    if ci is None:
        return f"{a['mean']:.3f} (n={a['n']}, no interval)"
    return f"{a['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] (n={a['n']})"


def verdict(r: Results, scope: tuple[str, str], t: ThreatView) -> tuple[Table, str] | None:
    """The verdict table and sentence of threat model ``t`` in ``scope``; None when no
    defense has its number."""
    stats, attack_used = {}, {}
    for d in r.defenses:
        a, s = _attack_of(r, scope, d, t)
        if s is not None:
            stats[d], attack_used[d] = s, a
    if not stats:
        return None
    ranks = rank_with_ties(stats)
    base_clean = r.get(scope, BASELINE, "clean_accuracy")
    rows = []
    for d, rank in ranks.items():
        clean = r.get(scope, d, "clean_accuracy")
        cost = "" if clean is None or base_clean is None or d == BASELINE else \
            f" ({clean['mean'] - base_clean['mean']:+.3f} vs {BASELINE})"
        row = [f"#{rank}", d, _ci(stats[d]),
               "n/a" if clean is None else f"{clean['mean']:.3f}{cost}"]
        if t.poisoning != BASELINE:  # the same drop as the accuracy_drop metric
            drop = r.get(scope, d, "accuracy_drop", poisoning=t.poisoning, threat=t.poisoning)
            row.append("n/a" if drop is None or drop["mean"] is None
                       else f"{drop['mean']:.3f}")
        if t.knowledge is not None:
            row.append(str(attack_used[d]))
        rows.append(row)
    what = "robust accuracy" if t.evasion is not None else "test accuracy after the flips"
    headers = ["rank", "defense", f"{what} [{CI_LEVEL:.0%} CI]", "clean accuracy (cost)"]
    headers += ["accuracy drop from the flips"] if t.poisoning != BASELINE else []
    headers += ["attack"] if t.knowledge is not None else []
    where = "" if len(r.scopes) == 1 else f" ({scope[0]}, {scope[1]})"
    note = (f"{_headline(r, t)}; mean over seeds with its {CI_LEVEL:.0%} Student-t interval; "
            "defenses whose interval overlaps the leader's share its rank")
    return Table(f"{t.name}{where}", headers, rows, note, css_class="verdict"), \
        _sentence(t, stats, ranks, where)


def _sentence(t: ThreatView, stats: dict[str, dict[str, Any]], ranks: dict[str, int],
              where: str) -> str:
    """One sentence a reader can quote."""
    order = list(ranks)
    first = [d for d in order if ranks[d] == 1]
    lead = order[0]
    s = stats[lead]
    ci = _interval(s)
    value = (f"{s['mean']:.3f}, {CI_LEVEL:.0%} CI {ci[0]:.3f} to {ci[1]:.3f} over {s['n']} "
             "seeds" if ci else f"{s['mean']:.3f}, one seed: no interval")
    head = f"Under **{t.name}**{where}, **{lead}** ranks first ({value})"
    if any(stats[d]["n"] < 2 for d in stats):
        return (f"{head}; with a single seed no two defenses can be told apart: run 3 or "
                "more seeds before quoting a ranking.")
    others = [d for d in first if d != lead]
    tie = f", tied within seed noise with {_names(others)}" if others else ""
    if BASELINE not in stats:
        return f"{head}{tie}; no `{BASELINE}` defense to compare with."
    if lead == BASELINE:
        return f"{head}{tie}: no defense beats `{BASELINE}` under this threat."
    base = stats[BASELINE]
    beat = [d for d in order if d != BASELINE and not tied(stats[d], base)
            and stats[d]["mean"] > base["mean"]]
    if not beat:
        return (f"{head}{tie}: no defense is distinguishable from `{BASELINE}` "
                f"({base['mean']:.3f}) beyond seed noise.")
    verb = "beat" if len(beat) > 1 else "beats"
    rest = [d for d in first if d not in beat and d != BASELINE]
    also = (f"; {_names(rest)} {'do' if len(rest) > 1 else 'does'} not separate from "
            f"`{BASELINE}`" if rest else "")
    return (f"{head}{tie}: {_names(beat)} {verb} `{BASELINE}` ({base['mean']:.3f}) beyond "
            f"seed noise{also}.")


def _names(ds: list[str]) -> str:
    quoted = [f"**{d}**" for d in ds]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def verdicts(r: Results) -> list[tuple[Table, str]]:
    """Every threat model's verdict, scope by scope."""
    out = []
    for scope in r.scopes:
        for t in threat_models(r):
            v = verdict(r, scope, t)
            if v is not None:
                out.append(v)
    return out
