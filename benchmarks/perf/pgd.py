"""PGD speed: poisonlab's PGD against a plain torch loop, foolbox and ART, on the same work.

::

    .venv/bin/python -m benchmarks.perf.pgd                         # 5 runs, 1000 images, suite
    .venv/bin/python -m benchmarks.perf.pgd --runs 5 --no-suite     # the attacks only
    .venv/bin/python -m benchmarks.perf.pgd --quick                 # smoke run, under a minute
    .venv/bin/python -m benchmarks.perf.pgd --json perf.json        # all numbers + the machine

One model (poisonlab's ``cnn`` trained briefly on ``mnist5k``) and one set of test images,
attacked by every side:

1. single-eps PGD (linf eps=0.1, 40 steps of 0.1*eps, one uniform random start, summed
   cross-entropy, untargeted, no early stop), by ``plain`` (a bare torch loop written
   below: the reference), ``ours`` (:class:`poisonlab.PGD`), ``foolbox`` (``LinfPGD``)
   and ``art`` (``ProjectedGradientDescent``);
2. a security curve over eps 0.05, 0.1, 0.2, 0.3, by ``ours``
   (:func:`poisonlab.security_curve` with early stop), ``foolbox`` (one call with all four
   eps) and ``art`` (one call per eps);
3. the wall time of ``poisonlab run benchmarks/suites/quickstart.yaml`` (a subprocess).

Timing is interleaved: one untimed warm-up of every side, then ``runs`` rounds, each
timing every side once in an order rotated by one per round, so that a slow spell of the
machine hits every side alike. Each side's timed region runs from the input tensors to its
robust accuracy. The warm-up also audits each side's work (forward passes counted by a
hook on the model's first layer, whether parameter gradients were computed) and checks
each side's adversarial inputs: inside the eps-ball and the bounds, and robust accuracy
recomputed from them with the bare model.

Acceptance lines (PASS/FAIL; exit code 1 on any FAIL unless ``--quick``): ours/plain <= 1.05
(single eps), curve speedup >= 2 over foolbox and >= 2.5 over ART, and ours' robust
accuracy <= foolbox's and ART's at every eps of the curve.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import art
import foolbox as fb
import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)
from art.estimators.classification import PyTorchClassifier
from torch import nn
from tqdm.auto import tqdm

from poisonlab import PGD, EvasionThreat, build_model, load_dataset, security_curve, train
from poisonlab.batching import DEFAULT_BATCH_SIZE

from ._machine import describe_machine
from ._reference import plain_pgd_chunk

#: The plain loop's chunk: the attack template's default batch size, like for like.
CHUNK = DEFAULT_BATCH_SIZE

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suites" / "quickstart.yaml"

DATASET = "mnist5k"
MODEL = "cnn"
SEED = 0
EPS = 0.1
CURVE_EPS = (0.05, 0.1, 0.2, 0.3)
STEPS = 40
REL_STEPSIZE = 0.1

FULL = {"n": 1000, "runs": 5, "epochs": 3}
QUICK = {"n": 24, "runs": 2, "epochs": 1}

#: Acceptance thresholds.
MAX_OURS_OVER_PLAIN = 1.05
MIN_CURVE_SPEEDUP_FOOLBOX = 2.0
MIN_CURVE_SPEEDUP_ART = 2.5

SINGLE_SIDES = ("plain", "ours", "foolbox", "art")
CURVE_SIDES = ("ours", "foolbox", "art")


# --------------------------------------------------------------------------- records


@dataclass
class Outcome:
    """What one call of a side produced.

    ``robust_accuracy`` and ``x_adv`` hold one entry per eps (one for single-eps PGD);
    ``gradients`` is the number of per-sample input gradients the side took.
    """

    robust_accuracy: list[float]
    gradients: int
    x_adv: list[torch.Tensor] = field(repr=False)


@dataclass
class Audit:
    """The work one call did, seen from the model: forward passes and parameter gradients.

    ``forward_samples`` counts every input row through the model's first layer, gradient
    steps included; ``param_grads`` is True when the call left ``.grad`` on a parameter
    (its backward pass also computed the weight gradients, which PGD does not need).
    """

    forward_calls: int = 0
    forward_samples: int = 0
    param_grads: bool = False


@dataclass
class Timing:
    """One side's timed runs, its warm-up outcome and audit, and the checks on its output."""

    name: str
    times: list[float]
    outcome: Outcome
    audit: Audit
    deterministic: bool = True
    check_robust_accuracy: list[float] = field(default_factory=list)
    max_linf: list[float] = field(default_factory=list)
    in_bounds: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    def extra_forwards(self, n: int) -> float:
        """Full forward passes beyond the one each gradient needs, in units of ``n`` rows."""
        return (self.audit.forward_samples - self.outcome.gradients) / n

    def to_json(self, n: int) -> dict[str, Any]:
        return {
            "times_s": self.times,
            "median_s": self.median,
            "min_s": self.best,
            "robust_accuracy": self.outcome.robust_accuracy,
            "gradients": self.outcome.gradients,
            "audit": {**asdict(self.audit), "extra_forward_passes": self.extra_forwards(n)},
            "deterministic": self.deterministic,
            "robust_accuracy_recomputed": self.check_robust_accuracy,
            "max_linf_perturbation": self.max_linf,
            "inside_bounds": self.in_bounds,
        }


