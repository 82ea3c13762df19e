"""The ``poisonlab`` command: a thin shell over the Python API.

Exit codes (:mod:`poisonlab.commands`): 0 all good, 1 a regression or a failed
expectation (or, with ``--strict``, a warning), 2 bad input (one line on stderr, no
traceback), 3 a cell of the run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from .commands import (  # noqa: F401  (the exit codes are importable from here too)
    EXIT_BAD_INPUT,
    EXIT_CELLS_FAILED,
    EXIT_OK,
    EXIT_REGRESSION,
    _kinds,
    dispatch,
)
from .errors import PoisonlabError


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


def _add_format(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help=f"what stdout gets: text (a summary table, default) or json "
                             f"({what}, nothing else on stdout)")


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
                     help="exit 1 when a sanity check flagged a model (docs/checks.md) or "
                          "poisonlab warned (an eps out of scale with the data...), one line "
                          "each; results and reports are written first")
    _add_format(run, "the results document (as results.json)")
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
    lst.add_argument("name", nargs="?", type=_text,
                     help="one entry: its parameters with defaults, one line each")
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
    _add_format(ck, "the verdicts: status, counts, causes, every row and expectation")


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
    ev.add_argument("--strict", action="store_true",
                    help="exit 1 when poisonlab warned (an eps out of scale with the data, "
                         "bounds in other units, a model in train mode...); the results "
                         "are written first")
    _add_format(ev, "the results document (as results.json)")


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


def _one_line_warnings() -> None:
    """Show poisonlab's warnings as ``poisonlab: warning: ...`` lines (others as Python
    shows them)."""
    from .errors import PoisonlabWarning

    plain = warnings.formatwarning
    if getattr(plain, "poisonlab", False):  # main() called again in one process
        return

    def fmt(message: Any, category: type[Warning], filename: str, lineno: int,
            line: str | None = None) -> str:
        if issubclass(category, PoisonlabWarning):
            return f"poisonlab: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    fmt.poisonlab = True  # type: ignore[attr-defined]
    warnings.formatwarning = fmt  # type: ignore[assignment]


def _cwd_importable() -> None:
    """Make ``module:factory`` names find modules in the current folder, as ``python -m``
    would (a console script does not put it on sys.path). Appended, not prepended: an
    installed package of the same name still wins, and a stray ``torch.py`` in the folder
    shadows nothing."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def main(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    _one_line_warnings()
    _cwd_importable()
    with _stop_cleanly_on_signals() as got:
        try:
            args = build_parser().parse_args(argv)
            return dispatch(args)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
