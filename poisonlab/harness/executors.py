"""Executors run cells and hand each finished record back as soon as it exists.

An executor is a callable ``(suite, cells, on_done, *, progress, workers, device,
address) -> None`` that calls ``on_done(position, record)`` once per cell, in any order,
always in the calling process; the runner stores each record before the next one is
handed over, so ``--resume`` works whichever executor ran the stored cells. ``local`` runs
cells in this process, or with ``workers > 1`` in that many worker processes; ``ray`` runs
each cell as a Ray task, on a local Ray instance or on a cluster (``address``).

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

import copy
import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from .._validation import validate_device, validate_scalar
from ..defenses._stacked import partitions_over, train_chunk
from ..errors import ConfigError, RunError, first_line
from ..registry import Registry
from .measure import cell_stages, measure_cell
from .spec import Cell, Suite

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
                 *, progress: bool, workers: int | None = None, device: str = "cpu",
                 address: str | None = None) -> None: ...


executors: Registry[Executor] = Registry("executor")


def validate_options(executor: str, *, address: str | None) -> None:
    """Refuse executor options that cannot work, before a run folder is touched: an
    address for ``local``; for ``ray``, Ray missing or an address nobody answers at."""
    executors.get(executor)
    if executor == "ray":
        _import_ray()
        if address is not None:
            validate_address(address)
    elif address is not None:
        raise ConfigError(f"--address={address!r} is not allowed with --executor "
                          f"{executor}: it names a Ray cluster (use --executor ray)")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body under ``n`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_cell(suite: Suite, cell: Cell, *, progress: bool = False,
                  device: str | torch.device = "cpu") -> dict[str, Any]:
    """Measure one cell (:func:`~poisonlab.harness.measure.measure_cell`); its record.

    ``progress`` shows a bar over the cell's stages (training, each attack at each eps,
    the sanity checks, the off-manifold and information metrics) once the cell has run
    for a second, silent when stderr is not a terminal; it changes no number.
    """
    bar = tqdm(total=cell_stages(suite, cell), desc="  cell", unit="stage", leave=False,
               delay=1.0, position=1, disable=None if progress else True)

    def tick(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(1)

    with bar:
        return measure_cell(suite, cell, device=device, tick=tick).to_record()


def evaluate_under_policy(suite: Suite, cell: Cell, *, progress: bool = False,
                          device: str = "cpu") -> dict[str, Any]:
    """:func:`evaluate_cell` under :data:`CELL_THREADS` threads: what every executor runs."""
    with torch_threads(CELL_THREADS):
        return evaluate_cell(suite, cell, progress=progress, device=device)


@executors.register("local", help="run cells in this process, or in --workers processes")
def run_local(suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
              *, progress: bool, workers: int | None = None, device: str = "cpu",
              address: str | None = None) -> None:
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
        Number of processes, >= 1 (default 1). The numbers do not depend on it (see
        :data:`CELL_THREADS`).
    device
        Where the cells' models run: "cpu", "cuda", "cuda:N" (every worker uses it).
    address
        Not used by this executor: giving one is an error (it belongs to ``ray``).

    Raises
    ------
    ConfigError
        ``workers`` is not an integer >= 1, ``device`` is not available, or an
        ``address`` was given.
    """
    validate_options("local", address=address)
    workers = validate_scalar("workers", 1 if workers is None else workers, lo=1, integer=True)
    device = str(validate_device("device", device))
    bar = tqdm(total=len(cells), desc=f"{suite.name}: cells", unit="cell",
               disable=None if progress else True)
    with bar:
        if workers == 1 or len(cells) <= 1:
            for position, cell in cells:
                bar.set_postfix_str(_label(cell))
                on_done(position, evaluate_under_policy(suite, cell, progress=progress,
                                                        device=device))
                bar.update(1)
        else:
            _run_pool(suite, cells, on_done, bar, min(workers, len(cells)), device)


def _label(cell: Cell) -> str:
    return f"{cell.defense.label} | {cell.poison_id} | seed {cell.seed}"