@dataclass
class Setup:
    """The model and the inputs every side attacks."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    bounds: tuple[float, float]
    n_classes: int
    input_shape: tuple[int, ...]
    source: str
    epochs: int
    train_s: float
    clean_accuracy: float
    clean_accuracy_test: float
    n_test: int


# --------------------------------------------------------------------------- setup


def take_inputs(ds: Any, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` images of x_test; if it has fewer, continued from x_val, then x_train.

    Returns ``(x, y, description)``, the description naming where the images came from.
    """
    parts = [("x_test", ds.x_test, ds.y_test), ("x_val", ds.x_val, ds.y_val),
             ("x_train", ds.x_train, ds.y_train)]
    xs, ys, used = [], [], []
    left = n
    for name, xp, yp in parts:
        if left == 0 or xp is None:
            continue
        k = min(left, len(xp))
        xs.append(xp[:k])
        ys.append(yp[:k])
        used.append(f"{k} of {name} ({len(xp)})")
        left -= k
    x, y = torch.cat(xs).contiguous(), torch.cat(ys).contiguous()
    if len(used) == 1:
        return x, y, f"the first {len(x)} of x_test ({len(ds.x_test)} images)"
    return x, y, f"x_test has only {len(ds.x_test)}: the first of " + ", then ".join(used)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    with torch.no_grad():
        return int((model(x).argmax(dim=1) == y).sum()) / len(y)


def make_setup(n: int, epochs: int) -> Setup:
    """Load mnist5k, train the CNN for ``epochs`` (seed 0) and take ``n`` test images."""
    ds = load_dataset(DATASET, seed=SEED)
    model = build_model(MODEL, ds.input_shape, ds.n_classes, seed=SEED)
    t0 = time.perf_counter()
    model = train(model, ds.x_train, ds.y_train, epochs=epochs, seed=SEED)
    train_s = time.perf_counter() - t0
    model.eval()
    x, y, source = take_inputs(ds, n)
    return Setup(
        model=model, x=x, y=y, bounds=tuple(ds.bounds), n_classes=ds.n_classes,
        input_shape=tuple(ds.input_shape), source=source, epochs=epochs, train_s=train_s,
        clean_accuracy=accuracy(model, x, y),
        clean_accuracy_test=accuracy(model, ds.x_test, ds.y_test), n_test=len(ds.x_test),
    )


# --------------------------------------------------------------------------- the reference


def plain_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    bounds: tuple[float, float],
    steps: int,
    stepsize: float,
    seed: int,
) -> tuple[torch.Tensor, float]:
    """Linf PGD as a bare torch loop, in chunks; returns ``(x_adv, robust accuracy)``.

    The inputs are attacked ``CHUNK`` at a time (with batching, the chunked loop is the
    reference). Each sample's uniform random start in the ball is drawn like poisonlab's,
    from its own stream (``SampleRNG(seed, ids)``, stream 0), so the two agree exactly;
    then ``steps`` times: forward, summed cross-entropy, ``torch.autograd.grad`` with
    respect to the input only, a signed step, projection onto the ball by clamping,
    clamping to the bounds. One forward pass on the result gives the robust accuracy.
    """
    out, correct = [], 0
    for start in range(0, len(y), CHUNK):
        ids = torch.arange(start, min(start + CHUNK, len(y)))
        xc, yc = x[ids], y[ids]
        x_adv = plain_pgd_chunk(model, xc, yc, ids, eps=eps, steps=steps, stepsize=stepsize,
                                seed=seed, bounds=bounds)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(dim=1) == yc).sum())
        out.append(x_adv)
    return torch.cat(out), correct / len(y)


