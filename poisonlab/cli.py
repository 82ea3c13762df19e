"""The ``poisonlab`` command: a thin shell over the Python API.

Exit codes: 0 ok, 1 a regression or failed expectation, 2 bad input (one line on stderr,
no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from .errors import ConfigError, PoisonlabError

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"poisonlab: error: {message} (see 'poisonlab --help')\n")


def _text(value: str) -> str:
    """An argparse type for paths and names: an empty string (an unset shell variable,
    ``--out "$OUT"``) is refused, not read as the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not allowed: expected a non-empty "
                                         "path or name")
    return value


def _kinds() -> dict[str, object]:
    from .attacks import attacks
    from .data import datasets
    from .defenses import defenses
    from .harness.executors import executors
    from .models import models
    from .sanity import checks

    return {"attacks": attacks, "defenses": defenses, "datasets": datasets,
            "models": models, "executors": executors, "checks": checks}


def build_parser() -> argparse.ArgumentParser:
    from .harness.executors import executors

    p = _Parser(prog="poisonlab", description="Security evaluations of classifiers.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"poisonlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a suite and write results.json and reports")
    run.add_argument("suite", type=_text, help="suite YAML file")
    run.add_argument("--out", required=True, type=_text,
                     help="run folder (created if missing)")
    run.add_argument("--executor", default="local", choices=executors.names(),
                     help="where cells run: local (this machine) or ray (Ray tasks; needs "
                          "the ray extra) (default: local)")
    run.add_argument("--address", default=None, metavar="ADDR",
                     help="with --executor ray: the Ray cluster to join (auto, HOST:PORT, "
                          "ray://HOST:PORT); default: start a Ray instance on this machine")
    run.add_argument("--device", default="cpu", metavar="DEV",
                     help="where models train and are attacked: cpu, cuda, cuda:N or auto "
                          "(cuda when available) (default: cpu)")
    run.add_argument("--resume", action="store_true",
                     help="skip the cells already stored in --out and finish the run")
    run.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="cells evaluated side by side, >= 1: processes with local "
                          "(default 1), tasks in flight with ray (default: the cluster's "
                          "CPUs); the numbers do not depend on it")
    run.add_argument("--strict", action="store_true",
                     help="exit 1 when a sanity check flagged a model (docs/checks.md), one "
                          "line per flag; results and reports are written first")
    run.add_argument("--batch-size", type=int, default=None, metavar="N",
                     help="test inputs per forward pass of the evaluation, >= 1: overrides "
                          "the suite's batch_size: (default: the suite's, 256 when absent), "
                          "not an attack's own; memory and speed only, never a number "
                          "(docs/batching.md)")

    val = sub.add_parser("validate", help="check a suite without running it")
    val.add_argument("suite", type=_text)

    rep = sub.add_parser("report", help="regenerate results.json and reports from a run folder")
    rep.add_argument("run_dir", type=_text)

    lst = sub.add_parser("list", help="list registered names")
    lst.add_argument("kind", nargs="?", choices=sorted(_kinds()),
                     help="which registry (default: all)")
    _add_evaluate(sub)
    _add_gate(sub)
    return p


