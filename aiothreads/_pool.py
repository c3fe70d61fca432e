"""The worker pool aiothreads installs as an asyncio loop's default executor.

When a threaded call runs on an asyncio event loop that has no default
executor yet, aiothreads installs a ``WorkerPool`` with
``loop.set_default_executor()``. It is a ``ThreadPoolExecutor`` in every way
asyncio and other code rely on (``submit``, ``shutdown``, ``map``, the same
default size), and it also accepts aiothreads' own calls without creating a
``concurrent.futures.Future`` for each. ``asyncio.run()`` shuts it down and
waits for it like any default executor.

Workers start on demand, up to the maximum, and a worker that has had no call
for ``idle_timeout`` seconds (10 by default) exits, taking its thread-local
state with it; ``idle_timeout=None`` keeps every worker until shutdown, as
aiothreads 1.1 and ``ThreadPoolExecutor`` do. Idle workers share one queue, so
a call goes to any of them: a steady trickle of calls, at least one per worker
per ``idle_timeout``, keeps them all (as Java's ``keepAliveTime`` does).

A call the pool accepted runs, as in ``ThreadPoolExecutor``, unless
``shutdown(cancel_futures=True)`` dropped it (its ``abandon()``) before a
worker took it. A call submitted from another thread just as the pool shuts
down is accepted and runs, or is refused with ``RuntimeError``: it is never
left queued, nor dropped unasked.

A default executor that the application installed itself is always used as
it is; so is every executor on loops that do not expose theirs (uvloop).
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol, TypeVar

from ._outcomes import Refusal
from ._pool_state import DEFAULT_POOL, count_refusal, pools_changed, watch_own
from ._validate import check_idle_timeout

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["IDLE_TIMEOUT", "WorkerPool"]

T = TypeVar("T")

IDLE_TIMEOUT: Final = 10.0
"""Seconds without a call after which a worker exits, by default (as in anyio and trio)."""


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
        thread_name_prefix: Worker threads are named ``<prefix>_<n>``, numbered
            in the order they started.
        idle_timeout: Seconds a worker may go without a call before it exits
            (the pool starts another when calls need it); ``None`` keeps
            every worker until shutdown.

    Raises:
        ValueError: ``max_workers`` or ``idle_timeout`` is not positive.
        TypeError: ``idle_timeout`` is neither a number nor ``None``.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "aiothreads",
        *,
        idle_timeout: float | None = IDLE_TIMEOUT,
    ) -> None:
        # ThreadPoolExecutor.__init__ is not called: this class keeps its own
        # queue and threads and overrides every method that would use theirs.
        if max_workers is None:
            max_workers = min(32, (_usable_cpus() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        idle_timeout = check_idle_timeout(idle_timeout)
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix
        self._calls: SimpleQueue[Work | None] = SimpleQueue()
        # One token per idle worker that no queued call counts on yet: a worker
        # adds one as it starts waiting, a submitter takes one for its call.
        # They are anonymous and list append/pop are atomic, so the submitting
        # side needs no lock; how each worker keeps the count right whichever
        # call it takes is in ``_work``.
        self._free: list[None] = []
        self._workers: list[threading.Thread] = []
        self._numbers = itertools.count()
        self._lifecycle = threading.Lock()
        self._crew = _Crew(self._calls, self._free, self._workers, self._lifecycle, idle_timeout)
        self._crew.name = self.pool_name
        self._crew.start_spare = weakref.WeakMethod(self._add_worker)
        self._closed = False
        self._on_shutdown: Callable[[], None] | None = None
        # Workers hold the queue, not the pool: a pool nobody references any
        # more (say, replaced as a loop's default executor) stops its workers.
        self.stop_workers = weakref.finalize(self, _stop, self._calls, self._workers)
        with _live_lock:
            _pools.add(self)
        watch_own(self)

    def enqueue(self, call: Work) -> None:
        """Queue ``call`` for a worker, which will call its ``run()``.

        Raises:
            RuntimeError: the pool was shut down.
        """
        if self._closed or _exiting:
            self._refuse()
        free = self._free
        if free:  # looked at first: a busy pool raises no IndexError for each call
            try:
                free.pop()  # an idle worker will take it (or another, in its place)
            except IndexError:  # another submitter (or a retiring worker) took the last one
                pass
            else:
                self._calls.put(call)
                # Shut down since, and no worker left to take it behind the stop markers?
                closed_since: bool = self._closed or _exiting  # mypy sees but one thread
                if closed_since and self._crew.take_back_if_stranded(call):
                    self._refuse()
                return
        if not self._add_worker(call):
            self._refuse()  # shut down since the check, before the call was queued

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` and return a ``concurrent.futures.Future``."""
        future: Future[T] = Future()
        self.enqueue(_Submitted(future, fn, args, kwargs))
        return future

    def _refuse(self) -> NoReturn:
        count_refusal(self.pool_name, Refusal.SHUT_DOWN)
        if self._closed:
            raise RuntimeError("cannot schedule new calls after shutdown")
        raise RuntimeError("cannot schedule new calls after interpreter shutdown")

    def _add_worker(self, first: Work | None = None) -> bool:
        """Start a worker that runs ``first`` (if any) before it waits for calls.

        With no room for one, ``first`` is queued for the next worker that
        ends a call. Returns ``False``, having done nothing, if the pool was
        shut down (a racing ``enqueue``).
        """
        with self._lifecycle:
            if self._closed or _exiting:
                return False
            if len(self._workers) >= self._max_workers:
                if first is not None:
                    self._calls.put(_Unclaimed(first))
                return True
            name = f"{self._thread_name_prefix}_{next(self._numbers)}"
            worker = threading.Thread(
                target=_work, args=(self._crew, first), name=name, daemon=True
            )
            with _live_lock:
                _live_workers.add(worker)
            worker.start()
            self._workers.append(worker)
            self._crew.live += 1
            return True

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
        pools_changed()  # its maximum no longer counts
        if cancel_futures:
            self._crew.drop_stranded = True
            dropped, markers = _take_queued(self._calls)
            for _ in range(markers):  # an earlier shutdown's: the workers still need them
                self._calls.put(None)
            self._crew.abandon(dropped)
        self.stop_workers()
        if wait:
            for worker in workers:
                worker.join()

    @property
    def pool_name(self) -> str:
        """The ``pool`` label of its metrics: ``default`` unless given a thread-name prefix."""
        prefix = self._thread_name_prefix
        return prefix if prefix and prefix != "aiothreads" else DEFAULT_POOL

    def pool_threads(self) -> tuple[list[threading.Thread], int, int, int, bool]:
        """Return the live workers, the idle ones, the maximum, the queue, and if shut down.

        Idle workers are those not running a call now.
        """
        with self._lifecycle:
            workers = [worker for worker in self._workers if worker.is_alive()]
        working = self._crew.working
        idle = sum(1 for worker in workers if worker not in working)
        return workers, idle, self._max_workers, self._calls.qsize(), self._closed

    @property
    def idle_timeout(self) -> float | None:
        """Seconds a worker may go without a call before it exits; ``None``: never."""
        return self._crew.idle_timeout

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


