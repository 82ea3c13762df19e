"""Scale: PGD and a security curve on CIFAR-shaped inputs as n grows, at a fixed batch size.

::

    .venv/bin/python -m benchmarks.perf.scale                  # cnn and resnet18, n 512/2048/8192
    .venv/bin/python -m benchmarks.perf.scale --quick          # smoke run, about a minute
    .venv/bin/python -m benchmarks.perf.scale --models cnn --sizes 512 8192 --json scale.json
    make bench-scale                                           # the first line

Inputs are synthetic and CIFAR-shaped: ``n`` images of 3x32x32 drawn uniformly in [0, 1]
from a seeded generator, 10 classes, labelled with the model's own predictions (so every
point starts correctly classified and the attacks have real work at every eps). The models
are poisonlab's built-in ``cnn`` and ``resnet18`` (CIFAR stem, 11.2M parameters) with their
seeded initialisation; nothing is trained, since speed and memory do not depend on the
weights.

Two tasks, each by two sides:

1. ``pgd``: linf PGD at eps 8/255, ``steps`` steps of 2.5 * eps / steps, one uniform random
   start, summed cross-entropy, no early stop.
2. ``curve``: a security curve over eps 2, 4, 8 and 16 (/255) with the same PGD: each eps
   attacks only the points still robust at the smaller ones.

``ours`` is :class:`poisonlab.PGD` / :func:`poisonlab.security_curve` with
``batch_size=256`` and ``keep_adv=False``; ``plain`` is a bare torch loop written below
that attacks the same points 256 at a time, draws each sample's random start from the same
per-sample stream, predicts on the clean and the adversarial inputs (what an attack's result
holds; a curve predicts on the clean inputs once) and keeps only the per-sample outcomes.
Both must give the same robust
accuracies (the script checks).

Every (model, task, n) runs in its own subprocess, where the two sides alternate in rounds
ours, plain / plain, ours / ours, plain ... (``REPEATS`` runs each; the fastest run of a
side counts), so that a slow spell of the shared machine falls on both sides alike. Before
each run the process's peak-RSS mark is reset (``/proc/self/clear_refs``, Linux) and read
back afterwards (``VmHWM``), so each side's peak resident memory is its own; the inputs
themselves (n * 12 KiB) are part of it and printed separately. Where the reset is not
available the peak is ``ru_maxrss`` since the process started (the larger of the two sides)
and the output says so.

Acceptance lines (exit code 1 on a FAIL unless ``--quick``): for each model and task, ours'
peak RSS at the largest n within 1.3x of that at the smallest n, and ours' wall time within
1.05x of the plain loop's at every n.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from poisonlab import PGD, EvasionThreat, build_model, security_curve
from poisonlab.attacks.evasion import child_seeds

from ._machine import ROOT, describe_machine
from ._reference import plain_pgd_chunk

SHAPE = (3, 32, 32)
N_CLASSES = 10
EPS = 8 / 255
CURVE_EPS = (2 / 255, 4 / 255, 8 / 255, 16 / 255)
BOUNDS = (0.0, 1.0)
BATCH = 256
SEED = 0
SIZES = (512, 2048, 8192)
MODELS = ("cnn", "resnet18")
#: PGD steps per model: resnet18 on 2 CPU cores takes ~0.03 s per image and step.
STEPS = {"cnn": 10, "resnet18": 1}
#: Timed runs per side, alternating with the other side (the fastest counts): two shared
#: cores are noisy at the 10% level, more than the 5% bar.
REPEATS = {"cnn": 3, "resnet18": 2}
TASKS = ("pgd", "curve")
SIDES = ("ours", "plain")

MAX_RSS_RATIO = 1.3
MAX_OURS_OVER_PLAIN = 1.05


# --------------------------------------------------------------------------- one run


def make_inputs(model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uniform CIFAR-shaped images and the model's own labels (made in batches)."""
    x = torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        y = torch.cat([model(x[i:i + BATCH]).argmax(1) for i in range(0, n, BATCH)])
    return x, y


def plain_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, *,
                 eps: float, steps: int, seed: int, clean: bool) -> torch.Tensor:
    """Bare linf PGD on ``x[ids]`` in chunks of ``BATCH``; True where the label changed.

    With ``clean``, each chunk's clean predictions are made too (what an attack's result
    holds next to the adversarial ones: success counts need them); a security curve makes
    them once for all eps and passes ``clean=False``.
    """
    fooled = torch.zeros(len(ids), dtype=torch.bool)
    pred_clean = torch.zeros(len(ids), dtype=torch.long)
    stepsize = 2.5 * eps / steps
    for start in range(0, len(ids), BATCH):
        ix = ids[start:start + BATCH]
        xc, yc = x[ix], y[ix]
        x_adv = plain_pgd_chunk(model, xc, yc, ix, eps=eps, steps=steps, stepsize=stepsize,
                                seed=seed, bounds=BOUNDS)
        with torch.no_grad():
            fooled[start:start + len(ix)] = model(x_adv).argmax(1) != yc
            if clean:
                pred_clean[start:start + len(ix)] = model(xc).argmax(1)
    return fooled


