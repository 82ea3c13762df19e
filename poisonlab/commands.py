"""The commands behind ``poisonlab``: one handler per command, each a thin shell over the
Python API that prints what the user reads and returns the exit code.

Exit codes (:data:`EXIT_OK` ... :data:`EXIT_CELLS_FAILED`): 0 all good; 1 a regression,
a failed or inconclusive required expectation, or (with ``--strict``) a warning or a
sanity flag; 2 bad input (one line, no traceback); 3 a cell of the run failed (the
summary names each). 130 / 143: interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ._text import plural
from .errors import ConfigError

#: The exit codes of every command.
EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_CELLS_FAILED = 0, 1, 2, 3


def _kinds() -> dict[str, object]:
    """The registries ``poisonlab list`` shows, by the name it takes."""
    from .attacks import attacks
    from .data import datasets
    from .defenses import defenses
    from .harness.executors import executors
    from .models import models
    from .sanity import checks

    return {"attacks": attacks, "defenses": defenses, "datasets": datasets,
            "models": models, "executors": executors, "checks": checks}


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def dispatch(args: argparse.Namespace) -> int:
    """Run the command ``args`` names; its exit code."""
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "list": _list, "evaluate": _evaluate, "baseline": _gate, "check": _gate,
        "validate": _validate, "report": _report, "run": _run}
    return handlers[args.command](args)


def _list(args: argparse.Namespace) -> int:
    kinds = _kinds()
    if args.name is not None:
        return _describe(kinds[args.kind], args.kind, args.name)
    for kind in [args.kind] if args.kind else sorted(kinds):
        reg = kinds[kind]
        print(f"{kind}:")
        rows = [(name, reg.help(name)) for name in reg.names()]  # type: ignore[attr-defined]
        for ns, text in reg.namespaces().items():  # type: ignore[attr-defined]
            rows.append((ns, text))
            # the members of a listed namespace, indented under it (first docstring line)
            rows += [(f"  {m}", _clip(h, 70)) for m, h in
                     reg.members(ns.partition(":")[0])]  # type: ignore[attr-defined]
        width = max([20, *(len(name) for name, _ in rows)])
        for name, text in rows:
            print(f"  {name:<{width}} {text}".rstrip())
    return EXIT_OK


def _describe(reg: Any, kind: str, name: str) -> int:
    """``poisonlab list attacks pgd``: the entry's one line, then each parameter with its
    default, type and meaning (from the docstring)."""
    from ._params import parameters
    from .registry import NamespacedFactory

    entry = reg.get(name)  # an unknown name: UnknownNameError with did-you-mean
    print(f"{name}: {reg.help(name)}")
    if isinstance(entry, NamespacedFactory):
        print("  parameters: those of the library's own class (see its documentation)")
        return EXIT_OK
    rows = parameters(entry)
    if not rows:
        print("  no parameters")
    width = max([8, *(len(r.name) for r in rows)])
    for r in rows:
        kind_text = f" ({r.type})" if r.type else ""
        print(f"  {r.name:<{width}} = {r.default}{kind_text}" + (f": {r.doc}" if r.doc else ""))
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from .harness import load_suite
    from .harness.suite import validate_suite_data

    suite = load_suite(args.suite)
    validate_suite_data(suite)
    n = sum(1 for _ in suite.cells())
    print(f"{args.suite}: ok ({plural(n, 'cell')}: {plural(len(suite.datasets), 'dataset')} x "
          f"{plural(len(suite.models), 'model')} x {plural(len(suite.defenses), 'defense')} x "
          f"{plural(len(suite.poisoning) + 1, 'poisoning setting')} x "
          f"{plural(len(suite.seeds), 'seed')})")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import ConfigError
    from .harness.runner import write_results
    from .harness.store import STORE_NAME

    if not (Path(args.run_dir) / STORE_NAME).is_file():
        raise ConfigError(f"run_dir={args.run_dir!r} holds no {STORE_NAME}: expected a "
                          "folder written by 'poisonlab run'")
    write_results(args.run_dir)
    print(f"report: {Path(args.run_dir) / 'report.html'}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from .harness import load_suite
    from .harness.runner import run_suite
    from .sanity import SanityFailure

    suite = load_suite(args.suite)
    if args.batch_size is not None:
        import dataclasses

        from .harness.suite import validate_eval_batch_size

        suite = dataclasses.replace(
            suite, batch_size=validate_eval_batch_size("--batch-size", args.batch_size))
    flags: list[str] = []
    with noted_warnings() as warned:
        try:
            doc = run_suite(suite, args.out, executor=args.executor, resume=args.resume,
                            progress=not args.quiet, workers=args.workers,
                            strict=args.strict, device=args.device, address=args.address)
        except SanityFailure as e:
            doc, flags = dict(e.doc), e.lines
    _summary(args, doc, reports=True)
    for line in flags:
        print(f"poisonlab: sanity check: {line}", file=sys.stderr)
    return _outcome(args, doc, flags=bool(flags), warned=warned)


def _summary(args: argparse.Namespace, doc: dict[str, Any], *, reports: bool) -> None:
    """What a run or an evaluation prints: the summary table and where its files are; with
    ``--format json`` the results document alone on stdout (the summary goes nowhere)."""
    from pathlib import Path

    out = Path(args.out)
    if getattr(args, "format", "text") == "json":
        import json

        print(json.dumps(doc, indent=1, allow_nan=False))
        return
    if args.quiet:
        return
    from ._text import text_table
    from .harness.report import summary_rows

    print(text_table(*summary_rows(doc)))
    if reports:  # a run: its cells, and the HTML report beside the Markdown one
        print(f"\n{plural(doc['n_cells'], 'cell')} ({doc['n_failed']} failed); mean ± std "
              f"over seeds\nresults: {out / 'results.json'}\nreport:  {out / 'report.md'}\n"
              f"         {out / 'report.html'}")
    else:
        print(f"\nresults: {out / 'results.json'}\nreport:  {out / 'report.md'}")


def _outcome(args: argparse.Namespace, doc: dict[str, Any], *, flags: bool,
             warned: list[str]) -> int:
    """The exit code of a run or an evaluation, saying on stderr why it is not 0: failed
    cells (3, each named), then a required expectation that does not hold or is
    inconclusive (1, with its reason), then with ``--strict`` a warning or a flag (1)."""
    from pathlib import Path

    failed = [c for c in doc.get("cells", []) if c.get("status") != "ok"]
    for c in failed[:_NAMED]:
        print(f"poisonlab: cell failed: {c['key']}: {c.get('error')}", file=sys.stderr)
    if len(failed) > _NAMED:
        print(f"poisonlab: ... and {len(failed) - _NAMED} more failed cells", file=sys.stderr)
    if failed:  # said even with --quiet: those numbers are missing
        print(f"poisonlab: {len(failed)} of {doc['n_cells']} cells failed; their numbers "
              f"are missing (why: 'Failed cells' in {Path(args.out) / 'report.md'})",
              file=sys.stderr)
    failing = failing_expectations(doc)
    for line in failing:
        print(f"poisonlab: expectation: {line}", file=sys.stderr)
    if args.strict and warned:
        print(f"poisonlab: --strict: {plural(len(warned), 'warning')} (above) fail the "
              "command", file=sys.stderr)
    if failed:
        return EXIT_CELLS_FAILED
    if failing or (args.strict and (warned or flags)):
        return EXIT_REGRESSION
    return EXIT_OK


#: Failed cells named one by one before the rest are counted.
_NAMED = 10


def failing_expectations(doc: dict[str, Any]) -> list[str]:
    """One line per required expectation of a results document that does not hold or is
    inconclusive, per scope, with the reason: the gate's own judgement
    (:attr:`~poisonlab.harness.verdicts.GateResult.failing_expectations`, no baseline)."""
    from .harness.gate import check

    return [f"required claim '{r.expectation.text}' {r.verdict.value} on {r.scope}"
            + (f": {r.reason}" if r.reason else "")
            for r in check(doc, None).failing_expectations]


@contextlib.contextmanager
def noted_warnings() -> Iterator[list[str]]:
    """Inside the block every poisonlab warning shown is also noted (the list yielded):
    what ``--strict`` counts is what the user saw."""
    from .errors import PoisonlabWarning

    seen: list[str] = []
    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if issubclass(category, PoisonlabWarning):
            seen.append(str(message))
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield seen
    finally:
        warnings.showwarning = shown


def _key_values(flag: str, items: list[str]) -> dict[str, Any]:
    """``["mean=[0.5, 0.5]", "depth=28"]`` -> ``{"mean": [0.5, 0.5], "depth": 28}`` (values
    read as YAML); a malformed item or a key given twice is a ConfigError naming it."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"{flag} {item!r} is not allowed: expected KEY=VALUE with a "
                              "parameter name as KEY (e.g. 'mean=[0.5, 0.5, 0.5]')")
        if key in out:
            raise ConfigError(f"{flag} {key!r} is given twice: expected each parameter once")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            reason = str(e).splitlines()[0]
            raise ConfigError(f"{flag} {item!r}: VALUE is not YAML ({reason}): expected "
                              "e.g. 0.5, [0.5, 0.5] or true") from None
    return out


