"""The report's words and tables: the verdicts against the baseline defense, the ranking
with ties, and every table of mean +- std (n).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ...metrics import metric_info
from ..expectations import evaluate_expectations, expectation_table
from ..spec import PRETRAINED
from ..stats import Z_SE, compare, rank_with_ties
from .view import BASELINE, Results, Table, _robust_note, fmt

# --------------------------------------------------------------------------- verdicts


def _label(metric: str) -> str:
    """How the report names ``metric`` (its catalogue label)."""
    return metric_info(metric).label


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
                (_label("clean_accuracy"), r.get(scope, d, "clean_accuracy"),
                 r.get(scope, BASELINE, "clean_accuracy")),
            ]
            for t in r.evasion_threats():
                checks.append((f"{_label('robust_accuracy')} ({head}) at {t['id']}",
                               r.get(scope, d, "robust_accuracy", threat=t["id"], attack=head),
                               r.get(scope, BASELINE, "robust_accuracy", threat=t["id"],
                                     attack=head)))
            for p in r.poisonings:
                checks.append((f"{_label('accuracy_drop')} under {p}",
                               r.get(scope, d, "accuracy_drop", poisoning=p, threat=p),
                               r.get(scope, BASELINE, "accuracy_drop", poisoning=p, threat=p)))
            checks += [
                (_label("ece"), r.get(scope, d, "ece"), r.get(scope, BASELINE, "ece")),
                (_label("offmanifold_confidence"),
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
    ranked by mean accuracy in tiers (defenses whose 95% interval overlaps the tier leader's
    share its rank: :func:`~poisonlab.harness.stats.rank_with_ties`); the order
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
        "flipped labels) and the defense's rank in that column; defenses whose 95% "
        "interval over seeds overlaps the leader's share its rank; rows are ordered by "
        "mean rank")


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