class _Crew:
    """What a pool shares with its workers (never the pool itself): the queue, and who is left.

    A call can be queued just as the pool shuts down, behind the workers'
    stop markers, where no worker will take it. The last worker to stop runs
    whatever is queued then (drops it, if the shutdown dropped the queued
    calls); a thread that queues a call once none is left takes it back and
    refuses it. Both happen under ``lock`` (the pool's lifecycle lock), so
    every call is run, dropped or refused, once.

    ``free`` holds a token per idle worker that no queued call counts on:
    ``len(free)`` is the number of workers waiting for a call less the calls
    queued for them. A worker idle for ``idle_timeout`` leaves only by taking
    a token (see ``retire``), so a queued call always has a worker to come.
    That number can fall below zero for a moment: ``owed`` holds the tokens
    taken that no worker had given yet (see ``took_unclaimed``), which the next
    tokens given pay back (see ``give``).
    """

    __slots__ = (
        "calls",
        "drop_stranded",
        "free",
        "idle_timeout",
        "live",
        "lock",
        "name",
        "owed",
        "start_spare",
        "workers",
        "working",
    )

    def __init__(
        self,
        calls: SimpleQueue[Work | None],
        free: list[None],
        workers: list[threading.Thread],
        lock: threading.Lock,
        idle_timeout: float | None,
    ) -> None:
        self.calls = calls
        self.free = free
        self.owed: list[None] = []
        self.workers = workers
        self.lock = lock
        self.idle_timeout = idle_timeout
        self.working: set[threading.Thread] = set()
        """Workers running a call now."""
        self.name = DEFAULT_POOL
        """The pool's ``pool`` label, under which it counts the calls it drops."""
        self.live = 0
        """Workers started and not stopped, changed under ``lock``."""
        self.drop_stranded = False
        """Whether calls left queued behind the stop markers are dropped (else run)."""
        self.start_spare: Callable[[], Callable[[], bool] | None] = lambda: None
        """The pool's way to start a worker with no call of its own (weakly held)."""

    def retire(self, worker: threading.Thread) -> bool:
        """Count out ``worker``, idle for ``idle_timeout``, unless a call counts on it.

        It leaves with a token: while none is left, or a call is queued, every
        idle worker may be needed, and it stays (returns ``False``).
        """
        with self.lock:
            if not self.calls.empty():
                return False
            try:
                self.free.pop()
            except IndexError:  # a submitter took the last token: its call is coming
                return False
            self.workers.remove(worker)
            self.live -= 1  # with the removal: a submitter after it sees no worker left
            return True

    def took_unclaimed(self) -> None:
        """Balance the tokens for a waiting worker that took a call queued without one.

        Its own token stays in ``free`` while it runs that call: take one out.
        Should a submitter have taken the last one meanwhile, its call waits
        for a worker that is not coming: the token is owed, and a worker is
        started for that call if the pool has room. Whichever worker takes the
        call, or starts waiting, first pays the debt instead of giving a token.
        """
        try:
            self.free.pop()
        except IndexError:
            self.owed.append(None)
            start = self.start_spare()
            if start is not None:
                start()

    def give(self) -> None:
        """Give a token for a worker that waits (or will), or pay back one owed."""
        if self.owed:
            try:
                self.owed.pop()
            except IndexError:  # paid by another worker between the look and the pop
                pass
            else:
                return
        self.free.append(None)

    def take_back_if_stranded(self, call: Work) -> bool:
        """Take ``call`` out of the queue if no worker is left to run it; whether it was.

        Called by the thread that queued ``call`` and then found the pool shut
        down. Calls other threads queued stay, for them to take back.
        """
        with self.lock:
            if self.live != 0:
                return False  # the last worker to stop will find it
            queued = _take_queued(self.calls)[0]
            for other in queued:
                if other is not call:
                    self.calls.put(other)
        return any(taken is call for taken in queued)

    def worker_left(self, stopped: bool) -> None:
        """Count a worker out; the last one to stop runs (or drops) what is left queued."""
        with self.lock:
            self.live -= 1
            stranded = _take_queued(self.calls)[0] if stopped and self.live == 0 else []
        if self.drop_stranded:
            self.abandon(stranded)
            return
        me = threading.current_thread()
        for call in stranded:
            self.working.add(me)
            try:
                call.run()  # an ``_Unclaimed`` runs its call
            finally:
                self.working.discard(me)

    def abandon(self, calls: list[Work]) -> None:
        """Settle ``calls`` as dropped unrun, and count them (called outside ``lock``)."""
        for call in calls:
            count_refusal(self.name, Refusal.DROPPED)
            call.abandon()