def _evaluate(args: argparse.Namespace) -> int:
    from .harness.pretrained import evaluate_pretrained
    from .harness.suite import validate_eval_batch_size, validate_n_noise, validate_suite_seed

    # The bounds a suite has too (32-bit seeds for scikit-learn, a noise set that fits in
    # memory), checked before the data and the model are loaded.
    validate_suite_seed("--seed", args.seed)
    validate_n_noise("--n-noise", args.n_noise)
    validate_eval_batch_size("--batch-size", args.batch_size)
    model_params = _key_values("--model-param", args.model_params)
    with noted_warnings() as warned:
        doc = evaluate_pretrained(args.model, args.weights, args.data, args.out,
                                  eps=args.eps, norm=args.norm, attacks=args.attacks,
                                  seed=args.seed, n_noise=args.n_noise, device=args.device,
                                  batch_size=args.batch_size, model_params=model_params)
    _summary(args, doc, reports=False)
    return _outcome(args, doc, flags=False, warned=warned)


def _gate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import ConfigError
    from .harness.gate import check, load_baseline, load_results_doc, make_baseline, write_baseline

    if args.command == "baseline":
        base = make_baseline(load_results_doc(args.results), k=args.k, floor=args.floor)
        out = write_baseline(base, args.out)
        entries = base["entries"]
        by = {b: sum(e["basis"] == b for e in entries) for b in ("spread", "floor",
                                                                  "floor-only", "fixed")}
        print(f"baseline: {len(entries)} numbers of suite {base['suite']['name']!r} "
              f"(tolerance set by the seed spread: {by['spread']}, the floor: {by['floor']}, "
              f"the floor alone, n=1: {by['floor-only']}, fixed: {by['fixed']}); "
              f"{len(base['descriptive'])} descriptive metrics and {len(base['skipped'])} "
              f"numbers without a value not gated\n-> {out}")
        return EXIT_OK

    result = check(load_results_doc(args.results), load_baseline(args.baseline),
                   fail_on_improvement=args.fail_on_improvement)
    if args.format == "json":
        import json

        print(json.dumps(result.to_dict(), indent=1, allow_nan=False))
    else:
        print(result.text(show_within=args.all))
    md = result.markdown(show_within=args.all)
    targets = [(args.summary, "w", "--summary")] if args.summary else []
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        targets.append((os.environ["GITHUB_STEP_SUMMARY"], "a", "GITHUB_STEP_SUMMARY"))
    for path, mode, what in targets:
        try:
            with Path(path).open(mode, encoding="utf-8") as f:
                f.write(md + "\n")
        except OSError as e:
            raise ConfigError(f"{what}={path!r} cannot be written: {e.strerror or e}") from None
    return EXIT_OK if result.ok else EXIT_REGRESSION
