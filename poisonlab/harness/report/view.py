"""The results as the report reads them: :class:`Results` (aggregates by scope, defense,
column), :class:`Table` and the number format.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..._text import markdown_table, plural, spec_label  # noqa: F401  (plural: re-exported)
from ..schema import evasion_threats

BASELINE = "none"


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    css_class: str = ""

    def markdown(self) -> str:
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        out += markdown_table(self.headers, self.rows)
        return "\n".join(out) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
            for r in self.rows
        )
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        cls = f" class='{html.escape(self.css_class)}'" if self.css_class else ""
        return (f"<h3>{html.escape(self.title)}</h3>{note}"
                f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


class Results:
    """Index over a results document's aggregates."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.agg: dict[tuple[Any, ...], dict[str, Any]] = {}
        for a in doc["aggregates"]:
            key = (a["dataset"], a["model"], a["defense"], a["poisoning"], a["metric"],
                   a["threat"], a["attack"])
            self.agg[key] = a
        self.scopes = sorted({(a["dataset"], a["model"]) for a in doc["aggregates"]})
        order: dict[str, None] = {}
        for c in doc["cells"]:
            order.setdefault(spec_label(c["defense"]), None)
        self.defenses = list(order)
        self.attacks = [spec_label(a) for a in doc["threat_model"]["attacks"]]
        self.poisonings = [p["id"] for p in doc["threat_model"]["poisoning"]]

    def get(self, scope: tuple[str, str], defense: str, metric: str, *, poisoning: str = "none",
            threat: str | None = None, attack: str | None = None) -> dict[str, Any] | None:
        return self.agg.get((*scope, defense, poisoning, metric, threat, attack))

    def evasion_threats(self) -> list[dict[str, Any]]:
        return evasion_threats(self.doc)

    def headline_attack(self) -> str | None:
        if len(self.attacks) > 1:
            return "worst-case"
        return self.attacks[0] if self.attacks else None


#: How figures name defenses and attacks (one place; tables keep the exact labels, which
#: are what load_results and the gate use).
DISPLAY_NAMES = {
    "none": "no defense", "flip_augment": "flip augmentation",
    "label_smoothing": "label smoothing", "confidence_penalty": "confidence penalty",
    "pgd_at": "PGD adversarial training", "fgsm_at": "FGSM adversarial training",
    "trades": "TRADES", "gce": "generalised cross-entropy", "sce": "symmetric cross-entropy",
    "bootstrap": "bootstrapping", "knn_sanitize": "kNN sanitisation",
    "confident_learning": "confident learning", "temperature_scaling": "temperature scaling",
    "distillation": "distillation", "compose": "composition", "dpa": "DPA",
    "partition_aggregation": "partition aggregation", "pretrained": "pretrained",
    "worst-case": "worst case over attacks", "fgsm": "FGSM", "pgd": "PGD", "apgd": "APGD",
    "apgd-t": "APGD-T", "autoattack": "AutoAttack", "fab": "FAB", "square": "Square",
    "noise": "random noise", "transfer": "transfer",
}


def display(label: str | None) -> str:
    """A defense or attack label as figures show it: ``label_smoothing(eps=0.1)`` ->
    ``label smoothing (eps=0.1)``, ``none`` -> ``no defense``.

    >>> display("label_smoothing(eps=0.1)"), display("worst-case"), display("my_defense")
    ('label smoothing (eps=0.1)', 'worst case over attacks', 'my defense')
    """
    if label is None:
        return ""
    name, sep, rest = label.partition("(")
    base = DISPLAY_NAMES.get(name, name.replace("_", " "))
    return f"{base} ({rest}" if sep else base


def fmt(a: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean ± std``; ``mean (n=1)`` for a single seed (no spread to show)."""
    if a is None or a["mean"] is None or a["n"] == 0:
        return "n/a"
    if a["n"] == 1:
        return f"{a['mean']:.{digits}f} (n=1)"
    return f"{a['mean']:.{digits}f} ± {a['std']:.{digits}f}"


def flip_family(p: dict[str, Any]) -> str:
    """A poisoning threat's name without its rate: what one accuracy-vs-rate plot varies.

    >>> flip_family({"strategy": "pairwise", "source": 3, "target": 8, "max_per_class": 0.5,
    ...              "id": "pairwise 3->8 0.1 cap=0.5"})
    'pairwise 3->8 cap=0.5'
    """
    base = {"pairwise": f"pairwise {p['source']}->{p['target']}",
            "noise_matrix": p["id"].split()[0]}.get(p["strategy"], p["strategy"])
    cap = p.get("max_per_class")
    return base if cap is None else f"{base} cap={cap:g}"


_FLIP_WHAT = {
    "random": "labels moved uniformly to another class",
    "noise_matrix": "class-conditional flips shaped by the noise matrix {digest} (cleanlab's "
                    "convention, P(observed | true))",
    "margin": "the points a surrogate trained on clean labels is most confident about, each "
              "moved to the surrogate's runner-up class",
    "adversarial": "flips chosen greedily to raise a surrogate's loss on clean validation "
                   "data (ALFA-style, Xiao et al. 2012)",
}


def flip_description(p: dict[str, Any]) -> str:
    """One phrase saying what a poisoning threat does to the labels."""
    if p["strategy"] == "pairwise":
        what = f"labels of class {p['source']} relabelled {p['target']}"
    else:
        what = _FLIP_WHAT.get(p["strategy"], p["strategy"]).format(
            digest=p["id"].split()[0].removeprefix("noise_matrix"))
    cap = p.get("max_per_class")
    return what if cap is None else f"{what}, at most a fraction {cap:g} of any class"


def _robust_note(r: Results) -> str:
    """What "robust accuracy" means in this report: the worst case, or a single attack."""
    if r.headline_attack() == "worst-case":
        return (f"robust accuracy is the per-sample worst case over all {len(r.attacks)} "
                "attacks run")
    return f"robust accuracy is from a single attack ({r.headline_attack()})"
