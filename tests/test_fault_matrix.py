"""Fault matrix: every decorator, on every kind of executor, faulted at every stage of a call.

Axes:

* where the work runs: the loop's default executor (aiothreads' own pool on
  asyncio's loops, ``loop.run_in_executor`` on uvloop), a ``ThreadPoolExecutor``,
  an executor whose ``submit()`` returns an ``asyncio.Future`` (like aiomisc's
  pool), a ``ProcessPoolExecutor``, an executor that refuses work and one that
  drops it; the ``*_separate`` decorators start a thread of their own instead;
* the decorator: ``threaded``, ``threaded_iterable``, ``threaded_separate``,
  ``threaded_iterable_separate``, each without and with ``limit=``;
* the fault: refused at submit, dropped while queued, executor shut down while
  the call runs, caller cancelled before the work started (queued, or waiting for
  a place under the limit), caller cancelled after it started, loop closed while
  the call runs.

Every cell checks the same contract:

1. The caller sees one clear outcome: the result; ``ExecutorRefused`` (with the
   executor's plain ``RuntimeError`` as ``__cause__`` when ``submit()`` raised
   one) when the executor refused or dropped the call; the exception of a type
   of its own that ``submit()`` raised, as it is; the exception an
   asyncio-future executor set; or ``CancelledError`` when the caller
   cancelled. ``async for`` over a refused or dropped generator raises instead
   of waiting forever. Nothing hangs: every wait is guarded, so a hang fails
   the cell within seconds.
2. Nothing stays counted or held once the work is released: the limiter has no
   place taken and nobody waiting; the queued, in-flight, active-iterator and
   separate-thread gauges are back to 0; every call is counted exactly once in
   ``aiothreads_calls_finished_total`` with the fitting outcome, and ends exactly
   one span with that outcome.
3. No exception goes unretrieved, nothing is logged as an error, no thread is
   left running (see also the fixtures in ``conftest.py``).

A caller's cancellation before the work started also reaches a foreign
executor: its queued future is cancelled, so the work never takes a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import multiprocessing
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from aiothreads import (
    CapacityLimiter,
    ExecutorRefused,
    instrumentation,
    is_cancelled,
    runs_in_threads,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
)
from aiothreads._pool import WorkerPool
from tests.waiting import turns_until

T = TypeVar("T")
E = TypeVar("E", bound=Executor)

HANG_GUARD = 5.0
"""Seconds any single wait may take. Only a safety net: a cell that needs it fails."""

VALUE = 21
COUNT = 3


# -- the work under test ---------------------------------------------------------


class Work:
    """The blocking code behind a decorated function, with events that pin down where it is.

    ``started`` is set as the work begins; it then blocks until ``release`` is set
    (a generator first hands over one item, so its consumer is not left pending).
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0
        self.returned = False
        self.saw_cancelled: bool | None = None

    def function(self, value: int) -> int:
        self.runs += 1
        self.started.set()
        self.release.wait(HANG_GUARD)
        self.saw_cancelled = is_cancelled()
        self.returned = True
        return value * 2

    def generator(self, count: int) -> Generator[int, None, None]:
        self.runs += 1
        self.started.set()
        yield 0
        self.release.wait(HANG_GUARD)
        self.saw_cancelled = is_cancelled()
        yield from range(1, count)
        self.returned = True


def report_then_wait(port: int) -> None:
    """In a worker process: tell the test on ``port`` that it runs, then wait for its word."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as connection:
        connection.sendall(b"running")
        connection.recv(1)


def report(port: int, word: bytes) -> None:
    """In a worker process: tell the test on ``port`` that this call ran, by ``word``."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as connection:
        connection.sendall(word)


def multiply(a: int, b: int) -> int:
    """Module level, so that a process pool can pickle it by reference."""
    return a * b


def divide(a: int, b: int) -> float:
    """Module level, like ``multiply``; fails in the worker process when ``b`` is 0."""
    return a / b


class Blocker:
    """Occupies an executor's only worker until released, so that later work queues."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.future: asyncio.Future[None] | None = None

    def __call__(self) -> None:
        self.started.set()
        self.release.wait(HANG_GUARD)

    async def finish(self) -> None:
        """Release it and collect its outcome (an executor shut down may have failed it)."""
        self.release.set()
        assert self.future is not None
        await asyncio.wait_for(asyncio.gather(self.future, return_exceptions=True), HANG_GUARD)


# -- executors --------------------------------------------------------------------


class RecordingThreadPool(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` that remembers the futures it handed out."""

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__(max_workers, thread_name_prefix="recording-pool")
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


class PoolClosed(RuntimeError):
    """What :class:`LoopFutureExecutor` fails its unfinished futures with when it shuts down."""


_LoopWork = tuple["asyncio.Future[Any]", "Callable[..., Any]", "tuple[Any, ...]", "dict[str, Any]"]