def _add_gate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .harness.gate import DEFAULT_K

    bl = sub.add_parser("baseline", help="make a regression baseline from a run's results "
                                         "(see docs/regression.md)")
    bl.add_argument("results", type=_text, help="results.json, or the run folder holding it")
    bl.add_argument("--out", required=True, type=_text, help="baseline file to write (JSON)")
    bl.add_argument("--k", type=float, default=DEFAULT_K,
                    help="standard errors of the difference a number may move, > 0 "
                         f"(default: {DEFAULT_K:g})")
    bl.add_argument("--floor", type=float, default=None,
                    help="one absolute floor for every metric, >= 0 (default: per metric, "
                         "see docs/regression.md)")

    ck = sub.add_parser("check", help="compare a run's results with a baseline: exit 1 if "
                                      "a number regressed or is missing")
    ck.add_argument("results", type=_text, help="results.json, or the run folder holding it")
    ck.add_argument("--baseline", required=True, type=_text,
                    help="baseline file ('poisonlab baseline')")
    ck.add_argument("--fail-on-improvement", action="store_true",
                    help="also fail when a number improved beyond its tolerance (forces "
                         "a baseline refresh)")
    ck.add_argument("--summary", metavar="FILE", type=_text,
                    help="also write the report as Markdown to FILE (the report is "
                         "appended to $GITHUB_STEP_SUMMARY when that is set)")
    ck.add_argument("--all", action="store_true",
                    help="list the numbers within tolerance too")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .batching import DEFAULT_BATCH_SIZE
    from .threat import Norm

    ev = sub.add_parser("evaluate", help="evaluate a trained model (your own) without "
                                         "training: accuracy, calibration, evasion, noise")
    ev.add_argument("--model", required=True, type=_text,
                    help="package.module:factory (called with input_shape=, n_classes=) or "
                         "a registered architecture")
    ev.add_argument("--model-param", action="append", default=[], type=_text,
                    metavar="KEY=VALUE", dest="model_params",
                    help="an architecture parameter, VALUE read as YAML (repeatable), e.g. "
                         "--model-param 'mean=[0.4914, 0.4822, 0.4465]'")
    ev.add_argument("--weights", required=True, type=_text,
                    help="state_dict file, loaded with torch.load(weights_only=True)")
    ev.add_argument("--data", required=True, type=_text,
                    help="an .npz file (x_train, y_train, x_test, y_test); a folder (or "
                         "prefix) of .npy files (x_test.npy, y_test.npy, optional "
                         "x_train.npy...), memory-mapped; an image folder (train/ and test/, "
                         "or class sub-folders directly: the test set); "
                         "package.module:function or a registered dataset")
    ev.add_argument("--eps", type=float, nargs="+", default=[],
                    help="evasion budgets (default: none, no evasion metrics)")
    ev.add_argument("--norm", default=Norm.LINF.value, choices=[n.value for n in Norm],
                    help="perturbation norm (default: linf)")
    ev.add_argument("--attacks", nargs="+", default=["pgd"],
                    help="attack names, see 'poisonlab list attacks' (default: pgd)")
    ev.add_argument("--seed", type=int, default=0, help="seed of split, attacks, noise")
    ev.add_argument("--n-noise", type=int, default=1000,
                    help="noise inputs for the off-manifold metrics (default: 1000)")
    ev.add_argument("--device", default="cpu", metavar="DEV",
                    help="where the model is attacked and measured: cpu, cuda, cuda:N or "
                         "auto (default: cpu)")
    ev.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                    help="test inputs per forward pass of every attack, metric and check, "
                         f">= 1 (default: {DEFAULT_BATCH_SIZE}); memory and speed only, "
                         "never a number (docs/batching.md)")
    ev.add_argument("--out", required=True, type=_text,
                    help="output folder (created if missing)")
    ev.add_argument("--quiet", action="store_true", help="no summary")


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP, as Ctrl-C raises KeyboardInterrupt:
    the same clean stop (workers stopped, finished cells kept, nothing half-written)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_cleanly_on_signals() -> Iterator[list[int]]:
    """Turn SIGINT, SIGTERM and SIGHUP into an exception in the main thread, once.

    Yields a list that receives the signal's number. A second signal while the first one
    is being handled (workers being stopped) is ignored, so the cleanup is not cut short;
    SIGKILL still ends the process at once. Outside the main thread nothing changes.
    """
    got: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if got:
            return
        got.append(signum)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)

    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = {n: signal.signal(getattr(signal, n), handler) for n in names}
    try:
        yield got
    finally:
        for n, h in previous.items():
            signal.signal(getattr(signal, n), h)


def _interrupted_line(args: argparse.Namespace | None, signum: int) -> str:
    """What an interrupted command says: which signal, what is kept, how to finish."""
    name = signal.Signals(signum).name
    if args is None or args.command != "run":
        # evaluate and report write each file whole at the end, or not at all
        return f"poisonlab: interrupted by {name}: no file was left half-written"
    from pathlib import Path
    from shlex import quote

    from .harness.store import count_cells

    stored = count_cells(Path(args.out))
    again = (f"poisonlab run {quote(args.suite)} --out {quote(args.out)} --resume"
             + (f" --executor {args.executor}" if args.executor != "local" else ""))
    kept = (f"{stored} finished cell{'s' * (stored != 1)} kept in "
            f"{Path(args.out) / 'results.sqlite'}" if stored else "no cell had finished")
    return (f"poisonlab: interrupted by {name}: {kept}; finish the run and write its "
            f"results.json and reports with: {again}")