# --------------------------------------------------------------------------- the sides


def art_classifier(s: Setup) -> PyTorchClassifier:
    """ART's wrapper around the same model (the model itself is shared, not copied)."""
    return PyTorchClassifier(
        model=s.model, loss=nn.CrossEntropyLoss(), input_shape=s.input_shape,
        nb_classes=s.n_classes, clip_values=s.bounds, device_type="cpu",
    )


def art_attack(clf: PyTorchClassifier, eps: float, batch_size: int) -> ProjectedGradientDescent:
    """ART's PGD with one random init and ``STEPS`` iterations of ``REL_STEPSIZE * eps``.

    ``num_random_init=1`` is one run from a random start (0 would start at x); with more,
    ART would run again and compare. ``batch_size`` covers all inputs in one batch.
    """
    attack = ProjectedGradientDescent(
        clf, norm=np.inf, eps=eps, eps_step=REL_STEPSIZE * eps, max_iter=STEPS,
        num_random_init=1, batch_size=batch_size, verbose=False,
    )
    if not isinstance(attack._attack, ProjectedGradientDescentPyTorch):
        raise RuntimeError(
            f"ART picked {type(attack._attack).__name__}, not its PyTorch implementation"
        )
    return attack


def art_run(
    clf: PyTorchClassifier,
    attacks: Sequence[ProjectedGradientDescent],
    x_np: np.ndarray,
    y_np: np.ndarray,
    y: torch.Tensor,
) -> Outcome:
    """Run each ART attack on the numpy inputs; robust accuracy from ART's predictions.

    The true labels are passed (``y=``): without them ART attacks its own predictions (an
    extra forward pass and a different objective). ART draws its random start from numpy's
    global RNG, the only way to seed it, so it is seeded right before each call.
    """
    robust, advs = [], []
    for attack in attacks:
        np.random.seed(SEED)  # ART's random start uses the global numpy RNG
        x_adv = attack.generate(x_np, y=y_np)
        pred = clf.predict(x_adv, batch_size=len(x_adv)).argmax(axis=1)
        robust.append(int((pred == y_np).sum()) / len(y_np))
        advs.append(torch.from_numpy(x_adv))
    return Outcome(robust, STEPS * len(y) * len(attacks), advs)


def foolbox_run(
    fmodel: fb.PyTorchModel,
    attack: fb.attacks.LinfPGD,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
) -> Outcome:
    """One foolbox call with all ``eps`` (foolbox attacks each eps separately).

    foolbox's criterion for labels ``y`` is misclassification (``pred != y``) on its
    clipped outputs, so robust accuracy is ``1 - success``; the warm-up recomputes it from
    the model's predictions. foolbox draws its random start from torch's global RNG, the
    only way to seed it, so it is seeded right before the call.
    """
    torch.manual_seed(SEED)  # foolbox's random start uses the global torch RNG
    _, xpcs, success = attack(fmodel, x, y, epsilons=list(eps))
    robust = [int(k) / len(y) for k in (~success).sum(dim=1).tolist()]
    return Outcome(robust, STEPS * len(y) * len(eps), list(xpcs))


