"""Reports generated from results.json alone: report.md (figures beside it) and a
self-contained report.html (figures embedded).

Contents: the threat model; the evaluation sanity checks' flags beside the defense they
concern (docs/checks.md); a verdict per defense against the ``none`` baseline, decided by
seed noise and stated plainly (including "no clear difference"); tables of mean +- std (n)
for every metric; plots of robust accuracy against eps, accuracy against flip rate, and
confidence along ``alpha * x``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .._io import atomic_write
from .._text import spec_label
from .expectations import evaluate_expectations, expectation_table
from .stats import Z_SE, compare, rank_with_ties

BASELINE = "none"


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        out.append("| " + " | ".join(self.headers) + " |")
        out.append("|" + "|".join("---" for _ in self.headers) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
            for r in self.rows
        )
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3>{note}"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


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
        out = []
        for spec in self.doc["threat_model"]["evasion"]:
            for e in spec["eps"]:
                tid = f"{spec['norm']} eps={e:g}" + (" targeted" if spec["targeted"] else "")
                out.append({"id": tid, "norm": spec["norm"], "eps": e,
                            "targeted": spec["targeted"]})
        return out

    def headline_attack(self) -> str | None:
        if len(self.attacks) > 1:
            return "worst-case"
        return self.attacks[0] if self.attacks else None


def fmt(a: dict[str, Any] | None, digits: int = 3) -> str:
    if a is None or a["mean"] is None or a["n"] == 0:
        return "n/a"
    return f"{a['mean']:.{digits}f} ± {a['std']:.{digits}f}"


# --------------------------------------------------------------------------- verdicts


#: The defense label ``poisonlab evaluate`` gives a model it evaluates as given.
PRETRAINED = "pretrained"


def findings(r: Results) -> list[str]:
    """Plain sentences: what each defense did against the baseline, by seed noise."""
    lines: list[str] = []
    head = r.headline_attack()
    for scope in r.scopes:
        if r.defenses == [PRETRAINED]:
            lines.append("One pretrained model evaluated as given (`poisonlab evaluate`): "
                         "no defense to compare; the tables below hold its numbers.")
            continue
        if BASELINE not in r.defenses:
            lines.append(f"No `{BASELINE}` defense in this suite: nothing to compare against.")
            continue
        for d in r.defenses:
            if d == BASELINE:
                continue
            checks: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
                ("clean accuracy", r.get(scope, d, "clean_accuracy"),
                 r.get(scope, BASELINE, "clean_accuracy")),
            ]
            for t in r.evasion_threats():
                checks.append((f"robust accuracy ({head}) at {t['id']}",
                               r.get(scope, d, "robust_accuracy", threat=t["id"], attack=head),
                               r.get(scope, BASELINE, "robust_accuracy", threat=t["id"],
                                     attack=head)))
            for p in r.poisonings:
                checks.append((f"accuracy drop under {p}",
                               r.get(scope, d, "accuracy_drop", poisoning=p, threat=p),
                               r.get(scope, BASELINE, "accuracy_drop", poisoning=p, threat=p)))
            checks += [
                ("ECE", r.get(scope, d, "ece"), r.get(scope, BASELINE, "ece")),
                ("off-manifold confidence (uniform noise)",
                 r.get(scope, d, "offmanifold_confidence", threat="uniform"),
                 r.get(scope, BASELINE, "offmanifold_confidence", threat="uniform")),
            ]
            verdicts: dict[str, list[str]] = defaultdict(list)
            for name, a, b in checks:
                v, diff = compare(a, b)
                if diff is None:
                    continue
                verdicts[v].append(f"{name} {a['mean']:.3f} vs {b['mean']:.3f}"  # type: ignore[index]
                                   f" ({diff:+.3f})")
            parts = [f"**{d}** vs `{BASELINE}` ({scope[0]}, {scope[1]}):"]
            for v in ("better", "worse", "no clear difference", "too few seeds to tell"):
                if verdicts[v]:
                    parts.append(f"{v}: " + "; ".join(verdicts[v]) + ".")
            lines.append(" ".join(parts))
    return lines


# --------------------------------------------------------------------------- ranking


def threat_columns(r: Results, scope: tuple[str, str]
                   ) -> dict[str, dict[str, dict[str, Any] | None]]:
    """Per declared threat (column label), each defense's accuracy under it.

    An evasion threat scores a defense by its robust accuracy under the headline attack
    (the per-sample worst case over every attack run), a poisoning threat by its test
    accuracy after training on the flipped labels; with no threat declared, one column of
    clean accuracy.
    """
    head = r.headline_attack()
    cols = {f"evasion {t['id']}": {d: r.get(scope, d, "robust_accuracy", threat=t["id"],
                                            attack=head) for d in r.defenses}
            for t in r.evasion_threats() if head}
    cols |= {f"poisoning {p}": {d: r.get(scope, d, "clean_accuracy", poisoning=p)
                                for d in r.defenses} for p in r.poisonings}
    return cols or {"clean": {d: r.get(scope, d, "clean_accuracy") for d in r.defenses}}


def ranking(r: Results, scope: tuple[str, str]) -> list[tuple[str, float, dict[str, int]]]:
    """Defenses ordered by their mean rank over the declared threats.

    Each declared threat is one column: an evasion threat scores a defense by its robust
    accuracy under the per-sample worst case over every attack run, a poisoning threat by
    its test accuracy after training on the flipped labels. Within a column defenses are
    ranked by mean accuracy, sharing a rank when within ``Z_SE`` standard errors; the order
    is by the mean of those ranks, then by mean accuracy over the columns.

    Returns ``(defense, mean rank, {column: rank})`` per defense, best first.
    """
    return _rank(threat_columns(r, scope), r.defenses)


def _rank(cols: dict[str, dict[str, dict[str, Any] | None]], defenses: list[str]
          ) -> list[tuple[str, float, dict[str, int]]]:
    per_col = {}
    mean_acc: dict[str, list[float]] = defaultdict(list)
    for label, stats in cols.items():
        per_col[label] = rank_with_ties(stats)
        for d, a in stats.items():
            if a and a["mean"] is not None:
                mean_acc[d].append(a["mean"])
    out = []
    for d in defenses:
        ranks = {c: rk[d] for c, rk in per_col.items() if d in rk}
        if ranks:
            out.append((d, sum(ranks.values()) / len(ranks), ranks))
    # Equal mean ranks: the higher mean accuracy over the columns first.
    out.sort(key=lambda x: (x[1], -sum(mean_acc[x[0]]) / len(mean_acc[x[0]])))
    return out


def _ranking_table(r: Results, scope: tuple[str, str]) -> Table | None:
    cols = threat_columns(r, scope)
    ranked = _rank(cols, r.defenses)
    if len(ranked) < 2:
        return None
    rows = [[d, f"{mean_rank:.2f}"] + [f"{fmt(stats[d])} (#{ranks[label]})"
                                       if label in ranks else "n/a"
                                       for label, stats in cols.items()]
            for d, mean_rank, ranks in ranked]
    head = r.headline_attack()
    return Table(
        f"Ranking under the declared threat model ({scope[0]}, {scope[1]})",
        ["defense", "mean rank", *cols], rows,
        "one column per declared threat: accuracy under it (evasion: robust accuracy, "
        f"{head or 'the attack'} per sample; poisoning: test accuracy after training on the "
        "flipped labels) and the defense's rank in that column; defenses within "
        f"{Z_SE:g} standard errors share a rank; rows are ordered by mean rank")


def _expectations_table(doc: dict[str, Any]) -> Table | None:
    """The suite's claims about directions between cells, judged on the seed spread."""
    if not doc.get("expectations"):
        return None
    headers, rows = expectation_table(evaluate_expectations(doc))
    return Table("Expectations declared by the suite", headers, rows,
                 f"holds: the difference goes the claimed way by more than the margin plus "
                 f"{Z_SE:g} standard errors of the seed spread; does not hold: the other way "
                 "by as much; inconclusive: in between, or too few seeds. A required claim "
                 "that does not hold fails `poisonlab check`.")