def plain_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """The security curve as a bare loop: each eps attacks the points still robust."""
    seeds = child_seeds(SEED, len(CURVE_EPS))
    with torch.no_grad():
        fooled = torch.cat([model(x[i:i + BATCH]).argmax(1) for i in range(0, len(y), BATCH)]) != y
    out = []
    for eps, seed in zip(CURVE_EPS, seeds, strict=True):  # CURVE_EPS is increasing
        todo = torch.nonzero(~fooled).flatten()
        fooled[todo] = plain_attack(model, x, y, todo, eps=eps, steps=steps, seed=seed,
                                    clean=False)
        out.append(1.0 - float(fooled.float().mean()))
    return out


def ours_pgd(steps: int) -> PGD:
    return PGD(steps=steps, rel_stepsize=2.5 / steps, restarts=1, loss="ce", random_start=True,
               early_stop=False)


def run_side(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, side: str,
             steps: int) -> list[float]:
    """One side of one task, timed by the caller; its robust accuracy per eps."""
    n = len(y)
    if task == "pgd" and side == "ours":
        res = ours_pgd(steps)(model, x, y, threat=EvasionThreat(eps=EPS, bounds=BOUNDS),
                              seed=SEED, batch_size=BATCH, keep_adv=False)
        return [res.robust_accuracy]
    if task == "pgd":
        fooled = plain_attack(model, x, y, torch.arange(n), eps=EPS, steps=steps, seed=SEED,
                              clean=True)
        return [1.0 - float(fooled.float().mean())]
    if side == "ours":
        threats = [EvasionThreat(eps=e, bounds=BOUNDS) for e in CURVE_EPS]
        results = security_curve(ours_pgd(steps), model, x, y, threats=threats, seed=SEED,
                                 batch_size=BATCH, keep_adv=False)
        return [r.robust_accuracy for r in results]
    return plain_curve(model, x, y, steps)


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(reset: bool) -> float:
    """Peak RSS since the last reset (``VmHWM``), or since the start (``ru_maxrss``)."""
    if reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side_order(rounds: int) -> list[str]:
    """ours, plain, plain, ours, ours, plain, ...: each side first in every other round."""
    return [s for r in range(rounds) for s in (SIDES if r % 2 == 0 else SIDES[::-1])]


def run_one(model_name: str, n: int, task: str, threads: int,
            repeats: int | None = None) -> list[dict[str, Any]]:
    """Build the model and inputs, run both sides of one task alternately, measure each.

    ``repeats`` rounds per side (default ``REPEATS[model_name]``); the fastest counts.
    """
    torch.set_num_threads(threads)
    model = build_model(model_name, SHAPE, N_CLASSES, seed=SEED).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = make_inputs(model, n)
    steps = STEPS[model_name]
    setup_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times: dict[str, list[float]] = {s: [] for s in SIDES}
    peaks: dict[str, float] = dict.fromkeys(SIDES, 0.0)
    robust: dict[str, list[float]] = {}
    per_run = True
    for side in side_order(repeats or REPEATS[model_name]):
        gc.collect()
        per_run = reset_peak_rss() and per_run
        t0 = time.perf_counter()
        ra = run_side(model, x, y, task, side, steps)
        times[side].append(time.perf_counter() - t0)
        peaks[side] = max(peaks[side], peak_rss_mib(per_run))
        if robust.setdefault(side, ra) != ra:
            raise RuntimeError(f"{model_name} {task} n={n} {side}: robust accuracy {ra} "
                               f"differs from the first run's {robust[side]}")
    rows = []
    for side in SIDES:
        wall = min(times[side])
        rows.append({"model": model_name, "n": n, "task": task, "side": side, "steps": steps,
                     "wall_s": wall, "times_s": times[side], "samples_per_s": n / wall,
                     "robust_accuracy": robust[side], "peak_rss_mib": peaks[side],
                     "peak_rss_per_run": per_run, "setup_rss_mib": setup_rss,
                     "inputs_mib": x.numel() * 4 / 2**20})
    return rows