def single_sides(s: Setup) -> dict[str, Callable[[], Outcome]]:
    """The four single-eps PGD sides, each a no-argument call from inputs to robust accuracy."""
    threat = EvasionThreat(norm="linf", eps=EPS, bounds=s.bounds)
    ours_attack = PGD(steps=STEPS, rel_stepsize=REL_STEPSIZE, restarts=1, loss="ce",
                      random_start=True, early_stop=False)
    fmodel = fb.PyTorchModel(s.model, bounds=s.bounds)
    fb_attack = fb.attacks.LinfPGD(rel_stepsize=REL_STEPSIZE, steps=STEPS, random_start=True)
    clf = art_classifier(s)
    art_attacks = [art_attack(clf, EPS, len(s.x))]
    x_np, y_np = s.x.numpy(), s.y.numpy()
    n = len(s.y)

    def plain() -> Outcome:
        x_adv, robust = plain_pgd(s.model, s.x, s.y, eps=EPS, bounds=s.bounds, steps=STEPS,
                                  stepsize=REL_STEPSIZE * EPS, seed=SEED)
        return Outcome([robust], STEPS * n, [x_adv])

    def ours() -> Outcome:
        res = ours_attack(s.model, s.x, s.y, threat=threat, seed=SEED)
        return Outcome([res.robust_accuracy], res.gradients, [res.x_adv])

    return {
        "plain": plain,
        "ours": ours,
        "foolbox": lambda: foolbox_run(fmodel, fb_attack, s.x, s.y, [EPS]),
        "art": lambda: art_run(clf, art_attacks, x_np, y_np, s.y),
    }


def curve_sides(s: Setup) -> dict[str, Callable[[], Outcome]]:
    """The three security-curve sides over ``CURVE_EPS``."""
    threats = [EvasionThreat(norm="linf", eps=e, bounds=s.bounds) for e in CURVE_EPS]
    ours_attack = PGD(steps=STEPS, rel_stepsize=REL_STEPSIZE, early_stop=True)
    fmodel = fb.PyTorchModel(s.model, bounds=s.bounds)
    fb_attack = fb.attacks.LinfPGD(rel_stepsize=REL_STEPSIZE, steps=STEPS)
    clf = art_classifier(s)
    art_attacks = [art_attack(clf, e, len(s.x)) for e in CURVE_EPS]
    x_np, y_np = s.x.numpy(), s.y.numpy()

    def ours() -> Outcome:
        results = security_curve(ours_attack, s.model, s.x, s.y, threats=threats, seed=SEED)
        return Outcome([r.robust_accuracy for r in results],
                       sum(r.gradients for r in results), [r.x_adv for r in results])

    return {
        "ours": ours,
        "foolbox": lambda: foolbox_run(fmodel, fb_attack, s.x, s.y, CURVE_EPS),
        "art": lambda: art_run(clf, art_attacks, x_np, y_np, s.y),
    }


# --------------------------------------------------------------------------- timing


def first_leaf(model: nn.Module) -> nn.Module:
    """The model's first module without children (every forward pass goes through it)."""
    return next(m for m in model.modules() if not list(m.children()))


@contextmanager
def audit(model: nn.Module) -> Iterator[Audit]:
    """Count forward passes through the model's first layer and look for parameter grads.

    The hook sits on the first leaf module, not on the model: ART runs an ``nn.Sequential``
    layer by layer and never calls the container itself.
    """
    rec = Audit()
    params = list(model.parameters())
    for p in params:
        p.grad = None

    def hook(_mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        rec.forward_calls += 1
        rec.forward_samples += int(inputs[0].shape[0])

    handle = first_leaf(model).register_forward_hook(hook)
    try:
        yield rec
    finally:
        handle.remove()
        rec.param_grads = any(p.grad is not None for p in params)
        for p in params:
            p.grad = None


def check_output(
    t: Timing, model: nn.Module, x: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float]
) -> None:
    """Recompute robust accuracy from the side's x_adv with the bare model; measure them."""
    lo, hi = bounds
    for x_adv in t.outcome.x_adv:
        x_adv = x_adv.detach().to(x.dtype)
        t.check_robust_accuracy.append(accuracy(model, x_adv, y))
        t.max_linf.append(float((x_adv - x).abs().max()))
        t.in_bounds &= bool(x_adv.min() >= lo and x_adv.max() <= hi)


def bench(
    sides: dict[str, Callable[[], Outcome]],
    runs: int,
    model: nn.Module,
    desc: str,
) -> dict[str, Timing]:
    """One audited, untimed warm-up of every side, then ``runs`` interleaved timed rounds.

    Round ``r`` times the sides in the order rotated by ``r``. A side is deterministic if
    every timed run reproduced its warm-up's robust accuracy.
    """
    names = list(sides)
    timings: dict[str, Timing] = {}
    for name in names:
        gc.collect()
        with audit(model) as rec:
            out = sides[name]()
        timings[name] = Timing(name, [], out, rec)
    for r in tqdm(range(runs), desc=desc, unit="round", disable=None, leave=False):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            t0 = time.perf_counter()
            out = sides[name]()
            timings[name].times.append(time.perf_counter() - t0)
            if out.robust_accuracy != timings[name].outcome.robust_accuracy:
                timings[name].deterministic = False
    return timings


