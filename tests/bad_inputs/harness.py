"""The bad-input case type, the contract every case must meet, and the table renderer."""

from __future__ import annotations

import contextlib
import io
import re
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poisonlab.errors import PoisonlabError, PoisonlabWarning

#: Boundaries, in the order the table lists them.
BOUNDARIES = ("suite", "cli", "api", "model", "model file", "data file", "results file")


@dataclass(frozen=True)
class Case:
    """One bad input.

    ``boundary``: where it enters (one of :data:`BOUNDARIES`); ``what``: the bad input in
    a few words, as the table shows it; ``make``: given a fresh temporary folder, either
    performs the API call (``cli=False``) or returns the CLI's argv (``cli=True``);
    ``expect``: the PoisonlabError subclass raised, or the PoisonlabWarning subclass
    warned (the call then returns normally); ``match``: a regex the message must contain,
    with the temporary folder written ``<tmp>``.
    """

    boundary: str
    what: str
    make: Callable[[Path], Any]
    expect: type[BaseException] | type[Warning]
    match: str
    cli: bool = False

    @property
    def id(self) -> str:
        return f"{self.boundary}: {self.what}"


def cli_case(boundary: str, what: str, argv: Callable[[Path], Sequence[str]],
             match: str) -> Case:
    """A case run through ``poisonlab`` (in process): exit code 2, one line on stderr."""
    return Case(boundary, what, argv, PoisonlabError, match, cli=True)


class ContractBroken(AssertionError):
    pass


def _one_line(msg: str, case: Case) -> str:
    if not msg.strip():
        raise ContractBroken(f"{case.id}: empty message")
    if "\n" in msg.strip():
        raise ContractBroken(f"{case.id}: message spans lines:\n{msg}")
    if "Traceback" in msg:
        raise ContractBroken(f"{case.id}: traceback in message:\n{msg}")
    if not re.search(case.match, msg):
        raise ContractBroken(f"{case.id}: message does not match {case.match!r}:\n{msg}")
    return msg.strip()


def message(case: Case, tmp: Path) -> tuple[str, str]:
    """Run ``case`` in ``tmp``, check its contract, return (kind, message).

    kind is the error's or warning's class name, or "exit 2" for a CLI case. The message
    has ``tmp`` replaced by ``<tmp>`` so that the table does not depend on where it ran.
    Raises ContractBroken (an AssertionError) when the contract does not hold.
    """
    tmp = Path(tmp)
    if case.cli:
        from poisonlab.cli import main

        argv = [str(a) for a in case.make(tmp)]
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse usage errors
                code = e.code
            except BaseException:
                raise ContractBroken(
                    f"{case.id}: poisonlab {' '.join(argv)} raised\n{traceback.format_exc()}"
                ) from None
        if code != 2:
            raise ContractBroken(f"{case.id}: exit code {code}, expected 2; stderr:\n"
                                 f"{err.getvalue()}")
        text = err.getvalue()
        if text.count("\n") != 1:
            raise ContractBroken(f"{case.id}: stderr is not one line:\n{text}")
        kind = "exit 2"
    elif issubclass(case.expect, Warning):
        if not issubclass(case.expect, PoisonlabWarning):
            raise ContractBroken(f"{case.id}: expects {case.expect}, not a PoisonlabWarning")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                case.make(tmp)
            except BaseException:
                raise ContractBroken(f"{case.id}: raised instead of warning\n"
                                     f"{traceback.format_exc()}") from None
        hits = [w for w in caught if issubclass(w.category, case.expect)]
        if not hits:
            raise ContractBroken(f"{case.id}: no {case.expect.__name__}; got "
                                 f"{[str(w.message) for w in caught]}")
        text, kind = str(hits[0].message), case.expect.__name__
    else:
        if not issubclass(case.expect, PoisonlabError):
            raise ContractBroken(f"{case.id}: expects {case.expect}, not a PoisonlabError")
        try:
            case.make(tmp)
        except case.expect as e:
            text, kind = str(e), type(e).__name__
        except BaseException:
            raise ContractBroken(f"{case.id}: expected {case.expect.__name__}, got\n"
                                 f"{traceback.format_exc()}") from None
        else:
            raise ContractBroken(f"{case.id}: no error raised")
    text = text.replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>")
    return kind, _one_line(text, case)


def all_cases() -> list[Case]:
    """Every case of every ``cases_*`` module, in boundary order then file order."""
    import importlib
    import pkgutil

    from . import __path__ as pkg_path

    cases: list[Case] = []
    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg_path)
                      if m.name.startswith("cases_")):
        cases += importlib.import_module(f"{__package__}.{mod}").CASES
    unknown = {c.boundary for c in cases} - set(BOUNDARIES)
    if unknown:
        raise ValueError(f"unknown boundaries {sorted(unknown)}: expected {BOUNDARIES}")
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ValueError(f"duplicate case ids: {sorted(dupes)}")
    return sorted(cases, key=lambda c: BOUNDARIES.index(c.boundary))


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render(rows: list[tuple[Case, str, str]]) -> str:
    """docs/bad_inputs.md from (case, kind, message) rows."""
    n_cli = sum(c.cli for c, _, _ in rows)
    lines = [
        "# Bad inputs and what poisonlab answers",
        "",
        "<!-- generated by `python -m tests.bad_inputs --write`; "
        "tests/bad_inputs keeps it current -->",
        "",
        f"{len(rows)} bad inputs, each run by `make test` (tests/bad_inputs): {n_cli} through "
        f"the `poisonlab` command, {len(rows) - n_cli} through the Python API. A CLI case "
        "must exit with code 2 and print one line on stderr, no traceback; an API case must "
        "raise the PoisonlabError subclass shown (or warn, for a PoisonlabWarning) with a "
        "one-line message. `<tmp>` stands for the test's temporary folder.",
        "",
    ]
    for boundary in BOUNDARIES:
        group = [r for r in rows if r[0].boundary == boundary]
        if not group:
            continue
        lines += [f"## {boundary} ({len(group)})", "", "| bad input | answer | message |",
                  "|---|---|---|"]
        lines += [f"| {_cell(c.what)} | {kind} | `{_cell(msg)}` |" for c, kind, msg in group]
        lines.append("")
    return "\n".join(lines)
