"""The demo's CPU-heavy work, and the executors that run it in other processes (``--executor``).

The work function lives in this small module, apart from the demo's service,
so that a worker process unpickles it by reference without importing the
service (and its Prometheus endpoint).

* ``threads``: the loop's default executor, like every other pooled call.
* ``processes``: a ``ProcessPoolExecutor`` of two spawned workers.
* ``dask``: a dask.distributed ``LocalCluster`` of two worker processes on
  127.0.0.1 without a dashboard, reached through ``Client.get_executor()``
  (needs ``pip install 'aiothreads[dask]'``).

When the demo exports traces, each worker process sets up the same exporter
from the same environment, so a call's ``worker checksum_orders`` span joins
the caller's trace.
"""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing
import signal
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "EXECUTORS",
    "checksum_orders",
    "ignore_interrupts",
    "start_executor",
    "start_pool_worker",
    "start_worker_tracing",
]

EXECUTORS: Final = ("threads", "processes", "dask")
"""What ``--executor`` accepts."""

WORKERS: Final = 2


def checksum_orders(orders: int, rounds: int) -> str:
    """Checksum ``orders`` orders ``rounds`` times over: a few milliseconds of pure CPU."""
    digest = hashlib.sha256()
    for order in range(orders):
        block = f"order {order}".encode() * 64
        for _ in range(rounds):
            digest.update(block)
    return digest.hexdigest()[:16]


def ignore_interrupts() -> None:
    """In a worker process: leave Ctrl-C to the demo, which stops its workers in order.

    A terminal sends Ctrl-C's SIGINT to every process of its foreground
    group, workers included; each would print a ``KeyboardInterrupt``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_pool_worker(tracing: bool) -> None:
    """Process-pool initializer: ignore Ctrl-C, and export traces if the demo does."""
    ignore_interrupts()
    if tracing:
        start_worker_tracing()


def start_worker_tracing() -> bool:
    """In a worker process: export traces as the environment says, once; return whether it does."""
    from aiothreads.demo._tracing import set_up_tracing  # noqa: PLC0415 - in the worker

    global _tracing_stop  # noqa: PLW0603 - once per worker process
    if _tracing_stop is None:
        _tracing_stop = set_up_tracing()
    return _tracing_stop is not None


_tracing_stop: Callable[[], None] | None = None


def start_executor(name: str, tracing: bool) -> tuple[Executor | None, Callable[[], None], str]:
    """Start the executor ``--executor`` names; return it, what stops it, and a description.

    ``None`` is the loop's default executor. Starting a dask cluster takes a
    few seconds and blocks: call this in a thread.

    Raises:
        SystemExit: the executor is unknown, or dask is not installed.
    """
    if name == "threads":
        return None, lambda: None, "threads of the default pool"
    if name == "processes":
        spawn = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            WORKERS, mp_context=spawn, initializer=start_pool_worker, initargs=(tracing,)
        )
        return pool, pool.shutdown, f"a process pool of {WORKERS} spawned workers"
    if name == "dask":
        return _start_dask(tracing)
    raise SystemExit(f"--executor: unknown executor {name!r} ({', '.join(EXECUTORS)})")


def _start_dask(tracing: bool) -> tuple[Executor, Callable[[], None], str]:
    try:
        distributed: Any = importlib.import_module("distributed")  # the dask extra is optional
    except ImportError as missing:
        raise SystemExit("--executor dask: pip install 'aiothreads[dask]'") from missing
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # The scheduler serves /metrics even without a dashboard, on 8787 unless
        # told otherwise, which another program may hold.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise

    def stop() -> None:
        try:
            client.close()
        finally:
            cluster.close()

    try:
        client.run(ignore_interrupts)
        if tracing:
            client.run(start_worker_tracing)
        executor: Executor = client.get_executor(pure=False)
    except BaseException:
        stop()
        raise
    address = cluster.scheduler_address
    return executor, stop, f"a dask LocalCluster of {WORKERS} worker processes at {address}"