@runs_in_threads
class LoopFutureExecutor(Executor):
    """An executor whose ``submit()`` returns an ``asyncio.Future``, like aiomisc's pool.

    Work runs on threads of its own; each outcome reaches the future's loop through
    ``call_soon_threadsafe``. ``shutdown()`` fails every future not settled yet with
    :class:`PoolClosed`, running or not; work whose future is already done
    (cancelled, or failed by the shutdown) never runs.
    """

    def __init__(self, workers: int = 1) -> None:
        self.futures: list[asyncio.Future[Any]] = []
        self._running: set[asyncio.Future[Any]] = set()
        self._queue: queue.SimpleQueue[_LoopWork | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shut_down = False
        self._threads = [
            threading.Thread(target=self._work, name=f"loop-future-pool_{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(  # type: ignore[override]
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: asyncio.Future[T] = loop.create_future()
            self.futures.append(future)
            self._queue.put((future, fn, args, kwargs))
        return future

    def cancel_queued(self) -> None:
        """Cancel the futures of the work no thread has started (call on the loop's thread)."""
        with self._lock:
            queued = [f for f in self.futures if not f.done() and f not in self._running]
        for future in queued:
            future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            first = not self._shut_down
            self._shut_down = True
            unfinished = [future for future in self.futures if not future.done()]
        if first:
            for _ in self._threads:
                self._queue.put(None)
        for future in unfinished:
            _settle_on_its_loop(future, PoolClosed("the pool was shut down"), failed=True)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            with self._lock:
                if future.done():
                    continue
                self._running.add(future)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                _settle_on_its_loop(future, exc, failed=True)
            else:
                _settle_on_its_loop(future, result, failed=False)


def _settle_on_its_loop(future: asyncio.Future[Any], outcome: Any, *, failed: bool) -> None:
    def settle() -> None:
        if future.done():
            return
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    loop = future.get_loop()
    if asyncio._get_running_loop() is loop:
        settle()
        return
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
        loop.call_soon_threadsafe(settle)


@runs_in_threads
class RefusingExecutor(Executor):
    """An executor whose ``submit()`` always raises ``error``."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        raise self.error("this executor takes no work")


@runs_in_threads
class DroppingExecutor(Executor):
    """Accepts work and never runs it: cancels its future at once, or on :meth:`drop`."""

    def __init__(self, *, at_once: bool) -> None:
        self.at_once = at_once
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self.futures.append(future)
        if self.at_once:
            future.cancel()
        return future

    def drop(self) -> None:
        for future in self.futures:
            future.cancel()


class Pool(enum.Enum):
    """Where a pooled decorator runs its calls."""

    DEFAULT = "default"  # no executor=: the loop's default executor
    THREAD_POOL = "thread_pool"  # executor=ThreadPoolExecutor
    LOOP_FUTURE = "loop_future"  # executor=LoopFutureExecutor (submit returns asyncio futures)


# -- decorators -------------------------------------------------------------------


@dataclass(frozen=True)
class Decorator:
    name: str
    iterable: bool
    separate: bool

    def apply(
        self, work: Work, limiter: CapacityLimiter | None, executor: Executor | None
    ) -> Callable[..., Any]:
        if self.separate:
            assert executor is None, "the separate decorators take no executor"
            if self.iterable:
                return threaded_iterable_separate(work.generator, limit=limiter)
            return threaded_separate(work.function, limit=limiter)
        if self.iterable:
            return threaded_iterable(work.generator, limit=limiter, executor=executor)
        return threaded(limit=limiter, executor=executor)(work.function)

    @property
    def result(self) -> object:
        return list(range(COUNT)) if self.iterable else VALUE * 2


THREADED = Decorator("threaded", iterable=False, separate=False)
THREADED_ITERABLE = Decorator("threaded_iterable", iterable=True, separate=False)
THREADED_SEPARATE = Decorator("threaded_separate", iterable=False, separate=True)
THREADED_ITERABLE_SEPARATE = Decorator("threaded_iterable_separate", iterable=True, separate=True)
POOLED = [THREADED, THREADED_ITERABLE]
SEPARATE = [THREADED_SEPARATE, THREADED_ITERABLE_SEPARATE]


def on_pools(pools: list[Pool], *, separate: bool = False) -> list[Any]:
    """Parameters ``(decorator, pool)``: the pooled decorators on ``pools``, then the separate."""
    cells = [
        pytest.param(decorator, pool, id=f"{decorator.name}-{pool.value}")
        for decorator in POOLED
        for pool in pools
    ]
    if separate:
        cells += [pytest.param(decorator, None, id=decorator.name) for decorator in SEPARATE]
    return cells


LIMITS = pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "limit=1"])
RUNNING_CELLS = on_pools(list(Pool), separate=True)


# -- callers ----------------------------------------------------------------------


class Call:
    """One call of a decorated function, awaited (or iterated) by a caller task of its own.

    ``entered`` is set just before the caller first suspends: once a task waiting
    for it resumes, the call was submitted, or waits for a place under its limit
    (the task that waits for the place was scheduled before that wake-up).
    """

    def __init__(self, decorated: Callable[..., Any], decorator: Decorator) -> None:
        self.entered = asyncio.Event()
        caller = self._iterate(decorated) if decorator.iterable else self._await(decorated)
        self.task: asyncio.Task[object] = asyncio.get_running_loop().create_task(caller)

    async def _await(self, decorated: Callable[..., Any]) -> object:
        pending = decorated(VALUE)
        self.entered.set()
        return await pending

    async def _iterate(self, decorated: Callable[..., Any]) -> object:
        stream = decorated(COUNT)
        self.entered.set()
        return [item async for item in stream]

    def cancel(self) -> None:
        self.task.cancel()

    async def outcome(self) -> object:
        """The caller's result, or the exception it ended with (``CancelledError`` included)."""
        return await outcome_of(self.task)


async def outcome_of(future: asyncio.Future[Any]) -> object:
    """``future``'s result, or the exception it ended with; fail if it takes too long."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), HANG_GUARD)
    except asyncio.TimeoutError:
        pytest.fail(f"the caller was still waiting after {HANG_GUARD} s: the call hangs")
    except (Exception, asyncio.CancelledError) as exc:
        return exc


async def in_own_thread(function: Callable[[], T]) -> T:
    """Run a blocking helper on a thread of its own, never on an executor under test."""
    with ThreadPoolExecutor(1, thread_name_prefix="test-helper") as helper:
        return await asyncio.get_running_loop().run_in_executor(helper, function)


async def until(event: threading.Event, what: str) -> None:
    assert await in_own_thread(functools.partial(event.wait, HANG_GUARD)), (
        f"{what} did not happen within {HANG_GUARD} s"
    )


# -- the books ----------------------------------------------------------------------

GAUGES = {
    "aiothreads_calls_queued": "calls queued",
    "aiothreads_calls_in_flight": "calls in flight",
    "aiothreads_iterators_active": "iterators active",
    "aiothreads_separate_threads_alive": "separate threads alive",
}


def settled(**finished: int) -> dict[str, object]:
    """The books once everything ended: only the finished calls, by outcome, remain."""
    return {
        "calls finished": finished,
        "spans ended": finished,
        **dict.fromkeys(GAUGES.values(), 0.0),
        "limiter places taken": 0,
        "limiter waiters": 0,
    }


def read_metrics(registry: CollectorRegistry) -> dict[str, float]:
    """The finished-call counts (``finished:<outcome>``) and the gauges, summed over labels."""
    totals: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "aiothreads_calls_finished_total":
                key = f"finished:{sample.labels['outcome']}"
            elif sample.name in GAUGES:
                key = GAUGES[sample.name]
            else:
                continue
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


# -- the harness --------------------------------------------------------------------


class Harness:
    """Creates the pieces of a cell, and tears them down so that nothing can hang."""

    def __init__(self, registry: CollectorRegistry, spans: InMemorySpanExporter) -> None:
        self.registry = registry
        self.spans = spans
        self.baseline = read_metrics(registry)
        self.spans_before = len(spans.get_finished_spans())
        self.threads_before = set(threading.enumerate())
        self.releases: list[threading.Event] = []
        self.executors: list[Executor] = []
        self.default_pool: WorkerPool | None = None

    def work(self) -> Work:
        work = Work()
        self.releases.append(work.release)
        return work

    def track(self, executor: E) -> E:
        self.executors.append(executor)
        return executor

    async def executor(self, pool: Pool | None, *, one_worker: bool = False) -> Executor | None:
        """The ``executor=`` argument for ``pool``.

        With ``one_worker`` the default executor becomes aiothreads' pool with a
        single worker, so that a blocker makes later calls queue.
        """
        if pool is None:
            return None
        if pool is Pool.DEFAULT:
            if one_worker:
                self.default_pool = WorkerPool(max_workers=1)
                asyncio.get_running_loop().set_default_executor(self.default_pool)
            return None
        if pool is Pool.THREAD_POOL:
            return self.track(RecordingThreadPool(1))
        return self.track(LoopFutureExecutor(1))

    async def block(self, executor: Executor | None) -> Blocker:
        """Occupy the only worker of ``executor`` (``None``: the loop's default one)."""
        blocker = Blocker()
        self.releases.append(blocker.release)
        blocker.future = asyncio.get_running_loop().run_in_executor(executor, blocker)
        await until(blocker.started, "the blocker starting")
        return blocker

    async def call(self, decorated: Callable[..., Any], decorator: Decorator) -> Call:
        call = Call(decorated, decorator)
        await asyncio.wait_for(call.entered.wait(), HANG_GUARD)
        return call

    def release_all(self) -> None:
        for release in self.releases:
            release.set()

    async def settle(self) -> None:
        """Release all work and wait until every thread the cell started has ended.

        Shutting the executors down (the loop's default one included) waits for
        the work they hold; with every thread gone, every call settled its books.
        """
        self.release_all()
        await asyncio.wait_for(asyncio.get_running_loop().shutdown_default_executor(), HANG_GUARD)
        for executor in self.executors:
            await in_own_thread(functools.partial(executor.shutdown, wait=True))
        running = await in_own_thread(self._join_new_threads)
        assert not running, f"threads still running once their work was released: {running}"

    def settle_without_loop(self) -> None:
        self.release_all()
        for executor in self.executors:
            executor.shutdown(wait=True)
        running = self._join_new_threads()
        assert not running, f"threads still running once their work was released: {running}"

    def _join_new_threads(self) -> list[str]:
        deadline = time.monotonic() + HANG_GUARD
        started = [
            thread
            for thread in threading.enumerate()
            if thread not in self.threads_before and thread is not threading.current_thread()
        ]
        for thread in started:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in started if thread.is_alive()]

    def books(self, limiter: CapacityLimiter | None) -> dict[str, object]:
        """What the cell changed: calls finished by outcome, gauges, and the limiter's state."""
        now = read_metrics(self.registry)
        change = {key: now.get(key, 0.0) - self.baseline.get(key, 0.0) for key in now}
        finished = {
            key.removeprefix("finished:"): int(value)
            for key, value in change.items()
            if key.startswith("finished:") and value
        }
        ended = Counter(
            str((span.attributes or {}).get("aiothreads.outcome"))
            for span in self.spans.get_finished_spans()[self.spans_before :]
        )
        return {
            "calls finished": finished,
            "spans ended": dict(ended),
            **{name: change.get(name, 0.0) for name in GAUGES.values()},
            "limiter places taken": 0 if limiter is None else limiter.borrowed_tokens,
            "limiter waiters": 0 if limiter is None else limiter.waiting,
        }

    def close(self) -> None:
        self.release_all()
        for executor in self.executors:
            executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def shared_registry() -> CollectorRegistry:
    """One registry for the module: aiothreads keeps every registry it is configured with.

    Each cell measures its books as changes from where it started.
    """
    return CollectorRegistry()


@pytest.fixture(scope="module")
def span_exporter() -> InMemorySpanExporter:
    """Every span the module's cells end, in memory."""
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@pytest.fixture
def registry(
    shared_registry: CollectorRegistry, tracer_provider: TracerProvider
) -> Iterator[CollectorRegistry]:
    """Prometheus metrics and OpenTelemetry spans on for the cell."""
    instrumentation.configure(
        registry=shared_registry,
        tracer_provider=tracer_provider,
        prometheus=True,
        opentelemetry=True,
        structlog=False,
    )
    try:
        yield shared_registry
    finally:
        instrumentation.reset()


@pytest_asyncio.fixture
async def harness(
    registry: CollectorRegistry, span_exporter: InMemorySpanExporter
) -> AsyncIterator[Harness]:
    """For async cells: torn down on the loop, before the loop waits for its executor."""
    harness = Harness(registry, span_exporter)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def loop_free_harness(
    registry: CollectorRegistry, span_exporter: InMemorySpanExporter
) -> Iterator[Harness]:
    """For cells that drive (and close) loops of their own."""
    harness = Harness(registry, span_exporter)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(autouse=True)
def nothing_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a cell if any logger (aiothreads, asyncio, concurrent.futures) reported an error."""
    yield
    errors = [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.get_records("call")
        if record.levelno >= logging.ERROR
    ]
    assert not errors, f"errors were logged: {errors}"


def limiter_for(limited: bool) -> CapacityLimiter | None:
    return CapacityLimiter(1) if limited else None


def assert_refused(outcome: object, cause: type[BaseException] | None = None) -> None:
    assert isinstance(outcome, ExecutorRefused), (
        f"the caller should see ExecutorRefused, it saw {outcome!r}"
    )
    assert isinstance(outcome, RuntimeError)
    if cause is not None:
        assert isinstance(outcome.__cause__, cause), (
            f"ExecutorRefused should be chained to the executor's {cause.__name__}, "
            f"its __cause__ is {outcome.__cause__!r}"
        )


def assert_cancelled(outcome: object) -> None:
    assert isinstance(outcome, asyncio.CancelledError), (
        f"the cancelled caller should see CancelledError, it saw {outcome!r}"
    )


# -- 0. no fault: the baseline every other cell is measured against ---------------------


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize(("decorator", "pool"), RUNNING_CELLS)
async def test_an_undisturbed_call_returns_its_result_and_settles_its_books(
    harness: Harness, decorator: Decorator, pool: Pool | None, limited: bool
) -> None:
    work, limiter = harness.work(), limiter_for(limited)
    work.release.set()
    decorated = decorator.apply(work, limiter, await harness.executor(pool))

    call = await harness.call(decorated, decorator)

    assert await call.outcome() == decorator.result
    await harness.settle()
    assert harness.books(limiter) == settled(ok=1)


# -- 1. refused at submit ---------------------------------------------------------------


def refuse_new_aiothreads_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make starting aiothreads' own threads fail as it does when no thread can be had."""
    start = threading.Thread.start

    def start_unless_aiothreads(thread: threading.Thread) -> None:
        if thread.name.startswith("aiothreads-"):
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_unless_aiothreads)


async def refusing_default_executor(harness: Harness, _: pytest.MonkeyPatch) -> Executor | None:
    # Once the loop shut its default executor down (asyncio.run does on its way out),
    # neither aiothreads' pool nor loop.run_in_executor(None, ...) takes work.
    await asyncio.get_running_loop().shutdown_default_executor()
    return None


async def refusing_thread_pool(harness: Harness, _: pytest.MonkeyPatch) -> Executor | None:
    executor = harness.track(ThreadPoolExecutor(1))
    executor.shutdown(wait=True)
    return executor


async def refusing_loop_future_pool(harness: Harness, _: pytest.MonkeyPatch) -> Executor | None:
    executor = harness.track(LoopFutureExecutor(1))
    executor.shutdown(wait=True)
    return executor


async def refusing_with_value_error(harness: Harness, _: pytest.MonkeyPatch) -> Executor | None:
    return RefusingExecutor(ValueError)


async def refusing_with_runtime_error(harness: Harness, _: pytest.MonkeyPatch) -> Executor | None:
    return RefusingExecutor(RuntimeError)


async def refusing_with_its_own_runtime_error(
    harness: Harness, _: pytest.MonkeyPatch
) -> Executor | None:
    return RefusingExecutor(PoolClosed)


async def refusing_threads(_: Harness, monkeypatch: pytest.MonkeyPatch) -> Executor | None:
    refuse_new_aiothreads_threads(monkeypatch)
    return None


Refusal = Callable[[Harness, pytest.MonkeyPatch], Awaitable["Executor | None"]]

REFUSALS: list[Any] = [
    pytest.param(decorator, refusal, cause, id=f"{decorator.name}-{name}")
    for decorator in POOLED
    for name, refusal, cause in [
        ("default executor shut down", refusing_default_executor, RuntimeError),
        ("thread pool shut down", refusing_thread_pool, RuntimeError),
        ("loop-future pool shut down", refusing_loop_future_pool, RuntimeError),
        ("submit raises RuntimeError", refusing_with_runtime_error, RuntimeError),
    ]
] + [
    pytest.param(decorator, refusing_threads, RuntimeError, id=f"{decorator.name}-no thread")
    for decorator in SEPARATE
]


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize(("decorator", "refusal", "cause"), REFUSALS)
async def test_a_refused_call_fails_with_executor_refused_chained_to_the_executors_error(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    decorator: Decorator,
    refusal: Refusal,
    cause: type[Exception],
    limited: bool,
) -> None:
    work, limiter = harness.work(), limiter_for(limited)
    executor = await refusal(harness, monkeypatch)
    decorated = decorator.apply(work, limiter, executor)

    call = await harness.call(decorated, decorator)

    outcome = await call.outcome()
    assert_refused(outcome, cause)
    assert str(outcome) == f"the executor refused the call: {outcome.__cause__}"  # type: ignore[attr-defined]
    monkeypatch.undo()
    await harness.settle()
    assert work.runs == 0
    assert harness.books(limiter) == settled(error=1)


OWN_REFUSALS: list[Any] = [
    pytest.param(decorator, refusal, error, id=f"{decorator.name}-{name}")
    for decorator in POOLED
    for name, refusal, error in [
        ("submit raises ValueError", refusing_with_value_error, ValueError),
        ("submit raises its own RuntimeError", refusing_with_its_own_runtime_error, PoolClosed),
    ]
]


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize(("decorator", "refusal", "error"), OWN_REFUSALS)
async def test_an_exception_of_the_executors_own_reaches_the_caller_as_it_is(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    decorator: Decorator,
    refusal: Refusal,
    error: type[Exception],
    limited: bool,
) -> None:
    work, limiter = harness.work(), limiter_for(limited)
    decorated = decorator.apply(work, limiter, await refusal(harness, monkeypatch))

    call = await harness.call(decorated, decorator)

    outcome = await call.outcome()
    assert type(outcome) is error, f"the caller should see {error.__name__}, it saw {outcome!r}"
    assert str(outcome) == "this executor takes no work"
    await harness.settle()
    assert work.runs == 0
    assert harness.books(limiter) == settled(error=1)  # counted as refused all the same


# -- 2. dropped while queued ----------------------------------------------------------------


DROPPED = "the executor dropped the call before it ran (shut down, or cancelled it)"


@dataclass(frozen=True)
class Drop:
    """A way for an executor to give up work it accepted, and what its caller then sees."""

    name: str
    pool: Pool | None  # None: a DroppingExecutor, which needs no blocker
    drop: Callable[[Harness, Executor | None], Awaitable[None]]
    error: type[BaseException]
    message: str | None = None


async def shut_default_pool_down_cancelling(harness: Harness, _: Executor | None) -> None:
    assert harness.default_pool is not None
    shutdown = functools.partial(harness.default_pool.shutdown, wait=False, cancel_futures=True)
    await in_own_thread(shutdown)


async def shut_thread_pool_down_cancelling(_: Harness, executor: Executor | None) -> None:
    assert executor is not None
    await in_own_thread(functools.partial(executor.shutdown, wait=False, cancel_futures=True))


async def shut_loop_future_pool_down(_: Harness, executor: Executor | None) -> None:
    assert isinstance(executor, LoopFutureExecutor)
    executor.shutdown(wait=False)


async def cancel_loop_future_work(_: Harness, executor: Executor | None) -> None:
    assert isinstance(executor, LoopFutureExecutor)
    executor.cancel_queued()


async def drop_from_another_thread(_: Harness, executor: Executor | None) -> None:
    assert isinstance(executor, DroppingExecutor)
    await in_own_thread(executor.drop)


async def dropped_already(_: Harness, executor: Executor | None) -> None:
    pass


DROPS = [
    Drop(
        "default pool shut down, cancel_futures",
        Pool.DEFAULT,
        shut_default_pool_down_cancelling,
        ExecutorRefused,
        "the executor was shut down before the call ran",
    ),
    Drop(
        "thread pool shut down, cancel_futures",
        Pool.THREAD_POOL,
        shut_thread_pool_down_cancelling,
        ExecutorRefused,
        DROPPED,
    ),
    Drop("loop-future pool shut down", Pool.LOOP_FUTURE, shut_loop_future_pool_down, PoolClosed),
    Drop(
        "loop-future pool cancels it",
        Pool.LOOP_FUTURE,
        cancel_loop_future_work,
        ExecutorRefused,
        DROPPED,
    ),
    Drop(
        "executor cancels it later",
        None,
        drop_from_another_thread,
        ExecutorRefused,
        DROPPED,
    ),
    Drop(
        "executor cancels it at once",
        None,
        dropped_already,
        ExecutorRefused,
        DROPPED,
    ),
]


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize("decorator", POOLED, ids=lambda decorator: decorator.name)
@pytest.mark.parametrize("drop", DROPS, ids=lambda drop: drop.name)
async def test_a_call_dropped_before_it_ran_fails_instead_of_waiting_forever(
    harness: Harness, decorator: Decorator, drop: Drop, limited: bool
) -> None:
    work, limiter = harness.work(), limiter_for(limited)
    blocker: Blocker | None = None
    if drop.pool is None:
        executor: Executor | None = DroppingExecutor(at_once=drop.drop is dropped_already)
    else:
        executor = await harness.executor(drop.pool, one_worker=True)
        blocker = await harness.block(executor)
    decorated = decorator.apply(work, limiter, executor)

    call = await harness.call(decorated, decorator)
    await drop.drop(harness, executor)

    outcome = await call.outcome()
    if drop.error is ExecutorRefused:
        assert_refused(outcome)
        assert str(outcome) == drop.message
    else:
        assert type(outcome) is drop.error, (
            f"the caller should see the executor's own {drop.error.__name__}, it saw {outcome!r}"
        )
    if blocker is not None:
        await blocker.finish()
    await harness.settle()
    assert work.runs == 0
    assert harness.books(limiter) == settled(error=1)


# -- 3. executor shut down while the call runs -------------------------------------------------


async def shut_down_while_running(
    pool: Pool, executor: Executor | None
) -> asyncio.Future[None] | None:
    """Begin shutting ``pool`` down; return what completes with the shutdown, if anything."""
    if pool is Pool.DEFAULT:
        began = asyncio.Event()

        async def shut_down_default() -> None:
            began.set()  # the shutdown proceeds up to its first wait before anyone else runs
            await asyncio.get_running_loop().shutdown_default_executor()

        shutdown = asyncio.ensure_future(shut_down_default())
        await asyncio.wait_for(began.wait(), HANG_GUARD)
        return shutdown
    assert executor is not None
    if pool is Pool.THREAD_POOL:
        await in_own_thread(functools.partial(executor.shutdown, wait=False, cancel_futures=True))
    else:
        executor.shutdown(wait=False)  # fails every unfinished future, the running one's too
    return None


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize(("decorator", "pool"), on_pools(list(Pool)))
async def test_a_running_call_outlives_its_executors_shutdown_and_later_calls_are_refused(
    harness: Harness, decorator: Decorator, pool: Pool, limited: bool
) -> None:
    work, limiter = harness.work(), limiter_for(limited)
    executor = await harness.executor(pool)
    decorated = decorator.apply(work, limiter, executor)
    call = await harness.call(decorated, decorator)
    await until(work.started, "the work starting")

    shutdown = await shut_down_while_running(pool, executor)
    work.release.set()

    assert await call.outcome() == decorator.result
    if shutdown is not None:
        await asyncio.wait_for(shutdown, HANG_GUARD)
    later = await harness.call(decorated, decorator)
    assert_refused(await later.outcome(), RuntimeError)
    await harness.settle()
    assert work.runs == 1
    assert harness.books(limiter) == settled(ok=1, error=1)


# -- 4. caller cancelled before the work started -----------------------------------------------


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize(("decorator", "pool"), on_pools(list(Pool)))
async def test_a_call_cancelled_while_queued_never_runs_and_its_executor_drops_it(
    harness: Harness, decorator: Decorator, pool: Pool, limited: bool
) -> None:
    work, limiter = harness.work(), limiter_for(limited)
    executor = await harness.executor(pool, one_worker=True)
    blocker = await harness.block(executor)
    decorated = decorator.apply(work, limiter, executor)
    call = await harness.call(decorated, decorator)  # queued behind the blocker

    call.cancel()

    assert_cancelled(await call.outcome())
    await blocker.finish()
    await harness.settle()
    assert work.runs == 0
    assert harness.books(limiter) == settled(cancelled=1)
    if isinstance(executor, (RecordingThreadPool, LoopFutureExecutor)):
        queued = executor.futures[-1]  # the blocker's future comes first
        assert queued.cancelled(), (
            f"the caller's cancellation did not reach the {type(executor).__name__}: "
            f"its future for the call ended as {queued!r}, so the work still took a worker"
        )


@pytest.mark.asyncio
@pytest.mark.parametrize("decorator", POOLED + SEPARATE, ids=lambda decorator: decorator.name)
async def test_a_call_cancelled_while_waiting_for_a_place_gives_it_up_and_is_counted(
    harness: Harness, decorator: Decorator
) -> None:
    work, limiter = harness.work(), CapacityLimiter(1)
    decorated = decorator.apply(work, limiter, None)
    holder = await harness.call(decorated, decorator)
    await until(work.started, "the first call starting")
    waiter = await harness.call(decorated, decorator)
    assert limiter.waiting == 1, "the second call should wait for the only place"

    waiter.cancel()

    assert_cancelled(await waiter.outcome())
    assert limiter.waiting == 0
    work.release.set()
    assert await holder.outcome() == decorator.result
    await harness.settle()
    assert work.runs == 1
    assert harness.books(limiter) == settled(ok=1, cancelled=1), (
        "the call cancelled while it waited for a place should be counted once, as cancelled"
    )


# -- 5. caller cancelled after the work started -----------------------------------------------


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize(("decorator", "pool"), RUNNING_CELLS)
async def test_a_call_cancelled_while_running_is_cancelled_for_its_caller_and_its_work(
    harness: Harness, decorator: Decorator, pool: Pool | None, limited: bool
) -> None:
    work, limiter = harness.work(), limiter_for(limited)
    decorated = decorator.apply(work, limiter, await harness.executor(pool))
    call = await harness.call(decorated, decorator)
    await until(work.started, "the work starting")

    call.cancel()

    assert_cancelled(await call.outcome())
    await harness.settle()
    assert work.saw_cancelled is True, "the work should see is_cancelled() once its caller left"
    assert harness.books(limiter) == settled(cancelled=1)


# -- 6. the loop closes while the call runs -------------------------------------------------------


@LIMITS
@pytest.mark.parametrize(("decorator", "pool"), RUNNING_CELLS)
def test_a_call_running_when_its_loop_is_closed_is_dropped_quietly(
    loop_free_harness: Harness,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    decorator: Decorator,
    pool: Pool | None,
    limited: bool,
) -> None:
    harness = loop_free_harness
    work, limiter = harness.work(), limiter_for(limited)
    loop = loop_factory()
    try:
        executor = loop.run_until_complete(harness.executor(pool))
        decorated = decorator.apply(work, limiter, executor)

        async def start() -> object:
            if decorator.iterable:
                stream = decorated(COUNT)
                assert await asyncio.wait_for(stream.__anext__(), HANG_GUARD) == 0
                return stream  # kept: dropping it would stop the generator
            future = decorated(VALUE)
            await until(work.started, "the work starting")
            return future

        running = loop.run_until_complete(start())
    finally:
        loop.close()  # by hand, while the work runs: no shutdown_asyncgens, no executor wait
    work.release.set()

    harness.settle_without_loop()
    books = harness.books(limiter)
    if decorator.iterable:
        # Its consumer is gone with the loop: the generator either ran to its end
        # (items nobody will take) or was stopped when the loop closed.
        assert books in (settled(ok=1), settled(cancelled=1))
        assert work.returned is (books == settled(ok=1))
    else:
        assert work.returned
        assert isinstance(running, asyncio.Future)
        assert not running.done(), "nobody is left to receive the result"
        assert books == settled(ok=1)


# -- 7. process pools -----------------------------------------------------------------------------


class RecordingProcessPool(ProcessPoolExecutor):
    """A process pool that keeps the futures it returned, in order."""

    def __init__(self) -> None:
        super().__init__(1, mp_context=multiprocessing.get_context("spawn"))
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


def process_pool(harness: Harness) -> ProcessPoolExecutor:
    # spawn: fork is unsafe in a process with threads, and deprecated there from 3.12 on
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    harness.track(pool)
    return pool


@pytest.mark.asyncio
@LIMITS
async def test_a_module_level_function_runs_on_a_process_pool(
    harness: Harness, limited: bool
) -> None:
    limiter = limiter_for(limited)
    decorated = threaded(limit=limiter, executor=process_pool(harness))(multiply)

    assert await asyncio.wait_for(decorated(VALUE, 2), HANG_GUARD * 2) == VALUE * 2
    assert await asyncio.wait_for(decorated(VALUE, b=3), HANG_GUARD) == VALUE * 3

    await harness.settle()
    assert harness.books(limiter) == settled(ok=2)


@pytest.mark.asyncio
@LIMITS
async def test_an_error_in_a_process_pool_fails_the_call_with_it(
    harness: Harness, limited: bool
) -> None:
    limiter = limiter_for(limited)
    decorated = threaded(limit=limiter, executor=process_pool(harness))(divide)

    outcome = await asyncio.wait_for(outcome_of(decorated(VALUE, 0)), HANG_GUARD * 2)

    assert isinstance(outcome, ZeroDivisionError)
    await harness.settle()
    assert harness.books(limiter) == settled(error=1)
    (span,) = harness.spans.get_finished_spans()[harness.spans_before :]
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ZeroDivisionError"
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.asyncio
@LIMITS
async def test_a_process_pool_call_cancelled_by_its_caller_is_counted_cancelled(
    harness: Harness, limited: bool
) -> None:
    limiter = limiter_for(limited)
    decorated = threaded(limit=limiter, executor=process_pool(harness))(multiply)
    call = decorated(VALUE, 2)

    call.cancel()  # before its worker process even started: the work is cancelled too

    assert_cancelled(await outcome_of(call))
    await harness.settle()
    assert harness.books(limiter) == settled(cancelled=1)


class WorkerReports:
    """A listening socket worker processes report to; the test holds one running call on it."""

    def __init__(
        self, server: socket.socket, running: asyncio.Future[None], connection: socket.socket
    ) -> None:
        self.server = server
        self.port: int = server.getsockname()[1]
        self.running = running
        self._connection = connection
        self._released = False

    def release(self) -> None:
        """Let the running call end."""
        if not self._released:
            self._released = True
            self._connection.sendall(b"!")

    async def next_word(self, size: int) -> bytes:
        """Wait for the next call to report; return what it sent."""
        connection, _ = await in_own_thread(self.server.accept)
        with connection:
            return await in_own_thread(functools.partial(connection.recv, size))


@contextlib.asynccontextmanager
async def a_call_running_in_a_worker_process(
    decorated: Callable[..., asyncio.Future[None]],
) -> AsyncIterator[WorkerReports]:
    """Start ``decorated(report_then_wait)``; yield once its worker process runs it.

    The call ends on ``release()``, or when the block does.
    """
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(HANG_GUARD * 2)  # a worker process takes a while to start
        running = decorated(report_then_wait)(server.getsockname()[1])
        connection, _ = await in_own_thread(server.accept)
        with connection:
            assert await in_own_thread(functools.partial(connection.recv, 7)) == b"running"
            reports = WorkerReports(server, running, connection)
            try:
                yield reports
            finally:
                reports.release()


@pytest.mark.asyncio
@LIMITS
async def test_a_process_pool_call_cancelled_by_its_caller_while_it_runs_is_counted_cancelled(
    harness: Harness, limited: bool
) -> None:
    limiter = limiter_for(limited)
    decorated = threaded(limit=limiter, executor=process_pool(harness))
    async with a_call_running_in_a_worker_process(decorated) as reports:
        reports.running.cancel()  # its worker process goes on: only the caller stops waiting
        assert_cancelled(await outcome_of(reports.running))
    await harness.settle()
    assert harness.books(limiter) == settled(cancelled=1)


@pytest.mark.asyncio
async def test_a_call_a_process_pool_drops_at_shutdown_is_counted_cancelled(
    harness: Harness,
) -> None:
    pool = process_pool(harness)
    decorated = threaded(executor=pool)
    async with a_call_running_in_a_worker_process(decorated) as reports:
        # The pool queues two calls for its worker ahead of time; the last stays with it.
        *ahead, last = [decorated(multiply)(VALUE, factor) for factor in (2, 3, 4)]
        pool.shutdown(wait=False, cancel_futures=True)
    assert await outcome_of(reports.running) is None
    assert_cancelled(await outcome_of(last))
    ran = 0
    for call, factor in zip(ahead, (2, 3), strict=True):
        taken = await outcome_of(call)
        assert taken == VALUE * factor or isinstance(taken, asyncio.CancelledError)
        ran += taken == VALUE * factor
    await harness.settle()
    assert harness.books(None) == settled(ok=1 + ran, cancelled=3 - ran)


@pytest.mark.asyncio
async def test_a_process_pool_call_cancelled_while_queued_never_runs(harness: Harness) -> None:
    pool = harness.track(RecordingProcessPool())
    decorated = threaded(executor=pool)
    async with a_call_running_in_a_worker_process(decorated) as reports:
        # The pool queues two calls for its worker ahead of time; the rest stay with it.
        ahead = [decorated(multiply)(VALUE, factor) for factor in (2, 3)]
        cancelled = decorated(report)(reports.port, b"cancelled")
        after = decorated(report)(reports.port, b"after")
        cancelled.cancel()
        assert_cancelled(await outcome_of(cancelled))
        await turns_until(pool.futures[3].cancelled, "the pool's own future cancelled")
        reports.release()
        assert await reports.next_word(9) == b"after"
    assert [await outcome_of(call) for call in (reports.running, *ahead, after)] == [
        None,
        VALUE * 2,
        VALUE * 3,
        None,
    ]
    await harness.settle()
    assert harness.books(None) == settled(ok=4, cancelled=1)


@pytest.mark.asyncio
@LIMITS
@pytest.mark.parametrize("unpicklable", ["lambda", "lock argument"])
async def test_an_unpicklable_call_is_refused_at_once_by_a_process_pool(
    harness: Harness, unpicklable: str, limited: bool
) -> None:
    limiter = limiter_for(limited)
    pool = process_pool(harness)
    if unpicklable == "lambda":
        future = threaded(limit=limiter, executor=pool)(lambda a, b: a * b)(VALUE, 2)
    else:
        lock = threading.Lock()  # cannot be pickled
        future = threaded(limit=limiter, executor=pool)(multiply)(lock, 2)  # type: ignore[arg-type]

    assert isinstance(future, asyncio.Future)
    assert future.done(), "the refusal should be known at once, not once a process ran"
    outcome = await outcome_of(future)
    assert_refused(outcome)
    assert isinstance(outcome, BaseException)
    assert outcome.__cause__ is not None, "the pickling error should be the __cause__"
    function = "<lambda>" if unpicklable == "lambda" else "multiply"
    assert str(outcome).startswith(f"{__name__}.")
    assert (
        f"{function} cannot run on ProcessPoolExecutor: the function "
        "or its arguments do not pickle ("
    ) in str(outcome)
    assert str(outcome).endswith(
        "); use a thread executor, or a module-level function with picklable arguments"
    )
    await harness.settle()
    assert harness.books(limiter) == settled(error=1)


def test_a_process_pool_is_rejected_when_decorating_a_generator(
    loop_free_harness: Harness,
) -> None:
    pool = process_pool(loop_free_harness)

    generator = Work().generator
    with pytest.raises(TypeError, match="other processes"):
        threaded_iterable(generator, executor=pool)
    with pytest.raises(TypeError, match="other processes"):
        threaded_iterable(executor=pool)(generator)
    with pytest.raises(TypeError, match="other processes"):
        threaded(executor=pool)(generator)