def _run_pool(suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
              bar: Any, workers: int, device: str) -> None:
    """Keep ``workers`` cells in flight; store (``on_done``) each before submitting the next."""
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context(START_METHOD),
                               initializer=_init_worker, initargs=(suite, device))
    # Interrupted, or a record could not be stored: stop the workers now rather than let
    # them finish cells nobody will store. What was stored stays (--resume).
    _keep_in_flight(cells, on_done, bar, workers,
                    submit=lambda cell: pool.submit(_evaluate_in_worker, cell),
                    wait_any=lambda fs: wait(fs, return_when=FIRST_COMPLETED)[0],
                    result=_pool_result, stop=lambda _running: _stop(pool))
    pool.shutdown(wait=True)


def _pool_result(future: Future[dict[str, Any]]) -> dict[str, Any]:
    """A worker's record; a worker that died (killed, out of memory) is one clear line."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise RunError(
            "a worker process ended without finishing its cell (killed by a signal or the "
            "out-of-memory killer?): the cells finished before it are stored; rerun with "
            "--resume, with fewer --workers if memory ran out") from None


def _keep_in_flight(cells: Sequence[tuple[int, Cell]], on_done: OnDone, bar: Any,
                    limit: int, *, submit: Callable[[Cell], Any],
                    wait_any: Callable[[list[Any]], Iterable[Any]],
                    result: Callable[[Any], dict[str, Any]],
                    stop: Callable[[list[Any]], None]) -> None:
    """The loop both parallel executors share: keep up to ``limit`` cells running.

    ``submit(cell)`` starts a cell and returns its handle, ``wait_any(handles)`` blocks
    until some finish and returns those, ``result(handle)`` is the finished cell's record.
    Each record goes to ``on_done`` (which stores it) before the next cell is submitted,
    so at most ``limit`` finished-but-unstored cells exist. On any exception, ``stop``
    gets the handles still running, and the exception propagates.
    """
    pending = iter(cells)
    running: dict[Any, tuple[int, Cell]] = {}

    def submit_next() -> None:
        item = next(pending, None)
        if item is not None:
            running[submit(item[1])] = item

    try:
        for _ in range(limit):
            submit_next()
        while running:
            for handle in wait_any(list(running)):
                position, cell = running.pop(handle)
                on_done(position, result(handle))
                bar.set_postfix_str(_label(cell))
                bar.update(1)
                submit_next()
    except BaseException:
        stop(list(running))
        raise


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


#: The suite a worker process evaluates cells of, and the device, set by :func:`_init_worker`.
_WORKER_SUITE: Suite | None = None
_WORKER_DEVICE = "cpu"


def _init_worker(suite: Suite, device: str = "cpu") -> None:
    """Worker start-up: keep the suite, fix the thread count, leave Ctrl-C to the parent."""
    global _WORKER_SUITE, _WORKER_DEVICE
    _WORKER_SUITE, _WORKER_DEVICE = suite, device
    torch.set_num_threads(CELL_THREADS)
    # The parent stops the workers on Ctrl-C; a worker interrupted while idle would only
    # print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock holds a multiprocessing semaphore; a worker stopped by SIGTERM
    # never releases it and the resource tracker warns of a leak at exit. Workers draw no
    # bars, so a thread lock suffices.
    tqdm.set_lock(threading.RLock())


def _evaluate_in_worker(cell: Cell) -> dict[str, Any]:
    if _WORKER_SUITE is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("worker process started without a suite")
    return evaluate_under_policy(_WORKER_SUITE, cell, device=_WORKER_DEVICE)


# --------------------------------------------------------------------------- ray

#: GPU share each cell's Ray task declares under ``--device cuda``: the models are small,
#: so four cells share one GPU (Ray's fractional GPUs). Ray picks the GPU and makes it the
#: task's only visible one, so a task always runs on "cuda" (never "cuda:N").
RAY_GPUS_PER_CELL = 0.25

#: Object store of a Ray instance started here: it carries only the suite and the cell
#: records (each task loads its own data), so a small one suffices and keeps Ray from
#: claiming 30% of the machine's memory.
RAY_OBJECT_STORE_BYTES = 256 * 2**20


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray is not available: Ray is not installed (pip install "
            "'poisonlab[ray]')") from None
    return ray


def device_name(device: str, *, local: bool) -> str:
    """Validate ``device``: fully where the cells run here, by name only for a cluster."""
    if local:
        return str(validate_device("device", device))
    if device == "auto":
        raise ConfigError("--device='auto' is not allowed with --address: the driver cannot "
                          "see the cluster's devices; name one ('cpu' or 'cuda')")
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device={device!r} is not allowed: expected 'cpu', 'cuda', "
                          "'cuda:N' or 'auto'")
    return device


def validate_address(address: str, *, timeout: float = 5.0) -> None:
    """Refuse a Ray address that is malformed or has nothing listening, within seconds.

    ``ray.init`` itself retries an unreachable address for minutes; this probes the
    host and port with one TCP connection first. "auto" (a cluster already running on this
    machine) is left to Ray, which answers at once.
    """
    if address == "auto":
        return
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address={address!r} is not allowed: expected 'auto', "
                          "'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise ConfigError(f"--address={address!r} cannot be reached: {why}") from None


def _ray_cell(suite: Suite, cell: Cell, device: str) -> dict[str, Any]:
    """The body of a cell's Ray task: check the device on the node, then evaluate; a
    partition-aggregation cell trains its chunks of base models as Ray tasks of their own
    (:func:`ray_partition_map`)."""
    if device.startswith("cuda"):
        device = "cuda"  # the GPU Ray assigned is the only one visible to this task
    validate_device("device", device)
    with partitions_over(ray_partition_map):
        return evaluate_under_policy(suite, cell, device=device)


def _ray_chunk(x: torch.Tensor, y: torch.Tensor, models: list[Any], groups: list[Any],
               seeds: list[int], settings: dict[str, Any], device: str
               ) -> list[dict[str, torch.Tensor]]:
    """One chunk of base models trained in a Ray task, on the cell's device and under the
    cell's thread count (so the numbers are those of the local executor); CPU states."""
    with torch_threads(settings["threads"]):
        models = [m.to(device) for m in models]
        states = train_chunk(x.to(device), y.to(device), models,
                             [g.to(device) for g in groups], seeds,
                             {**settings, "progress": False})
    return [{k: v.cpu() for k, v in st.items()} for st in states]


