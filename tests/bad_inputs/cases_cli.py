"""Flags of every ``poisonlab`` subcommand: run, validate, report, list, evaluate, baseline
and check. Usage errors (argparse) exit with code 2 and one line as well."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from poisonlab import build_model

from .cases_suite import BASE
from .harness import Case, cli_case


def _suite(tmp: Path) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def run(what: str, flags: Callable[[Path], Sequence[Any]], match: str) -> Case:
    """``poisonlab run SUITE`` with ``flags`` (a valid suite: the flags are what is bad)."""
    return cli_case("cli", f"run {what}", lambda tmp: ["run", _suite(tmp), *flags(tmp)], match)


def out(tmp: Path) -> list[Any]:
    return ["--out", tmp / "out", "--quiet"]


def _weights(tmp: Path) -> Path:
    path = tmp / "w.pt"
    torch.save(build_model("mlp", (2,), 3, seed=0).state_dict(), path)
    return path


def evaluate(what: str, flags: Sequence[str], match: str, *, model: str = "mlp",
             data: str = "blobs") -> Case:
    """``poisonlab evaluate`` of an mlp on blobs (weights that fit) with ``flags``."""
    return cli_case("cli", f"evaluate {what}", lambda tmp: [
        "evaluate", "--model", model, "--weights", _weights(tmp), "--data", data,
        "--out", tmp / "eval", "--quiet", *flags], match)


def _file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("x")
    return tmp / "a_file"


def _run_folder(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "results.sqlite").write_bytes(b"")
    return tmp / "out"


USAGE = r"\(see 'poisonlab --help'\)"

CASES = [
    # ------------------------------------------------------------------ usage
    cli_case("cli", "no subcommand", lambda tmp: [],
             r"the following arguments are required: command " + USAGE),
    cli_case("cli", "an unknown subcommand", lambda tmp: ["frobnicate"],
             r"argument command: invalid choice: 'frobnicate' \(choose from 'run'"),
    cli_case("cli", "an unknown flag", lambda tmp: ["validate", _suite(tmp), "--frob"],
             r"unrecognized arguments: --frob " + USAGE),
    cli_case("cli", "validate with two suite files",
             lambda tmp: ["validate", _suite(tmp), "extra"], r"unrecognized arguments: extra"),
    cli_case("cli", "validate ''", lambda tmp: ["validate", ""],
             r"argument suite: '' is not allowed: expected a non-empty path"),
    cli_case("cli", "list with an unknown kind", lambda tmp: ["list", "attack"],
             r"argument kind: invalid choice: 'attack' \(choose from 'attacks'"),
    # ------------------------------------------------------------------ run
    cli_case("cli", "run without --out", lambda tmp: ["run", _suite(tmp)],
             r"the following arguments are required: --out"),
    run("--out '' (an unset variable)", lambda tmp: ["--out", ""],
        r"argument --out: '' is not allowed: expected a non-empty path"),
    run("--workers 0", lambda tmp: [*out(tmp), "--workers", "0"],
        r"workers=0 is not allowed: expected a value in \[1, inf\)"),
    run("--workers -1", lambda tmp: [*out(tmp), "--workers", "-1"],
        r"workers=-1 is not allowed: expected a value in \[1, inf\)"),
    run("--workers abc", lambda tmp: [*out(tmp), "--workers", "abc"],
        r"argument --workers: invalid int value: 'abc'"),
    run("--workers 1.5", lambda tmp: [*out(tmp), "--workers", "1.5"],
        r"argument --workers: invalid int value: '1\.5'"),
    run("--batch-size 0", lambda tmp: [*out(tmp), "--batch-size", "0"],
        r"--batch-size=0 is not allowed: expected a value in \[1, inf\)"),
    run("--batch-size all", lambda tmp: [*out(tmp), "--batch-size", "all"],
        r"argument --batch-size: invalid int value: 'all'"),
    run("--device foo", lambda tmp: [*out(tmp), "--device", "foo"],
        r"device='foo' is not allowed: expected 'cpu', 'cuda', 'cuda:N' or 'auto'"),
    run("--device cuda:-1", lambda tmp: [*out(tmp), "--device", "cuda:-1"],
        r"device='cuda:-1' is not allowed"),
    run("--device meta", lambda tmp: [*out(tmp), "--device", "meta"],
        r"device='meta' is not allowed"),
    run("--device cuda:99", lambda tmp: [*out(tmp), "--device", "cuda:99"],
        r"device='cuda:99' is not available"),
    run("--executor dask (unknown)", lambda tmp: [*out(tmp), "--executor", "dask"],
        r"argument --executor: invalid choice: 'dask' \(choose from 'local', 'ray'\)"),
    run("--address with --executor local", lambda tmp: [*out(tmp), "--address",
                                                         "1.2.3.4:6379"],
        r"--address='1\.2\.3\.4:6379' is not allowed with --executor local"),
    run("--address malformed (::::)", lambda tmp: [*out(tmp), "--executor", "ray",
                                                   "--address", "::::"],
        r"--address='::::' is not allowed: expected 'auto', 'HOST:PORT' or "
        r"'ray://HOST:PORT'"),
    run("--address ''", lambda tmp: [*out(tmp), "--executor", "ray", "--address", ""],
        r"--address='' is not allowed"),
    run("--out that is a file", lambda tmp: ["--out", _file(tmp)],
        r"--out='.*/a_file' is a file: expected a directory"),
    run("--out under a file", lambda tmp: ["--out", _file(tmp) / "sub"],
        r"--out='.*/a_file/sub' cannot be created: Not a directory"),
    run("--out holding a run, without --resume", lambda tmp: ["--out", _run_folder(tmp)],
        r"--out='.*/out' already holds a run \(results\.sqlite\): pass --resume"),
    cli_case("cli", "run a suite file that does not exist",
             lambda tmp: ["run", tmp / "nope.yaml", *out(tmp)],
             r"suite file '.*/nope\.yaml' does not exist"),
    # ------------------------------------------------------------------ report
    cli_case("cli", "report on a folder without a run", lambda tmp: ["report", tmp],
             r"run_dir='.*' holds no results\.sqlite: expected a folder written by "
             r"'poisonlab run'"),
    cli_case("cli", "report on a folder that does not exist",
             lambda tmp: ["report", tmp / "nope"], r"run_dir='.*/nope' holds no results"),
    cli_case("cli", "report on a file", lambda tmp: ["report", _file(tmp)],
             r"run_dir='.*/a_file' holds no results\.sqlite"),
    # ------------------------------------------------------------------ evaluate
    cli_case("cli", "evaluate without --weights",
             lambda tmp: ["evaluate", "--model", "mlp", "--data", "blobs", "--out", tmp],
             r"the following arguments are required: --weights"),
    evaluate("--eps -0.1", ["--eps", "-0.1"],
             r"eps=-0\.1 is not allowed: expected a value in \[0, inf\)"),
    evaluate("--eps nan", ["--eps", "nan"], r"eps=nan is not allowed: expected a finite number"),
    evaluate("--eps inf", ["--eps", "inf"], r"eps=inf is not allowed: expected a finite number"),
    evaluate("--eps abc", ["--eps", "abc"], r"argument --eps: invalid float value: 'abc'"),
    evaluate("--eps with no value", ["--eps"], r"argument --eps: expected at least one "
             r"argument"),
    evaluate("--n-noise 0", ["--n-noise", "0"],
             r"--n-noise=0 is not allowed: expected a value in \[10, inf\)"),
    evaluate("--n-noise 10**30", ["--n-noise", str(10**30)],
             r"--n-noise=10{30} is not allowed: expected an integer in \[10, 100000\]"),
    evaluate("--batch-size 0", ["--batch-size", "0"],
             r"--batch-size=0 is not allowed: expected a value in \[1, inf\)"),
    evaluate("--batch-size -1", ["--batch-size", "-1"],
             r"--batch-size=-1 is not allowed: expected a value in \[1, inf\)"),
    evaluate("--batch-size 1.5", ["--batch-size", "1.5"],
             r"argument --batch-size: invalid int value: '1\.5'"),
    evaluate("--seed -1", ["--seed", "-1"], r"seed=-1 is not allowed"),
    evaluate("--seed 2**32", ["--seed", str(2**32)],
             r"--seed=4294967296 is not allowed: expected an integer in \[0, 2\*\*32 - 1\]"),
    evaluate("--attacks unknown", ["--eps", "0.1", "--attacks", "pgdd"],
             r"attack='pgdd' is not known.*did you mean 'pgd'"),
    evaluate("--attacks transfer (needs a surrogate)", ["--eps", "0.1", "--attacks",
                                                        "transfer"],
             r"a transfer attack with a surrogate to train is not available for a pretrained "
             r"model"),
    evaluate("--norm l3", ["--norm", "l3"],
             r"argument --norm: invalid choice: 'l3' \(choose from 'linf', 'l2'\)"),
    evaluate("--device foo", ["--device", "foo"], r"device='foo' is not allowed"),
    evaluate("--model unknown", [], r"model='mlpp' is not known.*did you mean 'mlp'",
             model="mlpp"),
    evaluate("--model ''", [], r"argument --model: '' is not allowed", model=""),
    evaluate("--data unknown", [], r"dataset='digitz' is not known.*did you mean 'digits'",
             data="digitz"),
    evaluate("--data an .npz that does not exist", [],
             r"path='nope\.npz' does not exist: expected an \.npz file", data="nope.npz"),
    evaluate("--data a module that cannot be imported", [],
             r"dataset='nosuchmod:load' is not known: module 'nosuchmod' cannot be imported",
             data="nosuchmod:load"),
    cli_case("cli", "evaluate --out that is a file", lambda tmp: [
        "evaluate", "--model", "mlp", "--weights", _weights(tmp), "--data", "blobs",
        "--out", _file(tmp)], r"--out='.*/a_file' is a file: expected a directory"),
    # ------------------------------------------------------------------ baseline, check
    cli_case("cli", "baseline without --out", lambda tmp: ["baseline", tmp / "r.json"],
             r"the following arguments are required: --out"),
    cli_case("cli", "baseline --k abc", lambda tmp: ["baseline", tmp / "r.json", "--out",
                                                     tmp / "b.json", "--k", "abc"],
             r"argument --k: invalid float value: 'abc'"),
    cli_case("cli", "baseline of a results file that does not exist",
             lambda tmp: ["baseline", tmp / "nope.json", "--out", tmp / "b.json"],
             r"results='.*/nope\.json' does not exist: expected a JSON file"),
    cli_case("cli", "baseline of a folder without results.json",
             lambda tmp: ["baseline", tmp, "--out", tmp / "b.json"],
             r"results='.*/results\.json' does not exist: expected a JSON file"),
    cli_case("cli", "check without --baseline", lambda tmp: ["check", tmp / "r.json"],
             r"the following arguments are required: --baseline"),
    cli_case("cli", "check --baseline ''", lambda tmp: ["check", tmp / "r.json",
                                                        "--baseline", ""],
             r"argument --baseline: '' is not allowed"),
    cli_case("cli", "check of a results file that does not exist",
             lambda tmp: ["check", tmp / "nope.json", "--baseline", tmp / "b.json"],
             r"results='.*/nope\.json' does not exist"),
]
