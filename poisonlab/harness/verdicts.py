"""What the regression gate found: one :class:`Comparison` per gated number, its
:class:`Verdict`, and the :class:`GateResult` that ``poisonlab check`` prints, writes as
Markdown or JSON, and exits with. :func:`poisonlab.harness.gate.check` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .._text import fmt_number, markdown_table, plural, text_table
from .expectations import (
    ExpectationResult,
    ExpectationVerdict,
    expectation_table,
    z_se,
)
from .schema import Identity, cell_label


class Verdict(StrEnum):
    """What happened to one gated number. ``missing`` fails the gate; ``new`` does not."""

    REGRESSED = "regressed"
    MISSING = "missing"
    IMPROVED = "improved"
    NEW = "new"
    WITHIN = "within"

    @property
    def label(self) -> str:
        return {"missing": "missing in results", "new": "new in results"}.get(self.value,
                                                                             self.value)


# The order in which the table lists verdicts.
_ORDER = (Verdict.REGRESSED, Verdict.MISSING, Verdict.IMPROVED, Verdict.NEW, Verdict.WITHIN)




@dataclass(frozen=True)
class Comparison:
    """One gated number: its cell and metric, both values, the tolerance and the verdict.

    ``baseline``/``now``/``tolerance`` are None where that side has no value (a missing or
    new number). ``delta`` is ``now - baseline``; ``gain`` is ``delta`` signed by the
    metric's direction, so that ``gain > 0`` is better whichever way the metric points.
    """

    dataset: str
    model: str
    defense: str
    poisoning: str
    metric: str
    threat: str | None
    attack: str | None
    verdict: Verdict
    baseline: float | None = None
    now: float | None = None
    tolerance: float | None = None
    higher_is_better: bool | None = None
    n_baseline: int | None = None
    n_now: int | None = None
    note: str = ""

    @property
    def identity(self) -> Identity:
        return (self.dataset, self.model, self.defense, self.poisoning, self.metric,
                self.threat, self.attack)

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.now is None:
            return None
        return self.now - self.baseline

    @property
    def gain(self) -> float | None:
        d = self.delta
        if d is None or self.higher_is_better is None:
            return None
        return d if self.higher_is_better else -d

    @property
    def cell(self) -> str:
        """Compact: ``dataset/model/defense/poisoning @ threat [attack]``."""
        return cell_label(self.identity)


@dataclass(frozen=True)
class GateResult:
    """What :func:`check` found: one row per gated number, the expectations, the warnings,
    the exit status.

    ``rows`` are ordered regressed (worst first), missing in results, improved (largest
    first), new in results, within. ``expectations`` holds one verdict per expectation
    and scope, in the suite's order. ``exit_code`` is 0 when nothing regressed, nothing
    is missing (and, with ``fail_on_improvement``, nothing improved) and every required
    expectation holds, else 1.
    """

    rows: tuple[Comparison, ...]
    warnings: tuple[str, ...] = ()
    fail_on_improvement: bool = False
    suite: str = ""
    expectations: tuple[ExpectationResult, ...] = ()
    #: False when :func:`check` was called without a baseline (expectations only).
    has_baseline: bool = True
    #: Why the baseline and the results differ beyond their numbers: one line per changed
    #: suite key, then the groups of missing / new rows one dataset, model, defense or
    #: poisoning explains (:mod:`poisonlab.harness.causes`).
    causes: tuple[str, ...] = ()
    #: The identities of the rows the causes explain: counted, not listed row by row.
    explained: frozenset[Identity] = frozenset()

    def of(self, verdict: Verdict | str) -> tuple[Comparison, ...]:
        """The rows with one verdict."""
        v = Verdict(verdict)
        return tuple(r for r in self.rows if r.verdict is v)

    @property
    def regressed(self) -> tuple[Comparison, ...]:
        return self.of(Verdict.REGRESSED)

    @property
    def improved(self) -> tuple[Comparison, ...]:
        return self.of(Verdict.IMPROVED)

    @property
    def missing(self) -> tuple[Comparison, ...]:
        return self.of(Verdict.MISSING)

    @property
    def new(self) -> tuple[Comparison, ...]:
        return self.of(Verdict.NEW)

    @property
    def within(self) -> tuple[Comparison, ...]:
        return self.of(Verdict.WITHIN)

    @property
    def failing(self) -> tuple[Comparison, ...]:
        """The rows that fail the gate."""
        bad = {Verdict.REGRESSED, Verdict.MISSING}
        if self.fail_on_improvement:
            bad.add(Verdict.IMPROVED)
        return tuple(r for r in self.rows if r.verdict in bad)

    @property
    def failing_expectations(self) -> tuple[ExpectationResult, ...]:
        """The required expectations that do not hold (or are inconclusive), per scope."""
        return tuple(r for r in self.expectations if r.failing)

    @property
    def ok(self) -> bool:
        return not self.failing and not self.failing_expectations

    @property
    def exit_code(self) -> int:
        """0: nothing regressed or missing, every required expectation holds; 1: the gate
        fails (the CLI's exit status)."""
        return 0 if self.ok else 1

    def headline(self) -> str:
        counts = [f"{len(self.of(v))} {v.label}" for v in _ORDER if self.of(v)]
        status = "passed" if self.ok else "FAILED"
        why = " (improvements fail: --fail-on-improvement)" if (
            self.fail_on_improvement and self.improved) else ""
        if self.has_baseline:
            suite = f" against the {self.suite!r} baseline" if self.suite else ""
            out = (f"poisonlab check{suite}: {status}{why}: {plural(len(self.rows), 'number')}: "
                   f"{', '.join(counts) or 'none gated'}")
        else:
            suite = f" of {self.suite!r}" if self.suite else ""
            out = f"poisonlab check{suite} (no baseline): {status}"
        if self.expectations:
            verdicts = [r.verdict for r in self.expectations]
            tally = [_tally(verdicts.count(v), v) for v in ExpectationVerdict if v in verdicts]
            out += f"; expectations: {', '.join(tally)}"
            if n_failing := len(self.failing_expectations):
                out += f" ({n_failing} required not holding)"
        elif not self.has_baseline:
            out += ": no expectations"
        return out

    def expectation_table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and rows of the expectations: :func:`.expectations.expectation_table`."""
        return expectation_table(self.expectations)

    def table(self, *, show_within: bool = False) -> tuple[list[str], list[list[str]]]:
        """Headers and rows (strings) of the table; within rows only if ``show_within``."""
        headers = ["metric", "cell", "baseline", "now", "delta", "tolerance", "verdict"]
        rows = [[r.metric, r.cell, fmt_number(r.baseline), fmt_number(r.now),
                 fmt_number(r.delta, sign=True), fmt_number(r.tolerance),
                 r.verdict.label + (f" ({r.note})" if r.note else "")]
                for r in self.rows if (show_within or r.verdict is not Verdict.WITHIN)
                and r.identity not in self.explained]
        return headers, rows

    def _within_line(self, show_within: bool) -> str:
        n = len(self.within)
        if show_within or not n:
            return ""
        return f"{n} {'more ' if len(self.rows) > n else ''}within tolerance (not listed)."

    def text(self, *, show_within: bool = False) -> str:
        """A plain-text report for the terminal: headline, warnings, table, within count."""
        out = [self.headline()]
        out += [f"warning: {w}" for w in self.warnings]
        if self.causes:
            out += ["", _CAUSES, *(f"  {c}" for c in self.causes)]
        headers, rows = self.table(show_within=show_within)
        if rows:
            out += ["", *(line.rstrip() for line in text_table(headers, rows).splitlines())]
        if line := self._within_line(show_within):
            out += ["", line]
        if self.expectations:
            headers, rows = self.expectation_table()
            out += ["", f"Expectations: {_expectations_note()}.", "",
                    *(line.rstrip() for line in text_table(headers, rows).splitlines())]
        return "\n".join(out)

    def markdown(self, *, show_within: bool = False) -> str:
        """The same report as Markdown (a CI job summary)."""
        out = [f"### {self.headline()}", ""]
        if self.warnings:
            out += [f"- warning: {_md(w)}" for w in self.warnings] + [""]
        if self.causes:
            out += [_CAUSES, "", *(f"- {_md(c)}" for c in self.causes), ""]
        headers, rows = self.table(show_within=show_within)
        if rows:
            out += markdown_table(headers, rows, escape=True)
            out.append("")
        if line := self._within_line(show_within):
            out += [line, ""]
        if self.expectations:
            headers, rows = self.expectation_table()
            note = _expectations_note()
            out += ["#### Expectations", "", f"{note[0].upper()}{note[1:]}.", ""]
            out += markdown_table(headers, rows, escape=True)
            out.append("")
        return "\n".join(out)


    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (``poisonlab check --format json``): the status,
        the counts per verdict, the causes, every row and every expectation verdict."""
        return {
            "kind": "poisonlab-check", "suite": self.suite, "ok": self.ok,
            "exit_code": self.exit_code, "has_baseline": self.has_baseline,
            "fail_on_improvement": self.fail_on_improvement,
            "counts": {v.value: len(self.of(v)) for v in _ORDER},
            "warnings": list(self.warnings), "causes": list(self.causes),
            "rows": [{**{k: getattr(r, k) for k in _ROW_FIELDS}, "verdict": r.verdict.value,
                      "delta": r.delta, "explained": r.identity in self.explained}
                     for r in self.rows],
            "expectations": [{"claim": e.expectation.text,
                              "required": e.expectation.required, **e.to_dict(),
                              "failing": e.failing} for e in self.expectations],
        }


_CAUSES = "Changes since the baseline (their rows are counted above, not listed):"
_ROW_FIELDS = ("dataset", "model", "defense", "poisoning", "metric", "threat", "attack",
               "baseline", "now", "tolerance", "higher_is_better", "n_baseline", "n_now",
               "note")


#: The name of :class:`GateResult` before issue 20 ("check" names only the command).
CheckResult = GateResult


def _tally(n: int, verdict: ExpectationVerdict) -> str:
    """``1 holds``, ``2 hold``, ``3 do not hold``, ``1 inconclusive``."""
    plural = {ExpectationVerdict.HOLDS: "hold", ExpectationVerdict.DOES_NOT_HOLD: "do not hold"}
    return f"{n} {verdict.value if n == 1 else plural.get(verdict, verdict.value)}"


def _expectations_note() -> str:
    return (f"a required claim fails the gate unless it holds (beyond {z_se():g} standard "
            "errors of the seed spread); the others never fail it")


def _md(s: str) -> str:
    return s.replace("|", "\\|")


