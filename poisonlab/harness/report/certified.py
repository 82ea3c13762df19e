"""The report's certified robustness: for each partition-aggregation defense, the certified
accuracy against the number of flipped training labels, beside the accuracy the label-flip
attacks actually left it at the same budgets (docs/certified.md).

The empirical accuracy can never lie below the certified one: a point certified correct
against ``n`` flips stays correct after any ``n`` flips. The table says, per attack,
whether that held (the cells' ``certificate_holds`` check); a broken certificate is a bug.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..._text import spec_label
from ..certified import CHECK
from .view import Results, Table, display, flip_family, fmt

_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
_MARKERS = ["o", "s", "^", "D", "v", "P"]


def certified_cells(r: Results, scope: tuple[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The clean-label cells with a certificate in ``scope``, by defense label."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in r.doc["cells"]:
        if (c["status"] == "ok" and c["poisoning"] is None and c.get("certified")
                and (spec_label(c["dataset"]), spec_label(c["model"])) == scope):
            out[spec_label(c["defense"])].append(c)
    return dict(out)


def mean_curve(cells: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flips 0 .. the largest radius, and the certified accuracy's mean and std over the
    cells (a cell's accuracy is 0 beyond its own largest radius)."""
    n = max(len(c["certified"]["accuracy"]) for c in cells) + 1
    acc = np.zeros((len(cells), n))
    for i, c in enumerate(cells):
        a = c["certified"]["accuracy"]
        acc[i, :len(a)] = a
    return np.arange(n), acc.mean(0), acc.std(0, ddof=1) if len(cells) > 1 else acc[0] * 0


def _flips_of(r: Results, scope: tuple[str, str], defense: str, pid: str) -> float | None:
    a = r.get(scope, defense, "n_flipped", poisoning=pid, threat=pid)
    return None if a is None or a["mean"] is None else float(a["mean"])


def _check_counts(r: Results, scope: tuple[str, str], defense: str, pid: str
                  ) -> tuple[int, int]:
    """(cells whose certificate check ran, cells where it flagged) for one attack."""
    ran = flagged = 0
    for c in r.doc["cells"]:
        if (c["status"] != "ok" or not c["poisoning"] or c["poisoning"]["id"] != pid
                or spec_label(c["defense"]) != defense
                or (spec_label(c["dataset"]), spec_label(c["model"])) != scope):
            continue
        for o in c.get("checks") or []:
            if o["check"] == CHECK:
                ran += 1
                flagged += o["status"] == "flag"
    return ran, flagged


def certified_figure(r: Results, scope: tuple[str, str]) -> Figure | None:
    """Certified accuracy vs flips (a step line per dpa defense, band = seed spread) and
    the empirical accuracy under each label-flip attack at its budget (markers)."""
    cells = certified_cells(r, scope)
    if not cells:
        return None
    fig = Figure(figsize=(8.4, 4.6), layout="constrained")
    ax = fig.subplots()
    families = list(dict.fromkeys(flip_family(p) for p in r.doc["threat_model"]["poisoning"]))
    for i, (d, cs) in enumerate(cells.items()):
        color = _COLORS[i % len(_COLORS)]
        xs, m, sd = mean_curve(cs)
        ax.step(xs, m, where="post", color=color, lw=1.8, label=display(d))
        ax.fill_between(xs, m - sd, m + sd, step="post", color=color, alpha=0.15, lw=0)
        for p in r.doc["threat_model"]["poisoning"]:
            x = _flips_of(r, scope, d, p["id"])
            acc = r.get(scope, d, "clean_accuracy", poisoning=p["id"])
            if x is None or acc is None or acc["mean"] is None:
                continue
            j = families.index(flip_family(p))
            ax.errorbar([x], [acc["mean"]], yerr=[acc["std"] or 0.0] if acc["n"] > 1 else None,
                        fmt=_MARKERS[j % len(_MARKERS)], color=color, ms=6, capsize=3,
                        mfc="white")
    for j, fam in enumerate(families):  # one legend entry per attack, in grey
        ax.errorbar([], [], fmt=_MARKERS[j % len(_MARKERS)], color="0.35", mfc="white",
                    label=f"accuracy under {fam} flips")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="line: certified accuracy", title_fontsize=7)
    ax.set(xlabel="flipped training labels", ylabel="test accuracy", ylim=(0, 1.02),
           title="Certified accuracy vs accuracy under label-flip attacks")
    ax.grid(alpha=0.3)
    return fig


def certified_table(r: Results, scope: tuple[str, str]) -> Table | None:
    """Per dpa defense and attack: the budget, certified and empirical accuracy, and
    whether every certificate held."""
    cells = certified_cells(r, scope)
    if not cells:
        return None
    rows = []
    for d, cs in cells.items():
        med = r.get(scope, d, "median_certified_radius")
        rows.append([d, "no attack", "0", fmt(r.get(scope, d, "certified_accuracy",
                                                     threat="flips=0")),
                     fmt(r.get(scope, d, "clean_accuracy")), fmt(med, 1), ""])
        for p in r.doc["threat_model"]["poisoning"]:
            x = _flips_of(r, scope, d, p["id"])
            ran, flagged = _check_counts(r, scope, d, p["id"])
            if x is None or not ran:
                continue
            budget = round(p["rate"] * cs[0]["certified"]["n_train"])
            cert = r.get(scope, d, "certified_accuracy", threat=f"flips={budget}")
            held = "yes" if not flagged else f"BROKEN in {flagged} of {ran} seeds"
            rows.append([d, p["id"], f"{x:g}", fmt(cert),
                         fmt(r.get(scope, d, "clean_accuracy", poisoning=p["id"])), "",
                         held])
    return Table(
        title=f"Certified robustness to label flips: {scope[0]} / {scope[1]}",
        headers=["defense", "attack", "flips", "certified accuracy", "accuracy under attack",
                 "median certified radius", "certificate held"],
        rows=rows,
        note=("Certified accuracy: test points predicted correctly whose prediction no "
              "choice of that many flipped training labels can change (docs/certified.md). "
              "The accuracy under attack can never be lower; the last column says whether "
              "it was, per seed."))


def certified_summary(doc: dict[str, Any]) -> list[str]:
    """One line per scope and dpa defense: its median certified radius and whether every
    certificate held under the suite's attacks."""
    r = Results(doc)
    lines = []
    for scope in r.scopes:
        for d, cs in certified_cells(r, scope).items():
            med = r.get(scope, d, "median_certified_radius")
            n_train = cs[0]["certified"]["n_train"]
            ran = flagged = 0
            for p in r.doc["threat_model"]["poisoning"]:
                a, b = _check_counts(r, scope, d, p["id"])
                ran, flagged = ran + a, flagged + b
            held = ("no attack ran against it" if not ran else
                    f"every certificate held in {ran} attacked cells" if not flagged else
                    f"a certificate was BROKEN in {flagged} of {ran} attacked cells: a bug")
            if med is not None and med["mean"] is not None:
                lines.append(
                    f"**{d}** ({scope[0]}, {scope[1]}): half the test points are certified "
                    f"correct against {med['mean']:.0f} flipped labels "
                    f"({100 * med['mean'] / n_train:.2f}% of {n_train}; "
                    f"{cs[0]['certified']['threat']}); {held}.")
    return lines
