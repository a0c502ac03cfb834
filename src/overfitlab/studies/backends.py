"""Where a study's runs execute: in this process, in a local process pool, or on Ray.

Every backend runs the same function on the same payloads and yields
``(position, result, error)`` as runs finish, so a study's numbers never depend
on the backend: a run's config carries its thread count, and a run with the
same recipe, seed and threads gives the same history anywhere.

Small CNNs on CPU slow down many times when threads outnumber cores, so
``resources`` refuses ``workers × threads > cores`` instead of letting runs
fight over them.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import multiprocessing
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..environment import available_cores, keep_freed_memory
from ..errors import OverfitlabError

BACKENDS = ("serial", "local", "ray")
RAY_MISSING = "--backend ray needs Ray: pip install 'overfitlab[ray]'"
# Joining a cluster that is not there must fail, not retry for minutes: seconds to wait for
# the head node's port to accept a connection (study --connect-timeout).
RAY_CONNECT_TIMEOUT = 30.0

# Torch threads per run when nothing says otherwise, on every backend. A CPU reduction over
# more threads adds in another order, so a run's numbers depend on its thread count
# (`study --preset remedies --seeds 2`: all-remedies' peak valid acc 0.952 with 2 threads
# against 0.929 with 1). One default makes a study's per-run numbers the same wherever it runs.
DEFAULT_THREADS = 1

Outcome = tuple[int, Any, BaseException | None]  # (position in the payloads, result, error)


@dataclass(frozen=True)
class Resources:
    backend: str
    workers: int  # runs at once
    threads: int  # torch threads per run
    cores: int  # cores of this machine (the Ray cluster's are Ray's business)


def resources(
    backend: str,
    workers: int | None = None,
    threads: int | None = None,
    runs: int | None = None,
    address: str | None = None,
    cores: int | None = None,
) -> Resources:
    """Workers and threads per run, defaulting to one thread per run (DEFAULT_THREADS, on
    every backend) and a run per core.

    ``serial`` runs one at a time; ``local`` and a Ray cluster started here run
    ``cores // threads`` at once; a Ray
    cluster joined with ``address`` schedules by its own CPUs, so every run is
    submitted (``workers`` caps the runs in flight).
    """
    if backend not in BACKENDS:
        raise OverfitlabError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    cores = cores or available_cores()
    for label, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise OverfitlabError(f"{label} must be ≥ 1, got {value}")
    if address is not None and backend != "ray":
        raise OverfitlabError("--address joins a Ray cluster: add --backend ray")
    if backend == "serial":
        if workers not in (None, 1):
            raise OverfitlabError("--workers needs --backend local or ray (serial runs one at a time)")
        workers, threads = 1, threads or DEFAULT_THREADS
    elif backend == "ray" and address is not None:
        threads = threads or DEFAULT_THREADS
        workers = workers or max(1, runs or 1)
        return Resources(backend, min(workers, runs) if runs else workers, threads, cores)
    else:
        threads = threads or DEFAULT_THREADS
        workers = workers or max(1, cores // threads)
    if workers * threads > cores:
        raise OverfitlabError(
            f"{workers} workers × {threads} threads oversubscribe the {cores} cores, which slows small "
            f"CNNs down many times: pass --workers {max(1, cores // threads)} or --threads "
            f"{max(1, cores // workers)}"
        )
    if runs:
        workers = min(workers, runs)
    return Resources(backend, workers, threads, cores)


def create(
    resources: Resources, address: str | None = None, connect_timeout: float = RAY_CONNECT_TIMEOUT
) -> Backend:
    if resources.backend == "serial":
        return SerialBackend()
    if resources.backend == "local":
        return LocalBackend(resources.workers)
    return RayBackend(resources.workers, resources.threads, resources.cores, address, connect_timeout)


def wait_for_head(address: str, timeout: float) -> None:
    """Return once ``host:port`` accepts a TCP connection; one OverfitlabError line when it
    does not within ``timeout`` seconds (Ray itself retries for minutes, printing warnings)."""
    if address == "auto":
        return  # Ray finds the cluster started on this machine, or says it found none
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise OverfitlabError(
            f"bad --address {address!r}: give the head node as HOST:PORT, e.g. 127.0.0.1:6379"
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout)):
                return
        except OSError as err:
            if time.monotonic() + 0.5 > deadline:
                raise OverfitlabError(
                    f"no Ray cluster answers at {address} within {timeout:g} s ({err.strerror or err}): "
                    "start one with `ray start --head`, check --address, or raise --connect-timeout"
                ) from None
            time.sleep(0.5)


def _same(reference: Any) -> Any:
    return reference


def _ray_get(reference: Any) -> Any:
    """What ``RayBackend.put`` stored, read on whichever node the task runs."""
    return import_ray().get(reference)


class Backend:
    """Runs ``fn(payload)`` for every payload; a context manager owning its workers.

    ``put`` stores a value once for every worker to read and ``get`` reads it back: ``get``
    is a plain function, shipped with a task to whichever node runs it."""

    name = ""
    # Whether its workers may run on machines that do not see the study's files: then each
    # task gets its data from ``put`` and sends its run folders back (``studies.worker.land``).
    remote_nodes = False

    def __enter__(self) -> Backend:
        return self

    def put(self, value: Any) -> Any:
        """A reference to ``value`` that every worker can read (the value itself here)."""
        return value

    get: Callable[[Any], Any] = staticmethod(_same)

    def __exit__(self, *exc: object) -> None:
        pass

    def versions(self) -> dict[str, str]:
        return {}

    def execute(
        self,
        fn: Callable[[Any], Any],
        payloads: Sequence[Any],
        on_start: Callable[[int], None] = lambda position: None,
    ) -> Iterator[Outcome]:
        raise NotImplementedError


class SerialBackend(Backend):
    name = "serial"

    def execute(
        self,
        fn: Callable[[Any], Any],
        payloads: Sequence[Any],
        on_start: Callable[[int], None] = lambda position: None,
    ) -> Iterator[Outcome]:
        for position, payload in enumerate(payloads):
            on_start(position)
            try:
                result = fn(payload)
            except Exception as err:  # the study records it as the run's error and goes on
                yield position, None, err
            else:
                yield position, result, None


# --------------------------------------------------------------------------- local processes
# What a worker imports before its first run: torch, overfitlab, matplotlib for the
# curves, and torch._dynamo, which torch.optim imports on the first optimizer. A
# spawned worker spends seconds on them, a good part of its life in a study of
# short runs.
WORKER_PRELOAD = ("overfitlab.studies", "overfitlab.runs", "overfitlab.viz.plots", "torch._dynamo")


def worker_context() -> multiprocessing.context.BaseContext:
    """Fork server with the worker's imports preloaded, where the platform has one; else spawn.

    Workers fork from a server that has only imported modules, never run a
    parallel torch op, so they start in milliseconds with no inherited OpenMP
    thread pool (forking a process that has used one hangs the child's first
    parallel op). Plain fork of the study process is not safe for that reason.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_PRELOAD))  # no effect once the server runs
    return context


