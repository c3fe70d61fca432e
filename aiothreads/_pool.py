"""The worker pool aiothreads installs as an asyncio loop's default executor.

When a threaded call runs on an asyncio event loop that has no default
executor yet, aiothreads installs a ``WorkerPool`` with
``loop.set_default_executor()``. It is a ``ThreadPoolExecutor`` in every way
asyncio and other code rely on (``submit``, ``shutdown``, ``map``, the same
default size), and it also accepts aiothreads' own calls without creating a
``concurrent.futures.Future`` for each. ``asyncio.run()`` shuts it down and
waits for it like any default executor.

A default executor that the application installed itself is always used as
it is; so is every executor on loops that do not expose theirs (uvloop).
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["WorkerPool"]

T = TypeVar("T")


class Work(Protocol):
    """What the pool runs: a call that never raises, and can be dropped unrun."""

    def run(self) -> None:
        """Run the call in this thread; it must not raise."""
        ...

    def abandon(self) -> None:
        """Settle the call as dropped: the pool shut down before running it."""
        ...


class WorkerPool(ThreadPoolExecutor):
    """A thread pool whose workers run plain callables from one queue.

    Args:
        max_workers: How many threads at most; ``ThreadPoolExecutor``'s default
            (``min(32, cpu_count + 4)``) if ``None``.
        thread_name_prefix: Worker threads are named ``<prefix>_<n>``.

    Raises:
        ValueError: ``max_workers`` is not positive.
    """

    def __init__(
        self, max_workers: int | None = None, thread_name_prefix: str = "aiothreads"
    ) -> None:
        # ThreadPoolExecutor.__init__ is not called: this class keeps its own
        # queue and threads and overrides every method that would use theirs.
        if max_workers is None:
            max_workers = min(32, (_usable_cpus() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix
        self._calls: SimpleQueue[Work | None] = SimpleQueue()
        # One token per idle worker; deque append/pop are atomic, so taking a
        # token needs no lock on the submitting side.
        self._idle: deque[None] = deque()
        self._workers: list[threading.Thread] = []
        self._lifecycle = threading.Lock()
        self._closed = False
        self._on_shutdown: Callable[[], None] | None = None
        # Workers hold the queue, not the pool: a pool nobody references any
        # more (say, replaced as a loop's default executor) stops its workers.
        self.stop_workers = weakref.finalize(self, _stop, self._calls, self._workers)
        with _live_lock:
            _pools.add(self)

    def enqueue(self, call: Work) -> None:
        """Queue ``call`` for a worker, which will call its ``run()``.

        Raises:
            RuntimeError: the pool was shut down.
        """
        if self._closed:
            raise RuntimeError("cannot schedule new calls after shutdown")
        if _exiting:
            raise RuntimeError("cannot schedule new calls after interpreter shutdown")
        self._calls.put(call)
        idle = self._idle
        if idle:
            try:
                idle.pop()
            except IndexError:  # another submitting thread took the last one
                pass
            else:
                return
        self._add_worker()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` and return a ``concurrent.futures.Future``."""
        future: Future[T] = Future()
        self.enqueue(_Submitted(future, fn, args, kwargs))
        return future

    def _add_worker(self) -> None:
        """Start a worker, unless the pool is full or shut down (a racing ``enqueue``)."""
        with self._lifecycle:
            if self._closed or len(self._workers) >= self._max_workers:
                return
            name = f"{self._thread_name_prefix}_{len(self._workers)}"
            worker = threading.Thread(
                target=_work, args=(self._calls, self._idle), name=name, daemon=True
            )
            with _live_lock:
                _live_workers.add(worker)
            worker.start()
            self._workers.append(worker)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers once the queued calls ran (or were dropped).

        Args:
            wait: Block until every worker has exited.
            cancel_futures: Drop the calls that no worker has started yet;
                futures from ``submit`` among them are cancelled.
        """
        with self._lifecycle:
            self._closed = True
            workers = list(self._workers)
            on_shutdown, self._on_shutdown = self._on_shutdown, None
        if on_shutdown is not None:
            on_shutdown()
        if cancel_futures:
            while not self._calls.empty():
                dropped = self._calls.get_nowait()
                if dropped is not None:
                    dropped.abandon()
        self.stop_workers()
        if wait:
            for worker in workers:
                worker.join()

    def call_on_shutdown(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, in the first ``shutdown`` (before it waits)."""
        self._on_shutdown = callback

    def __repr__(self) -> str:
        state = "shut down" if self._closed else "running"
        return f"<WorkerPool {state} workers={len(self._workers)}/{self._max_workers}>"


def _usable_cpus() -> int | None:
    """Count the CPUs this process may use as ``ThreadPoolExecutor`` does (3.13+: affinity)."""
    count: Callable[[], int | None] = getattr(os, "process_cpu_count", os.cpu_count)
    return count()


def _work(calls: SimpleQueue[Work | None], idle: deque[None]) -> None:
    try:
        while True:
            call = calls.get()
            if call is None:  # the stop marker
                return
            call.run()
            del call
            idle.append(None)
    finally:
        with _live_lock:
            _live_workers.discard(threading.current_thread())


# Workers are daemon threads, so an idle pool never holds the interpreter up;
# at exit, like the standard pool, work already queued or running finishes.
_live_workers: set[threading.Thread] = set()
_live_lock = threading.Lock()
_exiting = False


@atexit.register
def _finish_work_at_exit() -> None:
    global _exiting  # noqa: PLW0603 - set once, at interpreter exit
    _exiting = True
    with _live_lock:
        workers = list(_live_workers)
        pools = list(_pools)
    for pool in pools:
        pool.stop_workers()
    for worker in workers:
        worker.join()


_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _stop(calls: SimpleQueue[Work | None], workers: list[threading.Thread]) -> None:
    for _ in workers:
        calls.put(None)


class _Submitted:
    """A ``submit()`` call: runs the function and settles its concurrent future."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def abandon(self) -> None:
        """Cancel the future: the call never ran."""
        self.future.cancel()

    def run(self) -> None:
        """Run the function and settle the future with its outcome."""
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)