def ray_partition_map(fn: Any, x: torch.Tensor, y: torch.Tensor, jobs: Sequence[Any],
                      settings: dict[str, Any]) -> list[list[dict[str, torch.Tensor]]]:
    """Run each chunk of a partition ensemble's base models as a Ray task (``fn`` is
    :func:`~poisonlab.defenses._stacked.train_chunk`, which the task calls); the data set
    goes to the object store once. Inside a cell's task: its CPU is lent back while it
    waits on the chunks."""
    ray = _import_ray()
    device = str(x.device.type)
    gpus = RAY_GPUS_PER_CELL if device == "cuda" else 0
    task = ray.remote(_ray_chunk).options(num_cpus=1, num_gpus=gpus)
    xr, yr = ray.put(x.cpu()), ray.put(y.cpu())
    refs = [task.remote(xr, yr, [copy.deepcopy(m).cpu() for m in models],
                        [g.cpu() for g in groups], seeds, settings, device)
            for models, groups, seeds in jobs]
    return [[{k: v.to(x.device) for k, v in st.items()} for st in ray.get(r)] for r in refs]


@executors.register("ray", help="run cells as Ray tasks on a local Ray instance, or on a "
                                "cluster with --address (pip install 'poisonlab[ray]')")
def run_ray(suite: Suite, cells: Sequence[tuple[int, Cell]], on_done: OnDone,
            *, progress: bool, workers: int | None = None, device: str = "cpu",
            address: str | None = None) -> None:
    """Evaluate ``cells`` as Ray tasks and store each record as its task finishes.

    Each cell is one task declaring 1 CPU (and :data:`RAY_GPUS_PER_CELL` of a GPU under a
    CUDA ``device``); it runs :func:`evaluate_under_policy`, the same function the local
    executor runs, under the same thread policy, so the same suite and seeds give the same
    numbers as ``local`` on the same kind of machine. Records stream back to this process
    in completion order and ``on_done`` stores each before the next is taken, so an
    interrupted run keeps every finished cell and ``--resume`` finishes it under either
    executor.

    Parameters
    ----------
    suite, cells, on_done, progress
        As for :func:`run_local`.
    workers
        Cells in flight at once; default: the cluster's CPU count.
    device
        "cpu", "cuda", "cuda:N" or "auto" (local instance only). On a cluster it is
        checked on each node before the cell runs.
    address
        A running Ray cluster to join ("auto", "HOST:PORT" or "ray://HOST:PORT"); every
        node needs poisonlab installed. Without one, a Ray instance sized to this machine
        is started for the run and stopped after it, unless Ray is already initialised in
        this process (then that instance is used and left running).

    Raises
    ------
    ConfigError
        Ray is not installed, the cluster cannot be reached, or ``device`` or ``workers``
        is not allowed.
    """
    ray = _import_ray()
    device = device_name(device, local=address is None)
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False,
                                   "logging_level": logging.WARNING}
        if address is None:
            options["object_store_memory"] = RAY_OBJECT_STORE_BYTES
        else:
            validate_address(address)
        on_main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
        try:
            ray.init(address=address, **options)
            # ray.init makes SIGTERM exit the process at once (sys.exit); keep the
            # caller's handler, which stops the run cleanly (poisonlab.cli).
            if on_main and signal.getsignal(signal.SIGTERM) is not sigterm:
                signal.signal(signal.SIGTERM, sigterm)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"--address={address!r}" if address else "a local Ray instance"
            raise ConfigError(f"{where} cannot be used: {first_line(e)}") from None
        started = True
    try:
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        limit = validate_scalar("workers", cpus if workers is None else workers, lo=1,
                             integer=True)
        gpus = RAY_GPUS_PER_CELL if device.startswith("cuda") else 0
        if gpus and not resources.get("GPU"):
            # Tasks asking for a GPU would wait forever for one to appear.
            raise ConfigError(f"--device={device!r} is not available on the Ray cluster: it "
                              "has no GPUs (use --device cpu, or a cluster with GPUs)")
        task = ray.remote(_ray_cell).options(num_cpus=1, num_gpus=gpus)
        _stream_ray(ray, task, ray.put(suite), cells, on_done, device, limit,
                    desc=f"{suite.name}: cells (ray)", progress=progress)
    finally:
        if started:
            ray.shutdown()


def _stream_ray(ray: Any, task: Any, suite_ref: Any, cells: Sequence[tuple[int, Cell]],
                on_done: OnDone, device: str, limit: int, *, desc: str,
                progress: bool) -> None:
    """Keep up to ``limit`` cell tasks in flight; hand each record over as it finishes."""
    def cancel(refs: list[Any]) -> None:  # interrupted, or a cell could not be stored
        for ref in refs:
            ray.cancel(ref, force=True)

    bar = tqdm(total=len(cells), desc=desc, unit="cell", disable=None if progress else True)
    with bar:
        _keep_in_flight(cells, on_done, bar, limit,
                        submit=lambda cell: task.remote(suite_ref, cell, device),
                        wait_any=lambda refs: ray.wait(refs, num_returns=1)[0],
                        result=lambda ref: _ray_result(ray, ref), stop=cancel)


def _ray_result(ray: Any, ref: Any) -> dict[str, Any]:
    """The task's record; a poisonlab error raised on a node is re-raised as itself."""
    from ..errors import PoisonlabError

    try:
        record: dict[str, Any] = ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, PoisonlabError):
            raise cause from None
        raise
    return record