def run_child(model_name: str, n: int, task: str, threads: int,
              repeats: int | None = None) -> list[dict[str, Any]]:
    """:func:`run_one` in a fresh interpreter, so that no earlier run's memory counts."""
    cmd = [sys.executable, "-m", "benchmarks.perf.scale", "--child", model_name, str(n), task,
           "--threads", str(threads)] + (["--repeats", str(repeats)] if repeats else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- report


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per (model, task, n), ours next to plain."""
    by = {(r["model"], r["task"], r["n"], r["side"]): r for r in rows}
    lines = ["| model | task | n | ours s | plain s | ours/plain | ours samples/s | "
             "ours peak RSS MiB | plain peak RSS MiB | inputs MiB | robust acc (ours = plain) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (model, task, n, side), o in by.items():
        if side != "ours" or (model, task, n, "plain") not in by:
            continue
        p = by[(model, task, n, "plain")]
        same = "yes" if o["robust_accuracy"] == p["robust_accuracy"] else "NO"
        ra = "/".join(f"{v:.3f}" for v in o["robust_accuracy"])
        lines.append(f"| {model} ({o['steps']} steps) | {task} | {n} | {o['wall_s']:.1f} | "
                     f"{p['wall_s']:.1f} | {o['wall_s'] / p['wall_s']:.3f} | "
                     f"{o['samples_per_s']:.0f} | {o['peak_rss_mib']:.0f} | "
                     f"{p['peak_rss_mib']:.0f} | {o['inputs_mib']:.0f} | {ra} ({same}) |")
    return "\n".join(lines)


def acceptance(rows: list[dict[str, Any]]) -> list[tuple[bool, str]]:
    """The PASS/FAIL lines: RSS flat in n, ours as fast as the loop, the same numbers."""
    by = {(r["model"], r["task"], r["n"], r["side"]): r for r in rows}
    lines = []
    for model, task in sorted({(r["model"], r["task"]) for r in rows}):
        sizes = sorted(n for (m, t, n, s) in by if (m, t, s) == (model, task, "ours"))
        lo, hi = by[(model, task, sizes[0], "ours")], by[(model, task, sizes[-1], "ours")]
        ratio = hi["peak_rss_mib"] / lo["peak_rss_mib"]
        lines.append((ratio <= MAX_RSS_RATIO,
                      f"{model} {task}: peak RSS n={sizes[-1]} / n={sizes[0]} = {ratio:.2f} "
                      f"(<= {MAX_RSS_RATIO})"))
        for n in sizes:
            p = by.get((model, task, n, "plain"))
            if p is None:
                continue
            o = by[(model, task, n, "ours")]
            r = o["wall_s"] / p["wall_s"]
            lines.append((r <= MAX_OURS_OVER_PLAIN,
                          f"{model} {task} n={n}: ours/plain wall time {r:.3f} "
                          f"(<= {MAX_OURS_OVER_PLAIN})"))
            lines.append((o["robust_accuracy"] == p["robust_accuracy"],
                          f"{model} {task} n={n}: robust accuracy ours == plain"))
    return lines


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.perf.scale",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="cnn only, n 256 and 512: a smoke run; acceptance not enforced")
    ap.add_argument("--repeats", type=int, metavar="R",
                    help="rounds per side and cell (default: cnn 3, resnet18 2)")
    ap.add_argument("--json", metavar="OUT", help="write every number and the machine here")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "N", "TASK"),
                    help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        model, n, task = args.child
        print(json.dumps(run_one(model, int(n), task, args.threads, args.repeats)))
        return 0
    if args.quick:
        args.models, args.sizes = ["cnn"], [256, 512]
    mach = describe_machine(args.threads)
    print(f"scale benchmark  {mach['date']}  {mach['cpu_model']} ({mach['cpus_usable']} usable "
          f"cores), torch {mach['torch']}, {args.threads} threads, batch_size {BATCH}")
    jobs = [(m, n, t) for m in args.models for t in args.tasks for n in sorted(args.sizes)]
    rows = []
    for job in tqdm(jobs, desc="scale", unit="cell"):
        rows.extend(run_child(*job, threads=args.threads, repeats=args.repeats))
    print(table(rows))
    if not all(r["peak_rss_per_run"] for r in rows):
        print("note: no /proc/self/clear_refs here: peak RSS is the larger of both sides'")
    checks = acceptance(rows)
    for ok, line in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": mach, "batch_size": BATCH, "runs": rows,
                       "acceptance": [{"pass": ok, "line": line} for ok, line in checks]},
                      f, indent=2)
    return 0 if args.quick or all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
