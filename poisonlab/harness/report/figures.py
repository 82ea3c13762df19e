"""The report's figures: security curves, poisoning curves, off-manifold confidence,
reliability diagrams and distillation, drawn from :class:`Results` with matplotlib.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ..._text import spec_label
from .certified import certified_figure
from .view import BASELINE, Results, display, flip_family, fmt

# --------------------------------------------------------------------------- figures

#: Okabe & Ito's colour-blind-safe palette (blue, vermillion, bluish green, reddish purple,
#: orange, sky blue, yellow, black).
_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000"]
#: Fewer points than this are drawn as markers with error bars, not as a curve.
MIN_CURVE_POINTS = 3


def _band(ax: Any, xs: list[float], stats: list[dict[str, Any] | None], label: str,
          color: str) -> None:
    """Mean over seeds with its seed spread (std): a line and a band from
    MIN_CURVE_POINTS points on, markers with error bars below (no line through 2 points);
    a single seed has no bar."""
    pts = [(x, s) for x, s in zip(xs, stats, strict=True) if s and s["mean"] is not None]
    if not pts:
        return
    x = [p[0] for p in pts]
    m = [p[1]["mean"] for p in pts]
    sd = [(p[1]["std"] or 0.0) if p[1].get("n", 2) > 1 else 0.0 for p in pts]
    if len(pts) < MIN_CURVE_POINTS:
        ax.errorbar(x, m, yerr=sd, fmt="o", color=color, label=display(label), ms=5,
                    capsize=3, lw=1.2)
        return
    ax.plot(x, m, marker="o", color=color, label=display(label), lw=1.8, ms=4)
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
        ax.set(xlabel=f"{norm} eps", ylabel=f"robust accuracy ({display(head)})",
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
    right.set_xticks(range(len(r.defenses)), [display(d) for d in r.defenses], rotation=30,
                     ha="right", fontsize=8)
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
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{display(d)}\nECE {fmt(e)}",
               xlabel="confidence")
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
                   label=f"{display(BASELINE)} (trained on the labels)")
    lows = [s["mean"] - (s["std"] or 0) for row in rows for s in row[1:] if s]
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    ax.set_xticks(range(len(rows)), [display(row[0]) for row in rows], rotation=15, ha="right",
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
    ("certified", certified_figure),
)


def figures(r: Results) -> dict[str, Figure]:
    """Every figure the results support, keyed by file name."""
    figs: dict[str, Figure] = {}
    with matplotlib.rc_context(_RC):
        for si, scope in enumerate(r.scopes):
            for stem, build in _FIGURES:
                fig = build(r, scope)
                if fig is not None:
                    figs[f"{stem}_{_scope_tag(si, scope)}.png"] = fig
    return figs


_RC = {"hatch.linewidth": 1.4}  # hatching thick enough to see at the report's resolution


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):  # hatches are drawn at savefig time
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()