def _information_table(r: Results, scope: tuple[str, str]) -> Table | None:
    cols = [("mean entropy (nats)", "mean_entropy"), ("logit norm", "logit_norm"),
            ("weight norm", "weight_norm"), ("T* (validation)", "temperature"),
            ("mutual information (nats)", "mutual_information")]
    rows = [[d] + [fmt(r.get(scope, d, m)) for _, m in cols] for d in r.defenses]
    if all(c == "n/a" for row in rows for c in row[1:]):
        return None
    return Table(
        f"Confidence, size and information ({scope[0]}, {scope[1]})",
        ["defense"] + [c for c, _ in cols], rows,
        "descriptive, never gated: T* > 1 means the model is over-confident on validation "
        "data; mutual information is Müller et al. (2019)'s Gaussian estimate between a "
        "training example's index and its logit difference over augmented copies "
        "(0 .. log N; lower means the logits forget more about the example)")


def _breakdown_table(r: Results, scope: tuple[str, str]) -> Table | None:
    """Which component of an ensemble (autoattack) fooled each point first, per threat."""
    parts = list(dict.fromkeys(
        a["attack"] for a in r.doc["aggregates"]
        if a["metric"] == "fooled_first_by" and (a["dataset"], a["model"]) == scope
        and a["poisoning"] == "none"))
    if not parts:
        return None
    threats = r.evasion_threats()
    rows = []
    for d in r.defenses:
        for part in parts:
            ensemble, _, component = part.partition(": ")
            cells = [fmt(r.get(scope, d, "fooled_first_by", threat=t["id"], attack=part))
                     for t in threats]
            if any(c != "n/a" for c in cells):
                rows.append([d, ensemble, component, *cells])
    return Table(
        f"Which attack found each point ({scope[0]}, {scope[1]})",
        ["defense", "ensemble", "attack"] + [t["id"] for t in threats], rows,
        "fraction of all test points that each attack of the ensemble fooled first (each "
        "attack runs only on the points still robust, in this order), mean ± std over "
        "seeds; a large share for the later, gradient-free attacks means the gradient "
        "attacks were misled on those points")