def time_suite(suite: Path, runs: int) -> dict[str, Any]:
    """Wall time of ``poisonlab run SUITE --out TMP --quiet`` as a subprocess, ``runs`` times.

    Run from the repository root, each time into a fresh temporary folder, with this
    process's environment (so the suite's own thread settings apply, not ``--threads``).
    """
    exe = Path(sys.executable).with_name("poisonlab")
    base = ([str(exe)] if exe.exists() else
            [sys.executable, "-c", "import sys; from poisonlab.cli import main; sys.exit(main())"])
    times: list[float] = []
    ok = True
    error = ""
    for _ in tqdm(range(runs), desc="suite", unit="run", disable=None, leave=False):
        with tempfile.TemporaryDirectory(prefix="pgd-bench-suite-") as tmp:
            cmd = [*base, "run", str(suite), "--out", tmp, "--quiet"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            ok = False
            error = f"exit code {proc.returncode}: {proc.stderr.strip()[-2000:]}"
            break
    shown = str(suite.relative_to(ROOT) if suite.is_relative_to(ROOT) else suite)
    return {
        "suite": shown, "command": f"poisonlab run {shown} --out TMPDIR --quiet",
        "times_s": times, "median_s": statistics.median(times) if times else None,
        "min_s": min(times) if times else None, "ok": ok, "error": error,
    }


# --------------------------------------------------------------------------- machine


def machine(threads: int) -> dict[str, Any]:
    """What the numbers were measured on, with the foolbox and ART versions."""
    return describe_machine(threads, foolbox=fb.__version__, art=art.__version__)


# --------------------------------------------------------------------------- report


def fmt_ra(values: Sequence[float]) -> str:
    """Robust accuracies as a table row."""
    return "  ".join(f"{v:7.3f}" for v in values)


def slash(values: Sequence[float]) -> str:
    """Robust accuracies on one line: ``0.912/0.534/...``."""
    return "/".join(f"{v:.3f}" for v in values)


def print_single(t: dict[str, Timing], n: int) -> None:
    plain = t["plain"].median
    print(f"{'side':8} {'median s':>9} {'min s':>8} {'/ plain':>8} {'robust acc':>10} "
          f"{'gradients':>10} {'extra fwd':>9}  param grads")
    for name, tm in t.items():
        print(f"{name:8} {tm.median:9.3f} {tm.best:8.3f} {tm.median / plain:8.3f} "
              f"{tm.outcome.robust_accuracy[0]:10.3f} {tm.outcome.gradients:10d} "
              f"{tm.extra_forwards(n):9.2f}  {'yes' if tm.audit.param_grads else 'no'}")


def print_curve(t: dict[str, Timing], n: int) -> None:
    ours = t["ours"].median
    heads = "  ".join(f"{'ra@' + format(e, 'g'):>7}" for e in CURVE_EPS)
    print(f"{'side':8} {'median s':>9} {'min s':>8} {'ours x':>7} {'gradients':>10} "
          f"{'extra fwd':>9}  {heads}  param grads")
    for name, tm in t.items():
        print(f"{name:8} {tm.median:9.3f} {tm.best:8.3f} {tm.median / ours:7.2f} "
              f"{tm.outcome.gradients:10d} {tm.extra_forwards(n):9.2f}  "
              f"{fmt_ra(tm.outcome.robust_accuracy)}  {'yes' if tm.audit.param_grads else 'no'}")


def print_checks(t: dict[str, Timing], eps: Sequence[float]) -> list[str]:
    """Print the output checks of every side; return the problems found."""
    problems = []
    for name, tm in t.items():
        same = all(abs(a - b) < 1e-9 for a, b in
                   zip(tm.check_robust_accuracy, tm.outcome.robust_accuracy, strict=True))
        inside = all(m <= e + 1e-6 for m, e in zip(tm.max_linf, eps, strict=True))
        print(f"  {name:8} max |x_adv - x| = {', '.join(f'{m:.4f}' for m in tm.max_linf)}"
              f"{'' if inside else ' (OUTSIDE the ball)'}; inside bounds: "
              f"{'yes' if tm.in_bounds else 'NO'}; robust acc recomputed: "
              f"{'same' if same else fmt_ra(tm.check_robust_accuracy)}; deterministic: "
              f"{'yes' if tm.deterministic else 'NO'}")
        if not (same and inside and tm.in_bounds and tm.deterministic):
            problems.append(name)
    return problems


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.perf.pgd",
        description="PGD speed: poisonlab vs a plain torch loop, foolbox and ART.",
    )
    p.add_argument("--runs", type=int, default=None,
                   help=f"timed rounds per benchmark (default {FULL['runs']}, "
                        f"--quick {QUICK['runs']})")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['n']} images, {QUICK['epochs']} epoch, "
                        f"{QUICK['runs']} rounds, no suite; acceptance not enforced")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: steadier, comparable numbers)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="write all numbers and the machine description to OUT")
    p.add_argument("--n", type=int, default=None,
                   help=f"images to attack (default {FULL['n']}, --quick {QUICK['n']})")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs (default {FULL['epochs']}, --quick {QUICK['epochs']})")
    p.add_argument("--no-suite", action="store_true", help="skip timing the quickstart suite")
    p.add_argument("--suite", type=Path, default=SUITE, help="the suite to time (quickstart)")
    p.add_argument("--suite-runs", type=int, default=1, metavar="K",
                   help="times to run the suite (default 1)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("n", "runs", "epochs"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
        if getattr(args, key) < 1:
            p.error(f"--{key} must be >= 1")
    if args.threads < 1 or args.suite_runs < 1:
        p.error("--threads and --suite-runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 if an acceptance line fails (0 with ``--quick``)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("art").setLevel(logging.WARNING)
    # ART calls np.array() on torch tensors the numpy-1 way (a DeprecationWarning per call).
    warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy")
    wall0 = time.perf_counter()
    mach = machine(args.threads)
    print(f"PGD benchmark  {mach['date']}  {mach['cpu_model']} ({mach['cpus_usable']} usable "
          f"CPUs), torch {mach['torch']} with {mach['torch_num_threads']} thread(s), "
          f"foolbox {mach['foolbox']}, ART {mach['art']}"
          + ("  [--quick]" if args.quick else ""))

    s = make_setup(args.n, args.epochs)
    n = len(s.y)
    print(f"model: {MODEL} on {DATASET}, trained {s.epochs} epoch(s) in {s.train_s:.1f} s; "
          f"clean accuracy {s.clean_accuracy:.3f} on the attacked images, "
          f"{s.clean_accuracy_test:.3f} on all {s.n_test} of x_test")
    print(f"inputs: n = {n}, {s.source}; bounds {s.bounds}; {args.runs} timed round(s) "
          "after 1 warm-up, sides interleaved in rotated order")

    # ---- 1. single eps
    print(f"\n[1] single-eps PGD: linf eps={EPS:g}, {STEPS} steps of {REL_STEPSIZE * EPS:g}, "
          "1 random start, CE, untargeted, no early stop")
    single = bench(single_sides(s), args.runs, s.model, "single-eps")
    for tm in single.values():
        check_output(tm, s.model, s.x, s.y, s.bounds)
    print_single(single, n)
    diff = float((single["plain"].outcome.x_adv[0] - single["ours"].outcome.x_adv[0]).abs().max())
    print(f"  plain vs ours x_adv: max |diff| = {diff:.3g} (same random start by design)")
    problems = print_checks(single, [EPS])

    # ---- 2. security curve
    eps_txt = ", ".join(f"{e:g}" for e in CURVE_EPS)
    print(f"\n[2] security curve: linf eps {eps_txt}; {STEPS} steps of {REL_STEPSIZE:g}*eps; "
          "ours with early stop and shared work, foolbox/ART every eps in full")
    curve = bench(curve_sides(s), args.runs, s.model, "curve")
    for tm in curve.values():
        check_output(tm, s.model, s.x, s.y, s.bounds)
    print_curve(curve, n)
    problems += [f"curve/{p}" for p in print_checks(curve, CURVE_EPS)]
    speedup_fb = curve["foolbox"].median / curve["ours"].median
    speedup_art = curve["art"].median / curve["ours"].median
    print(f"  speedup (ratio of medians): ours vs foolbox {speedup_fb:.2f}x, "
          f"ours vs art {speedup_art:.2f}x; per-sample gradients: ours "
          f"{curve['ours'].outcome.gradients}, foolbox {curve['foolbox'].outcome.gradients}, "
          f"art {curve['art'].outcome.gradients}")

    # ---- 3. suite
    suite: dict[str, Any] | None = None
    if args.quick or args.no_suite:
        print("\n[3] quickstart suite: skipped" + (" (--quick)" if args.quick else ""))
    else:
        print(f"\n[3] suite: poisonlab run {args.suite} --out TMPDIR --quiet "
              f"({args.suite_runs} run(s))")
        suite = time_suite(args.suite.resolve(), args.suite_runs)
        if suite["ok"]:
            print(f"  wall time: median {suite['median_s']:.1f} s, min {suite['min_s']:.1f} s "
                  f"({', '.join(f'{v:.1f}' for v in suite['times_s'])})")
        else:
            print(f"  FAILED: {suite['error']}")
            problems.append("suite")

    # ---- acceptance
    ratio = single["ours"].median / single["plain"].median
    ours_ra = curve["ours"].outcome.robust_accuracy
    fb_ra = curve["foolbox"].outcome.robust_accuracy
    art_ra = curve["art"].outcome.robust_accuracy
    lines = [
        (f"ours/plain = {ratio:.3f} <= {MAX_OURS_OVER_PLAIN}", ratio <= MAX_OURS_OVER_PLAIN),
        (f"curve speedup vs foolbox = {speedup_fb:.2f} >= {MIN_CURVE_SPEEDUP_FOOLBOX:g}",
         speedup_fb >= MIN_CURVE_SPEEDUP_FOOLBOX),
        (f"curve speedup vs art = {speedup_art:.2f} >= {MIN_CURVE_SPEEDUP_ART:g}",
         speedup_art >= MIN_CURVE_SPEEDUP_ART),
        ("ours robust accuracy <= foolbox's and <= art's at every eps "
         f"(ours {slash(ours_ra)}, foolbox {slash(fb_ra)}, art {slash(art_ra)})",
         all(o <= f and o <= a for o, f, a in zip(ours_ra, fb_ra, art_ra, strict=True))),
    ]
    print("\nacceptance" + (" (--quick: reported, not enforced)" if args.quick else ""))
    for text, ok in lines:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    if problems:
        print(f"  output checks failed for: {', '.join(problems)}")
    failed = any(not ok for _, ok in lines) or bool(problems)
    total = time.perf_counter() - wall0
    print(f"\ntotal wall time {total:.0f} s")

    if args.json is not None:
        report = {
            "machine": mach,
            "config": {
                "dataset": DATASET, "model": MODEL, "epochs": s.epochs, "n": n,
                "inputs": s.source, "bounds": list(s.bounds), "seed": SEED, "eps": EPS,
                "curve_eps": list(CURVE_EPS), "steps": STEPS, "rel_stepsize": REL_STEPSIZE,
                "runs": args.runs, "warmup": 1, "quick": args.quick, "threads": args.threads,
            },
            "model": {"train_s": s.train_s, "clean_accuracy": s.clean_accuracy,
                      "clean_accuracy_test": s.clean_accuracy_test},
            "single_eps": {
                "sides": {k: v.to_json(n) for k, v in single.items()},
                "ratio_to_plain": {k: v.median / single["plain"].median
                                   for k, v in single.items()},
                "plain_vs_ours_max_abs_diff": diff,
            },
            "curve": {
                "sides": {k: v.to_json(n) for k, v in curve.items()},
                "speedup_vs_foolbox": speedup_fb, "speedup_vs_art": speedup_art,
            },
            "suite": suite,
            "acceptance": [{"check": text, "pass": ok} for text, ok in lines],
            "output_problems": problems,
            "passed": not failed,
            "total_s": total,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if failed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
