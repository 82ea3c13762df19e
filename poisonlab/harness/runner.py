"""Run a suite: expand it into cells, evaluate each, store it, write results and reports.

>>> from poisonlab.harness import load_suite, run_suite
>>> results = run_suite(load_suite("benchmarks/suites/quickstart.yaml"), "runs/q")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write
from .._validation import validate_bool, validate_scalar
from .._version import __version__
from ..errors import ConfigError, RunError
from .executors import CELL_THREADS, device_name, executors, validate_options
from .measure import derive_poisoning
from .schema import RESULTS_NAME
from .schema import RESULTS_SCHEMA_VERSION as SCHEMA_VERSION
from .spec import Suite
from .stats import aggregate_cells
from .store import STORE_NAME, Store
from .suite import validate_suite_data

#: What results.json reads from the suite recorded in a store.
SUITE_META_KEYS = frozenset({"name", "version", "description", "evasion", "poisoning",
                             "attacks"})


def environment() -> dict[str, Any]:
    """Package versions, platform and thread count: what a number was measured with."""
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        # Cells run under a fixed thread count whatever the workers (executors.py).
        "torch_threads": CELL_THREADS,
        "packages": {p: version(p) for p in ("poisonlab", "torch", "numpy", "scikit-learn",
                                             "scipy", "adversarial-robustness-toolbox",
                                             "foolbox", "pyyaml")},
        "git": _git_hash(),
    }


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def prepare_out(out: str | Path, *, resume: bool) -> Path:
    """Create ``out``; refuse to mix a new run into an existing one unless resuming."""
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out={str(out_dir)!r} is a file: expected a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out={str(out_dir)!r} cannot be created: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise ConfigError(f"--out={str(out_dir)!r} is not writable")
    if (out_dir / STORE_NAME).exists() and not resume:
        raise ConfigError(
            f"--out={str(out_dir)!r} already holds a run ({STORE_NAME}): pass --resume to "
            "finish it, or choose another --out"
        )
    return out_dir


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    executor: str = "local",
    resume: bool = False,
    progress: bool = False,
    report: bool = True,
    workers: int | None = None,
    strict: bool = False,
    device: str = "cpu",
    address: str | None = None,
) -> dict[str, Any]:
    """Run every cell of ``suite`` not yet stored in ``out`` and write the results.

    Each finished cell is committed to ``out/results.sqlite`` before the next is handed
    over; results.json, report.md and report.html are then regenerated from the store.
    Returns the results document (the content of results.json).

    ``executor`` is "local" (this process, or ``workers`` processes side by side) or "ray"
    (Ray tasks on a local instance, or on the cluster at ``address``; ``workers`` then caps
    the cells in flight, default the cluster's CPUs). The numbers depend on neither.
    ``device`` ("cpu", "cuda", "cuda:N", "auto") is where models train and are attacked;
    a run folder holds cells of one device type only, so ``--resume`` on another is refused.

    With ``strict``, a sanity check that flagged a cell (docs/checks.md) raises
    :class:`~poisonlab.sanity.SanityFailure` once everything is written; its ``lines`` say
    which, one per flag, and its ``doc`` is the results document.
    """
    run = executors.get(executor)
    validate_options(executor, address=address)
    if workers is not None:
        workers = validate_scalar("workers", workers, lo=1, integer=True)
    validate_bool("strict", strict)
    device = device_name(device, local=address is None)
    validate_suite_data(suite)  # before the run folder exists: a bad budget is bad input
    out_dir = prepare_out(out, resume=resume)
    cells = list(enumerate(suite.cells()))
    new_store = not (out_dir / STORE_NAME).exists()
    with Store(out_dir / STORE_NAME) as store, _forget_if_empty(store, new_store):
        stored_suite = store.get_meta("suite")
        if stored_suite is not None and _numbers_config(stored_suite) != _numbers_config(
                suite.to_dict()):
            raise ConfigError(
                f"--resume: {str(out_dir)!r} holds a run of a different suite config: "
                "expected the same suite file, unchanged"
            )
        _check_device_meta(store, device, out_dir)
        store.set_meta("suite", suite.to_dict())
        store.set_meta("suite_source", suite.source)
        used = store.get_meta("executors") or []
        store.set_meta("executors", used if executor in used else [*used, executor])
        # Tolerances and expectations change no number: the latest suite file's win.
        store.set_meta("gate", suite.gate_dict())
        done = store.keys()
        todo = [(i, c) for i, c in cells if suite.key(c) not in done]
        run(suite, todo, store.put, progress=progress, workers=workers, device=device,
            address=address)
    doc = write_results(out_dir, report=report)
    if strict:
        from ..sanity import SanityFailure, flag_lines

        lines = flag_lines(doc)
        if lines:
            raise SanityFailure(lines, doc)
    return doc


@contextmanager
def _forget_if_empty(store: Store, new: bool) -> Iterator[None]:
    """If the body fails before a cell of a store it created was stored, delete the store:
    a run that never started leaves no run behind (and needs no --resume)."""
    try:
        yield
    except BaseException:
        if new and not store.keys():
            store.close()
            store.path.unlink(missing_ok=True)
        raise


#: Suite keys that change memory and speed but no number (docs/batching.md): a run resumes
#: with another batch size.
_NUMBER_FREE_KEYS = ("batch_size", "attack_batch_sizes")


def _numbers_config(suite_dict: dict[str, Any]) -> dict[str, Any]:
    """The suite config without the keys that change no number (the resume comparison)."""
    return {k: v for k, v in suite_dict.items() if k not in _NUMBER_FREE_KEYS}


def _check_device_meta(store: Store, device: str, out_dir: Path) -> None:
    """Record the run's device (with the GPU's name); refuse to resume on another type.

    Float results differ between a CPU and a GPU, so one run folder holds one device
    type's numbers; ``cuda:0`` and ``cuda:1`` count as the same.
    """
    kind = torch.device(device).type
    stored = store.get_meta("device")
    if stored is not None and stored.split(" ")[0] != kind:
        raise ConfigError(
            f"--device={device!r} is not allowed with --resume here: {str(out_dir)!r} holds "
            f"cells run on {stored.split(' ')[0]!r}, and numbers from two device types "
            "must not mix; resume on that device or choose another --out")
    if stored is None:
        label = kind
        if kind == "cuda" and torch.cuda.is_available():
            label = f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
        store.set_meta("device", label)


def write_results(out_dir: str | Path, *, report: bool = True) -> dict[str, Any]:
    """(Re)build results.json (and the reports) of a run folder from its store."""
    out_dir = Path(out_dir)
    with Store(out_dir / STORE_NAME) as store:
        records = store.records()
        suite = store.get_meta("suite")
        if not isinstance(suite, dict) or not suite.keys() >= SUITE_META_KEYS:
            raise store.damaged("no suite recorded")
        source = store.get_meta("suite_source")
        gate = store.get_meta("gate") or {}
        run_env = {k: v for k in ("device", "executors")
                   if (v := store.get_meta(k)) is not None}
    derive_poisoning(records)
    doc = build_results(suite, source, records, gate=gate)
    doc["environment"].update(run_env)
    try:
        atomic_write(out_dir / RESULTS_NAME, json.dumps(doc, indent=1, sort_keys=False)
                     + "\n")
        if report:
            from .report import write_reports

            write_reports(doc, out_dir)
    except RunError as e:
        n = len(records)
        raise RunError(f"{e}; the run's {n} cell{'s' * (n != 1)} are kept in "
                       f"{STORE_NAME}: free disk space, then 'poisonlab report "
                       f"{out_dir}' writes results.json and the reports") from None
    return doc


def build_results(suite: dict[str, Any], source: str | None,
                  records: list[dict[str, Any]], *,
                  gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results document; ``gate`` (:meth:`Suite.gate_dict`) adds the suite's tolerances
    and its expectations, judged on the aggregates."""
    cells = []
    for r in records:
        cells.append({k: v for k, v in r.items() if k != "internal"})
    gate = gate or {}
    doc = _clean_json({
        "schema_version": SCHEMA_VERSION,
        "poisonlab_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "suite": {"name": suite["name"], "version": suite["version"],
                  "description": suite["description"], "source": source, "config": suite},
        "threat_model": {"evasion": suite["evasion"], "poisoning": suite["poisoning"],
                         "attacks": suite["attacks"],
                         "attack_knowledge": suite.get("attack_knowledge", {})},
        "environment": environment(),
        "n_cells": len(cells),
        "n_failed": sum(c["status"] != "ok" for c in cells),
        "cells": cells,
        "aggregates": aggregate_cells(cells),
    })
    if gate.get("tolerances"):
        doc["suite"]["tolerances"] = gate["tolerances"]
    if gate.get("threats"):  # the named attackers the report compares defenses against
        doc["threat_model"]["threats"] = gate["threats"]
    if gate.get("expectations"):
        from .expectations import Expectation, evaluate_expectations, expectations_to_doc

        expectations = [Expectation.from_dict(e) for e in gate["expectations"]]
        doc["expectations"] = _clean_json(
            expectations_to_doc(evaluate_expectations(doc, expectations)))
    return doc


def _clean_json(v: Any) -> Any:
    """NaN and Inf become null: results.json holds JSON numbers only."""
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else None
    if isinstance(v, dict):
        return {k: _clean_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean_json(x) for x in v]
    return v