# --------------------------------------------------------------------------- tables


def tables(r: Results) -> list[Table]:
    out: list[Table] = []
    head = r.headline_attack()
    threats = r.evasion_threats()
    for scope in r.scopes:
        where = f"{scope[0]}, {scope[1]}"
        n = {d: (r.get(scope, d, "clean_accuracy") or {"n": 0})["n"] for d in r.defenses}
        headers = ["defense", "n", "clean acc"] + [f"robust acc {t['id']}" for t in threats]
        headers += ["ECE", "NLL", "Brier", "conf. on noise", "alpha*", "AUROC clean/noise"]
        rows = []
        for d in r.defenses:
            row = [d, str(n[d]), fmt(r.get(scope, d, "clean_accuracy"))]
            row += [fmt(r.get(scope, d, "robust_accuracy", threat=t["id"], attack=head))
                    for t in threats]
            row += [fmt(r.get(scope, d, "ece")), fmt(r.get(scope, d, "nll")),
                    fmt(r.get(scope, d, "brier")),
                    fmt(r.get(scope, d, "offmanifold_confidence", threat="uniform")),
                    fmt(r.get(scope, d, "alpha_star", threat="uniform"), 1),
                    fmt(r.get(scope, d, "offmanifold_auroc", threat="uniform"))]
            rows.append(row)
        title = "Pretrained model" if r.defenses == [PRETRAINED] else "Clean training"
        out.append(Table(f"{title} ({where})", headers, rows,
                         "mean ± std over n seeds; " + _robust_note(r) if head
                         else "mean ± std over n seeds"))
        info = _information_table(r, scope)
        if info:
            out.append(info)
        if r.poisonings:
            rows = []
            for d in r.defenses:
                for p in r.poisonings:
                    acc = r.get(scope, d, "clean_accuracy", poisoning=p)
                    rows.append([d, p, str(acc["n"] if acc else 0), fmt(acc),
                                 fmt(r.get(scope, d, "accuracy_drop", poisoning=p, threat=p)),
                                 fmt(r.get(scope, d, "poisoning_success_rate", poisoning=p,
                                           threat=p)),
                                 fmt(r.get(scope, d, "n_flipped", poisoning=p, threat=p), 0)])
            out.append(Table(
                f"Label-flip poisoning ({where})",
                ["defense", "poisoning", "n", "test acc (poisoned)", "accuracy drop",
                 "poisoning success", "labels flipped"], rows,
                "accuracy drop and success are measured against the same defense and seed "
                "trained on clean labels"))
        if threats and r.attacks:
            rows = []
            for d in r.defenses:
                for a in r.attacks:
                    row = [d, a]
                    for t in threats:
                        row.append(fmt(r.get(scope, d, "attack_success_rate", threat=t["id"],
                                             attack=a)))
                    rows.append(row)
            out.append(Table(f"Evasion attack success rate, per attack ({where})",
                             ["defense", "attack"] + [t["id"] for t in threats], rows,
                             "among test points classified correctly when clean"))
            breakdown = _breakdown_table(r, scope)
            if breakdown:
                out.append(breakdown)
    return out


# --------------------------------------------------------------------------- figures

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf"]


def _band(ax: Any, xs: list[float], stats: list[dict[str, Any] | None], label: str,
          color: str) -> None:
    pts = [(x, s) for x, s in zip(xs, stats, strict=True) if s and s["mean"] is not None]
    if not pts:
        return
    x = [p[0] for p in pts]
    m = [p[1]["mean"] for p in pts]
    sd = [p[1]["std"] or 0.0 for p in pts]
    ax.plot(x, m, marker="o", color=color, label=label, lw=1.8, ms=4)
    ax.fill_between(x, [a - b for a, b in zip(m, sd, strict=True)],
                    [a + b for a, b in zip(m, sd, strict=True)], color=color, alpha=0.15, lw=0)