def start_worker_server() -> None:
    """Start the fork server now rather than with the first pool, so that its imports
    (seconds) overlap whatever this process does meanwhile; no-op without one."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _study_alive(pid: int) -> bool:
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _exit_when_gone(study: int) -> None:
    try:
        handle = os.pidfd_open(study)  # Linux ≥ 5.3: readable once the process has exited
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        select.select([handle], [], [])
    else:
        while _study_alive(study):
            time.sleep(0.5)
    os._exit(1)


def _start_worker(study: int) -> None:
    """Pool initializer. The worker process is the study's, so its allocator is tuned for
    training (``keep_freed_memory``); and a worker whose study process is killed (even
    SIGKILL) dies too, so no orphan keeps writing into a run folder that a resumed study redoes.

    A fork server's workers are not the study's children (and keep the server
    alive), so no parent-death signal reaches them: a thread watches the study.
    """
    keep_freed_memory()
    threading.Thread(target=_exit_when_gone, args=(study,), name="exit-with-study", daemon=True).start()


class LocalBackend(Backend):
    """A pool of ``workers`` processes started from a fork server (see ``worker_context``)."""

    name = "local"

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: futures.ProcessPoolExecutor | None = None

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        return futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=worker_context(),
            initializer=_start_worker,
            initargs=(os.getpid(),),
        )

    def __enter__(self) -> LocalBackend:
        self._pool = self._new_pool()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def execute(
        self,
        fn: Callable[[Any], Any],
        payloads: Sequence[Any],
        on_start: Callable[[int], None] = lambda position: None,
    ) -> Iterator[Outcome]:
        if self._pool is None:
            raise RuntimeError("LocalBackend.execute outside its `with` block")
        waiting = collections.deque(enumerate(payloads))
        running: dict[futures.Future[Any], int] = {}
        while waiting or running:
            # At most `workers` runs submitted: a run is "running" when the study says so.
            while waiting and len(running) < self.workers:
                position, payload = waiting.popleft()
                on_start(position)
                running[self._pool.submit(fn, payload)] = position
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            if any(isinstance(f.exception(), futures.process.BrokenProcessPool) for f in done):
                # A worker died (killed, out of memory, crashed in C) and took the pool
                # with it: every run in flight is lost. Record them; a fresh pool runs the rest.
                lost = sorted(running.values())
                running.clear()
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                for position in lost:
                    yield (
                        position,
                        None,
                        RuntimeError("a worker process died abruptly (killed, out of memory or crashed)"),
                    )
                continue
            for future in done:
                position = running.pop(future)
                try:
                    yield position, future.result(), None
                except Exception as err:
                    yield position, None, err


# --------------------------------------------------------------------------- Ray
def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise OverfitlabError(RAY_MISSING) from None
    return ray


def _in_ray_worker(fn: Callable[[Any], Any], payload: Any) -> Any:
    """A Ray task: ``fn(payload)`` in a worker process tuned for training, as a local one is."""
    keep_freed_memory()
    return fn(payload)


class RayBackend(Backend):
    """Each run a Ray task with ``num_cpus = threads``; Ray never runs more than the CPUs allow.

    Without ``address`` a private Ray instance starts for the study (loopback
    only, no dashboard) and stops after it; with one, the study joins that
    cluster and leaves it running. Its nodes need not share a file system: a study puts
    each data set in the object store once, and every run folder comes back to the study's
    machine, which writes it (``studies.worker``).
    """

    name = "ray"
    remote_nodes = True

    def __init__(
        self,
        workers: int,
        threads: int,
        cores: int,
        address: str | None = None,
        connect_timeout: float = RAY_CONNECT_TIMEOUT,
    ):
        self.workers = workers
        self.threads = threads
        self.cores = cores
        self.address = address
        self.connect_timeout = connect_timeout
        self._ray = import_ray()
        self._owned = False

    def __enter__(self) -> RayBackend:
        ray = self._ray
        if not ray.is_initialized():
            common = dict(log_to_driver=False, logging_level="WARNING", configure_logging=False)
            if self.address:
                wait_for_head(self.address, self.connect_timeout)
                ray.init(address=self.address, **common)
            else:
                # A study's Ray sends nothing anywhere: no usage statistics.
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(num_cpus=self.cores, include_dashboard=False, _node_ip_address="127.0.0.1", **common)
            self._owned = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            self._ray.shutdown()  # stops a private instance; only disconnects from a cluster
            self._owned = False

    def versions(self) -> dict[str, str]:
        return {"ray": self._ray.__version__}

    def put(self, value: Any) -> Any:
        """Into the object store, once: every node's workers read that copy."""
        return self._ray.put(value)

    get = staticmethod(_ray_get)

    def execute(
        self,
        fn: Callable[[Any], Any],
        payloads: Sequence[Any],
        on_start: Callable[[int], None] = lambda position: None,
    ) -> Iterator[Outcome]:
        ray = self._ray
        # max_retries=0: a run that failed is recorded as failed, not silently rerun.
        task = ray.remote(num_cpus=self.threads, max_retries=0)(_in_ray_worker)
        waiting = collections.deque(enumerate(payloads))
        running: dict[Any, int] = {}
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    position, payload = waiting.popleft()
                    on_start(position)
                    running[task.remote(fn, payload)] = position
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    position = running.pop(ref)
                    try:
                        yield position, ray.get(ref), None
                    except ray.exceptions.RayTaskError as err:
                        cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
                        if isinstance(cause, KeyboardInterrupt):
                            raise cause from None
                        yield position, None, cause
                    except ray.exceptions.RayError as err:  # worker died, node lost, ...
                        yield position, None, RuntimeError(str(err).strip().splitlines()[0])
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