def main(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    with _stop_cleanly_on_signals() as got:
        try:
            args = build_parser().parse_args(argv)
            return _dispatch(args)
        except PoisonlabError as e:
            print(f"poisonlab: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt as e:
            signum = got[0] if got else (
                e.signum if isinstance(e, Interrupted) else int(signal.SIGINT))
            print(_interrupted_line(args, signum), file=sys.stderr)
            return 128 + signum
        except BrokenPipeError:
            # The reader went away (``poisonlab list | head``): stop quietly, and keep
            # Python from reporting the failed flush of stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _dispatch(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "list": _list, "evaluate": _evaluate, "baseline": _gate, "check": _gate,
        "validate": _validate, "report": _report, "run": _run}
    return handlers[args.command](args)


def _list(args: argparse.Namespace) -> int:
    kinds = _kinds()
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


def _validate(args: argparse.Namespace) -> int:
    from .harness import load_suite
    from .harness.suite import validate_suite_data

    suite = load_suite(args.suite)
    validate_suite_data(suite)
    n = sum(1 for _ in suite.cells())
    print(f"{args.suite}: ok ({n} cells: {len(suite.datasets)} datasets x "
          f"{len(suite.models)} models x {len(suite.defenses)} defenses x "
          f"{len(suite.poisoning) + 1} poisoning settings x {len(suite.seeds)} seeds)")
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
    from pathlib import Path

    from ._text import text_table
    from .harness import load_suite
    from .harness.report import summary_rows
    from .harness.runner import run_suite
    from .sanity import SanityFailure

    suite = load_suite(args.suite)
    if args.batch_size is not None:
        import dataclasses

        from .harness.suite import validate_eval_batch_size

        suite = dataclasses.replace(
            suite, batch_size=validate_eval_batch_size("--batch-size", args.batch_size))
    flags: list[str] = []
    try:
        doc = run_suite(suite, args.out, executor=args.executor, resume=args.resume,
                        progress=not args.quiet, workers=args.workers, strict=args.strict,
                        device=args.device, address=args.address)
    except SanityFailure as e:
        doc, flags = dict(e.doc), e.lines
    if not args.quiet:
        headers, rows = summary_rows(doc)
        print(text_table(headers, rows))
        print(f"\n{doc['n_cells']} cells ({doc['n_failed']} failed); mean ± std over seeds")
        out = Path(args.out)
        print(f"results: {out / 'results.json'}\nreport:  {out / 'report.md'}\n"
              f"         {out / 'report.html'}")
    if doc["n_failed"]:  # said even with --quiet: those numbers are missing
        print(f"poisonlab: {doc['n_failed']} of {doc['n_cells']} cells failed; their numbers "
              f"are missing (why: 'Failed cells' in {Path(args.out) / 'report.md'})",
              file=sys.stderr)
    for line in flags:
        print(f"poisonlab: sanity check: {line}", file=sys.stderr)
    return EXIT_REGRESSION if flags else EXIT_OK

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
    from pathlib import Path

    from ._text import text_table
    from .harness.pretrained import evaluate_pretrained
    from .harness.report import summary_rows
    from .harness.suite import validate_eval_batch_size, validate_n_noise, validate_suite_seed

    # The bounds a suite has too (32-bit seeds for scikit-learn, a noise set that fits in
    # memory), checked before the data and the model are loaded.
    validate_suite_seed("--seed", args.seed)
    validate_n_noise("--n-noise", args.n_noise)
    validate_eval_batch_size("--batch-size", args.batch_size)
    model_params = _key_values("--model-param", args.model_params)
    doc = evaluate_pretrained(args.model, args.weights, args.data, args.out, eps=args.eps,
                              norm=args.norm, attacks=args.attacks, seed=args.seed,
                              n_noise=args.n_noise, device=args.device,
                              batch_size=args.batch_size, model_params=model_params)
    if not args.quiet:
        headers, rows = summary_rows(doc)
        print(text_table(headers, rows))
        out = Path(args.out)
        print(f"\nresults: {out / 'results.json'}\nreport:  {out / 'report.md'}")
    return EXIT_OK


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