class _Unclaimed:
    """A call queued with no token taken for it (the pool was full): any worker runs it.

    Workers unwrap it; so does dropping it.
    """

    __slots__ = ("call",)

    def __init__(self, call: Work) -> None:
        self.call = call

    def run(self) -> None:
        self.call.run()

    def abandon(self) -> None:
        self.call.abandon()


def _take_queued(calls: SimpleQueue[Work | None]) -> tuple[list[Work], int]:
    """Empty ``calls``; return the calls taken and how many stop markers were among them."""
    taken: list[Work] = []
    markers = 0
    while True:
        try:
            call = calls.get_nowait()
        except Empty:  # a worker may take the last one between a check and a get
            return taken, markers
        if call is None:
            markers += 1
        else:
            taken.append(call)


_RETIRED: Final = _Unclaimed(None)  # type: ignore[arg-type]  # a marker, never run
"""What ``_wait_for_a_call`` returns for a worker that retired."""


def _wait_for_a_call(crew: _Crew, me: threading.Thread) -> Work | None:
    """Wait, listed as idle, for the next call (``None``: stop; ``_RETIRED``: idle too long)."""
    while True:
        try:
            call = crew.calls.get(True, crew.idle_timeout)  # never times out for ``None``
        except Empty:
            if crew.retire(me):
                return _RETIRED
            continue
        if type(call) is _Unclaimed:
            crew.took_unclaimed()
            return call.call
        return call


def _work(crew: _Crew, first: Work | None) -> None:
    """Run ``first``, then the calls of ``crew``'s queue, until stopped or retired.

    Tokens (``crew.free``) stay right whichever worker takes which call: a
    submitter took one for each call it queued (but those wrapped in
    ``_Unclaimed``). A waiting worker added its own: taking a claimed call,
    the submitter's took its place; taking an unclaimed one, it takes one out
    (``took_unclaimed``). A worker that ends a call runs what is queued before
    it waits again, adding no token: for each claimed call it takes there, it
    puts back the token of the waiting worker the call was meant for.
    """
    calls, give = crew.calls, crew.give
    get, empty = calls.get, calls.empty  # looked up once: cheaper in the loop
    working = crew.working
    me = threading.current_thread()
    stopped = retired = False
    call: Work | None = first
    try:
        while True:
            while call is not None:
                working.add(me)
                try:
                    call.run()
                finally:
                    working.discard(me)
                del call
                # A call queued while this one ran: run it now, waiting no more
                # than it. Were this worker to wait first, it would count as
                # idle while it runs it, and a call that waits on it would wait
                # for it instead of getting a new thread.
                if empty():
                    break
                try:
                    call = get(False)
                except Empty:  # another worker took it between the two looks
                    break
                if call is None:  # the stop marker
                    stopped = True
                    return
                if type(call) is _Unclaimed:
                    call = call.call
                else:
                    give()  # the waiting worker it was meant for waits on (or took another)
            give()
            waited = _wait_for_a_call(crew, me)
            if waited is _RETIRED:
                retired = True
                return
            if waited is None:  # the stop marker
                stopped = True
                return
            call = waited
    finally:
        if not retired:  # a retired worker was counted out already
            crew.worker_left(stopped)
        with _live_lock:
            _live_workers.discard(me)


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
