"""report.md and report.html (and the CLI's summary rows), written from a results document.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._io import atomic_write
from ..._text import plural, spec_label
from ..certified import CHECK as CERTIFICATE_CHECK
from .certified import certified_summary, certified_table
from .figures import _png, figures
from .tables import _expectations_table, _ranking_table, findings, tables
from .threats import verdicts
from .view import BASELINE, Results, Table, flip_description, fmt

# --------------------------------------------------------------------------- documents


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
        # The certificate check has its own section (Certified robustness).
        evaluation = [o for o in c.get("checks") or [] if o["check"] != CERTIFICATE_CHECK]
        if c["status"] != "ok" or not evaluation:
            continue
        models += 1
        scope = (spec_label(c["dataset"]), spec_label(c["model"]))
        for o in evaluation:
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
                         f"{len(flagged)} of {plural(len(ran), 'seed')}; seed {seed}: "
                         f"{o['message']} (see {o['doc']})")
    tail = (f"{plural(counts['ran'], 'check run')} on {plural(models, 'clean-label model')}"
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


VERDICT_NOTE = ("Per threat model, the defenses ranked by what the attacker leaves them, "
                "best first, with the 95% interval over seeds and the clean-accuracy cost of "
                "each against `none`. A tie is a tie in every table of this report.")


@dataclass(frozen=True)
class _Parts:
    """What both documents say, computed once."""

    title: str
    description: str
    prov: str
    warn: str
    verdicts: list[tuple[Table, str]]
    threats: list[str]
    sanity: list[str]
    certified: list[str]
    certified_tabs: list[Table]
    verdict_note: str
    found: list[str]
    ranks: list[Table]
    failed: list[str]
    figs: dict[str, bytes]
    tabs: list[Table]


def write_reports(doc: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.md (+ figures/) and a self-contained report.html; return their paths."""
    out = Path(out_dir)
    r = Results(doc)
    figs = {name: _png(f) for name, f in figures(r).items()}
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name, data in figs.items():
        atomic_write(fig_dir / name, data)
    ranks = [t for t in (_ranking_table(r, scope) for scope in r.scopes) if t]
    claims = _expectations_table(doc)
    if claims:
        ranks.insert(0, claims)
    suite, env = doc["suite"], doc["environment"]
    failed = [c for c in doc["cells"] if c["status"] != "ok"]
    parts = _Parts(
        title=f"poisonlab report: {suite['name']}", description=suite["description"] or "",
        prov=(f"poisonlab {doc['poisonlab_version']}, torch {env['packages'].get('torch')}, "
              f"{env['platform']}, {env['torch_threads']} threads, "
              f"git {env.get('git') or 'n/a'}; {doc['n_cells']} cells, {doc['n_failed']} "
              f"failed; created {doc['created']}"),
        warn=(f"{len(failed)} of {doc['n_cells']} cells failed (listed under Failed cells): "
              "their numbers are missing from every table and figure below.")
        if failed else "",
        verdicts=verdicts(r), threats=threat_summary(doc), sanity=sanity_summary(doc),
        certified=certified_summary(doc),
        certified_tabs=[t for t in (certified_table(r, s) for s in r.scopes) if t],
        verdict_note=(f"Each defense against `{BASELINE}` with the same data, model and "
                      "seeds. A difference counts only when the two 95% intervals over "
                      "seeds do not overlap; otherwise it is reported as no clear "
                      "difference."),
        found=findings(r), ranks=ranks, failed=[_failed_cell(c) for c in failed],
        figs=figs, tabs=tables(r))
    paths = {"md": out / "report.md", "html": out / "report.html"}
    atomic_write(paths["md"], _markdown(parts))
    atomic_write(paths["html"], _html(parts))
    return paths


def _markdown(p: _Parts) -> str:
    md = [f"# {p.title}", "", p.description, "", f"_{p.prov}_", ""]
    md += [f"**{p.warn}**", ""] if p.warn else []
    md += ["## Verdicts by threat model", "", VERDICT_NOTE, ""]
    for table, sentence in p.verdicts:
        md += [table.markdown(), sentence, ""]
    md += ["## Threat model", ""] + [f"- {line}" for line in p.threats] + [""]
    md += ["## Evaluation sanity checks", ""] + [f"- {line}" for line in p.sanity] + [""]
    if p.certified:
        md += ["## Certified robustness to label flips", ""]
        md += [f"- {line}" for line in p.certified] + [""]
        md += [t.markdown() for t in p.certified_tabs]
    md += ["## What the numbers say", "", p.verdict_note, ""]
    md += [f"- {line}" for line in p.found] + [""]
    md += [t.markdown() for t in p.ranks]
    if p.failed:
        md += ["## Failed cells", ""] + [f"- {c}" for c in p.failed] + [""]
    md += ["## Figures", ""] + [f"![{n}](figures/{n})" for n in p.figs] + [""]
    md += ["## Tables", ""] + [t.markdown() for t in p.tabs]
    md += ["Metric definitions: docs/metrics.md. Every number per cell: results.json.", ""]
    return "\n".join(md)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em;"
        "font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        ".note,.prov{color:#666;font-size:13px}img{max-width:100%;margin:.5em 0}"
        "li{margin:.3em 0}")


def _html(p: _Parts) -> str:
    esc = html.escape
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(p.title)}</title>"
         f"<style>{_CSS}</style></head><body>", f"<h1>{esc(p.title)}</h1>",
         f"<p>{esc(p.description)}</p>", f"<p class='prov'>{esc(p.prov)}</p>"]
    h += [f"<p><strong>{esc(p.warn)}</strong></p>"] if p.warn else []
    h += ["<h2 id='verdicts'>Verdicts by threat model</h2>",
          f"<p class='note'>{_inline(VERDICT_NOTE)}</p>"]
    for table, sentence in p.verdicts:
        h += [table.html(), f"<p class='verdict-sentence'>{_inline(sentence)}</p>"]
    h += ["<h2>Threat model</h2><ul>"] + [f"<li>{esc(x)}</li>" for x in p.threats] + ["</ul>"]
    h += ["<h2>Evaluation sanity checks</h2><ul>"]
    h += [f"<li>{_inline(x)}</li>" for x in p.sanity] + ["</ul>"]
    if p.certified:
        h += ["<h2>Certified robustness to label flips</h2><ul>"]
        h += [f"<li>{_inline(x)}</li>" for x in p.certified] + ["</ul>"]
        h += [t.html() for t in p.certified_tabs]
    h += ["<h2>What the numbers say</h2>", f"<p class='note'>{_inline(p.verdict_note)}</p><ul>"]
    h += [f"<li>{_inline(x)}</li>" for x in p.found] + ["</ul>"]
    h += [t.html() for t in p.ranks]
    if p.failed:
        h += ["<h2>Failed cells</h2><ul>"] + [f"<li>{esc(c)}</li>" for c in p.failed]
        h += ["</ul>"]
    h += ["<h2>Figures</h2>"]
    h += [f"<img alt='{esc(n)}' src='data:image/png;base64,{base64.b64encode(d).decode()}'>"
          for n, d in p.figs.items()]
    h += ["<h2>Tables</h2>"] + [t.html() for t in p.tabs]
    h += ["<p class='note'>Metric definitions: docs/metrics.md. Every number per cell: "
          "results.json.</p></body></html>"]
    return "\n".join(h)


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
