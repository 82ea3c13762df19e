"""Executors run cells and hand each finished record back as soon as it exists.

An executor is a callable ``(suite, cells, on_done, *, progress, workers) -> None`` that
calls ``on_done(position, record)`` once per cell, in any order, always in the calling
process; the runner stores each record before the next one is handed over. ``local`` runs
cells in this process, or with ``workers > 1`` in that many worker processes.

Thread policy
-------------
torch's CPU kernels split reductions and matrix products by the intra-op thread count, so
the same cell can give different bits under 1 and under 2 threads. Every cell is therefore
evaluated under :data:`CELL_THREADS` intra-op threads, whichever executor runs it and
however many workers there are: parallelism comes from running cells side by side, never
from threads inside a cell. The count is recorded as ``environment.torch_threads`` in
results.json.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from .._validation import check_scalar
from ..registry import Registry
from .evaluate import evaluate_cell
from .suite import Cell, Suite

OnDone = Callable[[int, dict[str, Any]], None]

#: torch intra-op threads every cell is evaluated under, in this process and in every
#: worker (see the module docstring). One thread per cell: the models are small enough that
#: a second thread bought little (quickstart cells on 2 cores), and the count must not
#: depend on the number of workers or of cores for the numbers to be byte-identical.
CELL_THREADS = 1

#: How worker processes start: a fresh interpreter each; forking a process that has
#: already used torch's thread pools is unsafe.
START_METHOD = "spawn"


class Executor(Protocol):
    def __call__(self, suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
                 *, progress: bool, workers: int = 1) -> None: ...


executors: Registry[Executor] = Registry("executor")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body under ``n`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_under_policy(suite: Suite, cell: Cell, *, progress: bool = False
                          ) -> dict[str, Any]:
    """:func:`evaluate_cell` under :data:`CELL_THREADS` threads: what every executor runs."""
    with torch_threads(CELL_THREADS):
        return evaluate_cell(suite, cell, progress=progress)


@executors.register("local", help="run cells in this process, or in --workers processes")
def run_local(suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
              *, progress: bool, workers: int = 1) -> None:
    """Evaluate ``cells`` here (``workers=1``) or in ``workers`` spawned processes.

    Parameters
    ----------
    suite, cells
        The suite and its ``(position, cell)`` pairs still to run.
    on_done
        Called in this process with ``(position, record)`` as each cell finishes; with
        workers, in completion order, and a worker gets its next cell only after
        ``on_done`` returned, so at most ``workers`` finished-but-unstored cells exist.
    progress
        Show a progress bar over cells (tqdm; silent when stderr is not a terminal) and,
        with one worker, a second bar over the running cell's stages (training, each
        attack at each eps) when the cell takes more than a second.
    workers
        Number of processes, >= 1. The numbers do not depend on it (see
        :data:`CELL_THREADS`).

    Raises
    ------
    ConfigError
        ``workers`` is not an integer >= 1.
    """
    workers = check_scalar("workers", workers, lo=1, integer=True)
    bar = tqdm(total=len(cells), desc=f"{suite.name}: cells", unit="cell",
               disable=None if progress else True)
    with bar:
        if workers == 1 or len(cells) <= 1:
            for position, cell in cells:
                bar.set_postfix_str(_label(cell))
                on_done(position, evaluate_under_policy(suite, cell, progress=progress))
                bar.update(1)
        else:
            _run_pool(suite, cells, on_done, bar, min(workers, len(cells)))


def _label(cell: Cell) -> str:
    return f"{cell.defense.label} | {cell.poison_id} | seed {cell.seed}"


def _run_pool(suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
              bar: Any, workers: int) -> None:
    """Keep ``workers`` cells in flight; store (``on_done``) each before submitting the next."""
    pending = iter(cells)
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context(START_METHOD),
                               initializer=_init_worker, initargs=(suite,))
    running: dict[Future[dict[str, Any]], tuple[int, Cell]] = {}

    def submit_next() -> None:
        item = next(pending, None)
        if item is not None:
            running[pool.submit(_evaluate_in_worker, item[1])] = item

    try:
        for _ in range(workers):
            submit_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                position, cell = running.pop(future)
                on_done(position, future.result())
                bar.set_postfix_str(_label(cell))
                bar.update(1)
                submit_next()
    except BaseException:
        # Interrupted, or a record could not be stored: stop the workers now rather than
        # let them finish cells nobody will store. What was stored stays (--resume).
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued cells and terminate the worker processes without waiting for them."""
    # ProcessPoolExecutor has no public way to stop running calls; CPython keeps its
    # processes in ``_processes`` (pid -> Process), as in every version we support.
    # Terminate before shutting down: a worker that exits on shutdown's sentinel makes the
    # pool's manager thread spawn a replacement (CPython 3.11), which would outlive us.
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():  # SIGTERM not acted on yet: insist
            p.kill()
            p.join()
    pool.shutdown(wait=True, cancel_futures=True)  # the manager thread sees a broken pool


#: The suite a worker process evaluates cells of, set once by :func:`_init_worker`.
_WORKER_SUITE: Suite | None = None


def _init_worker(suite: Suite) -> None:
    """Worker start-up: keep the suite, fix the thread count, leave Ctrl-C to the parent."""
    global _WORKER_SUITE
    _WORKER_SUITE = suite
    torch.set_num_threads(CELL_THREADS)
    # The parent stops the workers on Ctrl-C; a worker interrupted while idle would only
    # print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _evaluate_in_worker(cell: Cell) -> dict[str, Any]:
    if _WORKER_SUITE is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("worker process started without a suite")
    return evaluate_under_policy(_WORKER_SUITE, cell)