def _scope_tag(si: int, scope: tuple[str, str]) -> str:
    tag = f"{scope[0]}-{scope[1]}".replace("(", "").replace(")", "").replace(" ", "")
    return f"{si}_" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tag)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _security_curves(r: Results, scope: tuple[str, str]) -> Figure | None:
    """Robust accuracy (headline attack) against eps, one panel per norm."""
    head = r.headline_attack()
    norms = sorted({t["norm"] for t in r.evasion_threats()})
    if not norms or not head:
        return None
    fig = Figure(figsize=(5.2 * len(norms), 3.8), layout="constrained")
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms, strict=True):
        ts = [t for t in r.evasion_threats() if t["norm"] == norm and not t["targeted"]]
        for i, d in enumerate(r.defenses):
            stats = [r.get(scope, d, "clean_accuracy")] + [
                r.get(scope, d, "robust_accuracy", threat=t["id"], attack=head) for t in ts]
            _band(ax, [0.0] + [t["eps"] for t in ts], stats, d, _COLORS[i % len(_COLORS)])
        ax.set(xlabel=f"{norm} eps", ylabel=f"robust accuracy ({head})",
               title=f"Security curve, {norm} ({scope[0]}, {scope[1]})", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        _legend(ax)
    return fig


def _poisoning_curves(r: Results, scope: tuple[str, str]) -> Figure | None:
    """Per flip family: test accuracy (top) and poisoning success (bottom) against rate."""
    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in r.doc["threat_model"]["poisoning"]:
        families[flip_family(p)].append(p)
    if not families:
        return None
    fig = Figure(figsize=(5.2 * len(families), 6.6), layout="constrained")
    axes = fig.subplots(2, len(families), squeeze=False, sharex="col")
    for col, (fam, ps) in enumerate(families.items()):
        ps = sorted(ps, key=lambda p: p["rate"])
        top, bottom = axes[0][col], axes[1][col]
        for i, d in enumerate(r.defenses):
            color = _COLORS[i % len(_COLORS)]
            xs = [0.0] + [p["rate"] for p in ps]
            _band(top, xs, [r.get(scope, d, "clean_accuracy")] + [
                r.get(scope, d, "clean_accuracy", poisoning=p["id"]) for p in ps], d, color)
            # No poisoning, no success: the curve starts at (0, 0) by definition.
            zero = {"mean": 0.0, "std": 0.0, "n": 1}
            _band(bottom, xs, [zero] + [
                r.get(scope, d, "poisoning_success_rate", poisoning=p["id"], threat=p["id"])
                for p in ps], d, color)
        top.set(ylabel="test accuracy", title=f"Accuracy vs {fam} flips")
        bottom.set(xlabel="flip rate (fraction of training labels)",
                   ylabel="poisoning success rate", ylim=(0, None),
                   title=f"Poisoning success vs {fam} flips")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        _legend(top)
    return fig


def _offmanifold_figure(r: Results, scope: tuple[str, str]) -> Figure | None:
    """Confidence along ``alpha * x`` (left) and on uniform and Gaussian noise (right)."""
    rays = sorted({float(a["threat"].split("=")[1]) for a in r.doc["aggregates"]
                   if a["metric"] == "ray_confidence" and (a["dataset"], a["model"]) == scope})
    noise = {d: (r.get(scope, d, "offmanifold_confidence", threat="uniform"),
                 r.get(scope, d, "gaussian_confidence", threat="gaussian"))
             for d in r.defenses}
    has_noise = any(u or g for u, g in noise.values())
    if not rays and not has_noise:
        return None
    fig = Figure(figsize=(11, 3.9), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    chance = _chance(r, scope)
    for i, d in enumerate(r.defenses):
        stats = [r.get(scope, d, "ray_confidence", threat=f"alpha={a:g}") for a in rays]
        _band(left, rays, stats, d, _COLORS[i % len(_COLORS)])
    left.set(xscale="log", xlabel="alpha (test input scaled to alpha * x)",
             ylabel="mean max-softmax", ylim=(0, 1.02),
             title=f"Confidence along alpha * x ({scope[0]}, {scope[1]})")
    left.grid(alpha=0.3, which="both")
    _legend(left)
    width = 0.38
    for k, (label, hatch) in enumerate((("uniform noise", ""), ("Gaussian noise", "//"))):
        xs = [i + (k - 0.5) * width for i in range(len(r.defenses))]
        stats = [noise[d][k] for d in r.defenses]
        means = [s["mean"] if s and s["mean"] is not None else math.nan for s in stats]
        sds = [(s["std"] or 0.0) if s and s["mean"] is not None else 0.0 for s in stats]
        right.bar(xs, means, width, yerr=sds, capsize=3, hatch=hatch,
                  color=[_COLORS[i % len(_COLORS)] for i in range(len(r.defenses))],
                  alpha=0.55 if k else 0.9, edgecolor="black", lw=0.5)
        right.bar([math.nan], [math.nan], color="#cccccc", edgecolor="black", lw=0.5,
                  hatch=hatch, label=label)  # a neutral legend entry per noise kind
    if chance:
        right.axhline(chance, color="grey", ls=":", lw=1, label=f"chance (1/{round(1 / chance)})")
    right.set_xticks(range(len(r.defenses)), r.defenses, rotation=30, ha="right", fontsize=8)
    right.set(ylabel="mean max-softmax (lower is humbler)", ylim=(0, 1.02),
              title="Confidence on noise inputs")
    right.grid(alpha=0.3, axis="y")
    _legend(right)
    return fig


def _chance(r: Results, scope: tuple[str, str]) -> float | None:
    for c in r.doc["cells"]:
        summ = c.get("dataset_summary") or {}
        if (spec_label(c["dataset"]), spec_label(c["model"])) == scope and summ.get("n_classes"):
            return 1.0 / float(summ["n_classes"])
    return None


def pooled_reliability(r: Results, scope: tuple[str, str], defense: str
                       ) -> dict[str, list[float | None]] | None:
    """Reliability bins of ``defense``'s clean-label cells, pooled over seeds.

    Counts add up; per-bin accuracy and confidence are count-weighted means. None when no
    cell recorded its bins.
    """
    total: list[float] | None = None
    acc: list[float] = []
    conf: list[float] = []
    for c in r.doc["cells"]:
        rel = c.get("reliability")
        if (not rel or c["status"] != "ok" or c["poisoning"] is not None
                or spec_label(c["defense"]) != defense
                or (spec_label(c["dataset"]), spec_label(c["model"])) != scope):
            continue
        if total is None:
            total, acc, conf = ([0.0] * len(rel["count"]) for _ in range(3))
        for b, n in enumerate(rel["count"]):
            if n:
                total[b] += n
                acc[b] += n * rel["accuracy"][b]
                conf[b] += n * rel["confidence"][b]
    if total is None:
        return None
    return {"count": list(total),
            "accuracy": [a / n if n else None for a, n in zip(acc, total, strict=True)],
            "confidence": [c / n if n else None for c, n in zip(conf, total, strict=True)]}


def _reliability_figure(r: Results, scope: tuple[str, str]) -> Figure | None:
    """One reliability diagram per defense (clean labels, all seeds pooled)."""
    pooled = {d: pooled_reliability(r, scope, d) for d in r.defenses}
    pooled = {d: p for d, p in pooled.items() if p}
    if not pooled:
        return None
    cols = min(4, len(pooled))
    rows = math.ceil(len(pooled) / cols)
    fig = Figure(figsize=(3.3 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (i, (d, p)) in zip(axes, enumerate(pooled.items()), strict=False):
        n_bins = len(p["count"])
        width = 1.0 / n_bins
        filled = [b for b in range(n_bins) if p["count"][b]]  # empty bins draw nothing
        centers = [(b + 0.5) * width for b in range(n_bins)]
        xs = [centers[b] for b in filled]
        accs = [float(p["accuracy"][b]) for b in filled]  # type: ignore[arg-type]
        confs = [float(p["confidence"][b]) for b in filled]  # type: ignore[arg-type]
        ax.bar(xs, accs, width * 0.95, color=_COLORS[i % len(_COLORS)], alpha=0.85,
               edgecolor="black", lw=0.5, label="accuracy")
        # The gap, hatched between accuracy and the bin's mean confidence: above the bar
        # where the model is over-confident, inside it where it is under-confident.
        ax.bar(xs, [c - a for c, a in zip(confs, accs, strict=True)], width * 0.95,
               bottom=accs, color="none", edgecolor="#d62728", hatch="///", lw=0.6,
               label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        e = r.get(scope, d, "ece")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{d}\nECE {fmt(e)}", xlabel="confidence")
        ax.title.set_fontsize(9)
        if i % cols == 0:
            ax.set_ylabel("accuracy")
        share = sum(p["count"])
        inset = ax.inset_axes((0.06, 0.62, 0.35, 0.3))
        inset.bar(centers, [n / share for n in p["count"]], width, color="grey")
        inset.set_xlim(0, 1)
        inset.set_xticks([])
        inset.set_yticks([])
        inset.set_title("share of points", fontsize=6, pad=1)
    for ax in axes[len(pooled):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Reliability diagrams, clean test set ({scope[0]}, {scope[1]}; "
                 "all seeds pooled)", fontsize=10)
    return fig


def _distillation_figure(r: Results, scope: tuple[str, str]) -> Figure | None:
    """Student accuracy beside its teacher's, for every defense that distils."""
    rows = [(d, r.get(scope, d, "clean_accuracy"), r.get(scope, d, "teacher_accuracy"))
            for d in r.defenses]
    rows = [x for x in rows if x[2] and x[2]["mean"] is not None]
    if not rows:
        return None
    fig = Figure(figsize=(max(6.0, 1.8 * len(rows) + 2), 3.9), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for k, (label, color) in enumerate((("teacher", "#bbbbbb"), ("student", "#1f77b4"))):
        stats = [row[2] if k == 0 else row[1] for row in rows]
        xs = [i + (k - 0.5) * width for i in range(len(rows))]
        means = [s["mean"] if s else math.nan for s in stats]
        ax.bar(xs, means, width, yerr=[(s["std"] or 0.0) if s else 0.0 for s in stats],
               capsize=3, color=color, edgecolor="black", lw=0.5, label=label)
        for x, m, st in zip(xs, means, stats, strict=True):
            if math.isfinite(m):
                ax.annotate(f"{m:.3f}", (x, m + ((st or {}).get("std") or 0.0)),
                            xytext=(0, 3), textcoords="offset points", ha="center",
                            fontsize=7)
    base = r.get(scope, BASELINE, "clean_accuracy")
    if base and base["mean"] is not None:
        ax.axhline(base["mean"], color="#d62728", ls=":", lw=1,
                   label=f"{BASELINE} (trained on the labels)")
    lows = [s["mean"] - (s["std"] or 0) for row in rows for s in row[1:] if s]
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    ax.set_xticks(range(len(rows)), [row[0] for row in rows], rotation=15, ha="right",
                  fontsize=8)
    ax.set(ylabel="clean test accuracy",
           title=f"Distillation: student accuracy from each teacher\n({scope[0]}, {scope[1]})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower right")
    return fig


#: Figure builders, in report order: (file name stem, builder).
_FIGURES = (
    ("robust_vs_eps", _security_curves),
    ("poisoning_vs_flip_rate", _poisoning_curves),
    ("offmanifold_confidence", _offmanifold_figure),
    ("reliability", _reliability_figure),
    ("distillation", _distillation_figure),
)


def figures(r: Results) -> dict[str, Figure]:
    """Every figure the results support, keyed by file name."""
    figs: dict[str, Figure] = {}
    for si, scope in enumerate(r.scopes):
        for stem, build in _FIGURES:
            fig = build(r, scope)
            if fig is not None:
                figs[f"{stem}_{_scope_tag(si, scope)}.png"] = fig
    return figs


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


# --------------------------------------------------------------------------- documents


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


def sanity_summary(doc: dict[str, Any]) -> list[str]:
    """The "Evaluation sanity checks" section: every flag beside its defense, or one line
    saying that all checks passed (docs/checks.md). Aggregated from the cells' ``checks``.

    One line per (scope, defense, check) that flagged in any seed: how many seeds flagged
    out of the seeds that ran it, one seed's message and the doc anchor.
    """
    r = Results(doc)
    lines: list[str] = []
    if r.attacks and r.evasion_threats():
        if r.headline_attack() == "worst-case":
            lines.append(f"Robust accuracy in this report is the per-sample worst case over "
                         f"all {len(r.attacks)} attacks run ({', '.join(r.attacks)}), never "
                         "the most flattering one.")
        else:
            lines.append(f"Robust accuracy in this report comes from a single attack "
                         f"(`{r.attacks[0]}`): there is no worst case over several attacks, "
                         "so it is an upper bound that one stronger attack may lower.")
    by: dict[tuple[tuple[str, str], str, str], list[tuple[int, dict[str, Any]]]] = \
        defaultdict(list)
    models = 0
    for c in doc["cells"]:
        if c["status"] != "ok" or not c.get("checks"):
            continue
        models += 1
        scope = (spec_label(c["dataset"]), spec_label(c["model"]))
        for o in c["checks"]:
            by[(scope, spec_label(c["defense"]), o["check"])].append((c["seed"], o))
    if not by:
        lines.append("No evaluation sanity checks ran: they run on every clean-label model "
                     "evaluated under evasion threats (docs/checks.md).")
        return lines
    counts: dict[str, int] = defaultdict(int)
    skipped: dict[str, str] = {}
    for (scope, defense, check), outs in by.items():
        flagged = [(seed, o) for seed, o in outs if o["status"] == "flag"]
        ran = [o for _, o in outs if o["status"] != "skipped"]
        counts["ran"] += len(ran)
        counts["flag"] += len(flagged)
        counts["skipped"] += len(outs) - len(ran)
        for _, o in outs:
            if o["status"] == "skipped":
                skipped.setdefault(check, o["message"])
        if flagged:
            seed, o = flagged[0]
            lines.append(f"**{defense}** ({scope[0]}, {scope[1]}): `{check}` flagged in "
                         f"{len(flagged)} of {len(ran)} seeds; seed {seed}: {o['message']} "
                         f"(see {o['doc']})")
    def n(k: int, word: str) -> str:
        return f"{k} {word}{'' if k == 1 else 's'}"

    tail = (f"{n(counts['ran'], 'check run')} on {n(models, 'clean-label model')}"
            + (f", {counts['skipped']} skipped" if counts["skipped"] else ""))
    if not counts["flag"]:
        lines.append(f"All evaluation sanity checks passed ({tail}): no sign of masked "
                     "gradients (docs/checks.md).")
    else:
        lines.append(f"{counts['flag']} of {tail} flagged; a flag means the robust accuracy "
                     "above is likely overstated (docs/checks.md says what to do).")
    if skipped:
        lines.append("Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())
                     + ".")
    return lines


def threat_summary(doc: dict[str, Any]) -> list[str]:
    tm = doc["threat_model"]
    lines = []
    for e in tm["evasion"]:
        eps = ", ".join(f"{x:g}" for x in e["eps"])
        kind = "targeted (random target class per point)" if e["targeted"] else "untargeted"
        know = tm.get("attack_knowledge", {})
        attacks = [spec_label(a) for a in tm["attacks"]]
        lines.append(f"Evasion: {kind}, {e['norm']} perturbations of radius eps in "
                     f"{{{eps}}} inside the input bounds, attacks: "
                     + ", ".join(f"{a} ({know[a]})" if a in know else a for a in attacks)
                     + ".")
    flips: dict[str, list[float]] = defaultdict(list)
    for c in doc["cells"]:
        for m in c["metrics"]:
            if m["metric"] == "n_flipped" and m["value"] is not None:
                flips[m["threat"]].append(m["value"])
    n_train = {c["poisoning"]["id"]: c.get("poisoning_info", {}).get("n_train")
               for c in doc["cells"] if c["poisoning"] and c.get("poisoning_info")}
    for p in tm["poisoning"]:
        what = flip_description(p)
        count = ""
        if flips.get(p["id"]):
            count = (f" ({int(flips[p['id']][0])} of {n_train.get(p['id'])} training labels)")
        lines.append(f"Poisoning: the attacker flips a fraction {p['rate']:g} of the training "
                     f"labels{count}: {what}.")
    if not lines:
        lines.append("No attack declared.")
    return lines


def _failed_cell(c: dict[str, Any]) -> str:
    """A failed cell in one line: where it sits in the grid, and why it failed."""
    poison = c["poisoning"]["id"] if c["poisoning"] else "no poisoning"
    return (f"{spec_label(c['dataset'])} / {spec_label(c['model'])} / "
            f"{spec_label(c['defense'])}, {poison}, seed {c['seed']}: {c['error']}")


def write_reports(doc: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.md (+ figures/) and a self-contained report.html; return their paths."""
    out = Path(out_dir)
    r = Results(doc)
    figs = {name: _png(f) for name, f in figures(r).items()}
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name, data in figs.items():
        atomic_write(fig_dir / name, data)
    tabs = tables(r)
    found = findings(r)
    ranks = [t for t in (_ranking_table(r, scope) for scope in r.scopes) if t]
    claims = _expectations_table(doc)
    if claims:
        ranks.insert(0, claims)
    suite = doc["suite"]
    env = doc["environment"]
    failed = [c for c in doc["cells"] if c["status"] != "ok"]
    title = f"poisonlab report: {suite['name']}"
    prov = (f"poisonlab {doc['poisonlab_version']}, torch {env['packages'].get('torch')}, "
            f"{env['platform']}, {env['torch_threads']} threads, git {env.get('git') or 'n/a'};"
            f" {doc['n_cells']} cells, {doc['n_failed']} failed; created {doc['created']}")
    verdict_note = (f"Each defense against `{BASELINE}` with the same data, model and seeds. "
                    f"A difference counts only when it exceeds {Z_SE:g} standard errors of the "
                    "seed-to-seed spread; otherwise it is reported as no clear difference.")

    warn = (f"{len(failed)} of {doc['n_cells']} cells failed (listed under Failed cells): "
            "their numbers are missing from every table and figure below.") if failed else ""
    md = [f"# {title}", "", suite["description"] or "", "", f"_{prov}_", ""]
    md += [f"**{warn}**", ""] if warn else []
    md += ["## Threat model", ""]
    md += [f"- {line}" for line in threat_summary(doc)] + [""]
    sanity = sanity_summary(doc)
    md += ["## Evaluation sanity checks", ""] + [f"- {line}" for line in sanity] + [""]
    md += ["## What the numbers say", "", verdict_note, ""]
    md += [f"- {line}" for line in found] + [""]
    md += [t.markdown() for t in ranks]
    if failed:
        md += ["## Failed cells", ""]
        md += [f"- {_failed_cell(c)}" for c in failed] + [""]
    md += ["## Figures", ""]
    md += [f"![{n}](figures/{n})" for n in figs] + [""]
    md += ["## Tables", ""] + [t.markdown() for t in tabs]
    md += ["Metric definitions: docs/metrics.md. Every number per cell: results.json.", ""]

    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
           "padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em;"
           "font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
           "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
           ".note,.prov{color:#666;font-size:13px}img{max-width:100%;margin:.5em 0}"
           "li{margin:.3em 0}")
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{css}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
         f"<p>{html.escape(suite['description'] or '')}</p>",
         f"<p class='prov'>{html.escape(prov)}</p>"]
    h += [f"<p><strong>{html.escape(warn)}</strong></p>"] if warn else []
    h += ["<h2>Threat model</h2><ul>"]
    h += [f"<li>{html.escape(x)}</li>" for x in threat_summary(doc)] + ["</ul>"]
    h += ["<h2>Evaluation sanity checks</h2><ul>"]
    h += [f"<li>{_inline(x)}</li>" for x in sanity] + ["</ul>"]
    h += ["<h2>What the numbers say</h2>", f"<p class='note'>{_inline(verdict_note)}</p><ul>"]
    h += [f"<li>{_inline(x)}</li>" for x in found] + ["</ul>"]
    h += [t.html() for t in ranks]
    if failed:
        h += ["<h2>Failed cells</h2><ul>"] + [
            f"<li>{html.escape(_failed_cell(c))}</li>" for c in failed] + ["</ul>"]
    h += ["<h2>Figures</h2>"]
    h += [f"<img alt='{html.escape(n)}' src='data:image/png;base64,"
          f"{base64.b64encode(d).decode()}'>" for n, d in figs.items()]
    h += ["<h2>Tables</h2>"] + [t.html() for t in tabs]
    h += ["<p class='note'>Metric definitions: docs/metrics.md. Every number per cell: "
          "results.json.</p></body></html>"]
    paths = {"md": out / "report.md", "html": out / "report.html"}
    atomic_write(paths["md"], "\n".join(md))
    atomic_write(paths["html"], "\n".join(h))
    return paths


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code` spans."""
    out = html.escape(text)
    for mark, tag in (("**", "b"), ("`", "code")):
        parts = out.split(mark)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(parts))
    return out


def summary_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The short table `poisonlab run` prints: one row per defense."""
    r = Results(doc)
    head = r.headline_attack()
    threats = [t for t in r.evasion_threats() if not t["targeted"]]
    mid = threats[len(threats) // 2] if threats else None
    headers = ["defense", "clean acc"]
    if mid:
        headers.append(f"robust acc {mid['id']}")
    headers += [f"acc drop {p}" for p in r.poisonings] + ["ECE", "conf. on noise"]
    rows = []
    for scope in r.scopes:
        for d in r.defenses:
            row = [d if len(r.scopes) == 1 else f"{d} [{scope[0]}/{scope[1]}]",
                   fmt(r.get(scope, d, "clean_accuracy"))]
            if mid:
                row.append(fmt(r.get(scope, d, "robust_accuracy", threat=mid["id"],
                                     attack=head)))
            row += [fmt(r.get(scope, d, "accuracy_drop", poisoning=p, threat=p))
                    for p in r.poisonings]
            row += [fmt(r.get(scope, d, "ece")),
                    fmt(r.get(scope, d, "offmanifold_confidence", threat="uniform"))]
            rows.append(row)
    return headers, rows
