"""The pools' own metrics: threads busy and idle, the maximum, calls waiting, refusals.

Each number is checked against the truth the test arranges (calls held in
their threads by events), in Prometheus and in OpenTelemetry metrics at once,
for aiothreads' ``WorkerPool`` and for a ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import asyncio
import gc
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aiothreads import CapacityLimiter, _pool_state, instrumentation, threaded
from aiothreads._pool import WorkerPool
from aiothreads._pool_state import pool_name
from tests.python_process import run_python
from tests.waiting import turns_until

REFUSAL_REASONS = ("shut_down", "rejected", "dropped")
"""The ``reason`` label of refusals, in the order ``refusals()`` and ``plus()`` use."""


class Metrics:
    """Reads one pool's numbers from both backends, and checks that they agree."""

    def __init__(self, registry: CollectorRegistry, reader: Any, pool: str) -> None:
        self.registry = registry
        self.reader = reader
        self.pool = pool

    def _otel(self) -> dict[str, list[Any]]:
        points: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()  # None while nothing was recorded yet
        for resource in [] if data is None else data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points[metric.name] = list(metric.data.data_points)
        return points

    def read(self, *only: str) -> dict[str, float | None]:
        """Return busy, idle, max, queued and the refusals by reason, as both backends have them.

        Read one after the other, they may differ while the pool changes: then
        the result says so, and equals no expected state. ``only`` names the
        numbers to compare, where the rest may still be changing.
        """
        prometheus = {
            "busy": self._sample("aiothreads_pool_threads", state="busy"),
            "idle": self._sample("aiothreads_pool_threads", state="idle"),
            "max": self._sample("aiothreads_pool_threads_max"),
            "queued": self._sample("aiothreads_pool_queued"),
            **{
                reason: self._sample("aiothreads_pool_refused_total", reason=reason)
                for reason in REFUSAL_REASONS
            },
        }
        points = self._otel()
        opentelemetry = {
            "busy": self._point(points, "aiothreads.pool.thread.count", state="busy"),
            "idle": self._point(points, "aiothreads.pool.thread.count", state="idle"),
            "max": self._point(points, "aiothreads.pool.thread.limit"),
            "queued": self._point(points, "aiothreads.pool.queue.size"),
            **{
                reason: self._point(points, "aiothreads.pool.call.refused", reason=reason)
                for reason in REFUSAL_REASONS
            },
        }
        if only:
            prometheus = {name: prometheus[name] for name in only}
            opentelemetry = {name: opentelemetry[name] for name in only}
        if opentelemetry != prometheus:
            return {"prometheus": prometheus, "opentelemetry": opentelemetry}  # type: ignore[dict-item]
        return prometheus

    def _sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"pool": self.pool, **labels})

    def _point(self, points: dict[str, list[Any]], name: str, **attributes: str) -> float | None:
        wanted = {"pool": self.pool, **attributes}
        found = [point for point in points.get(name, []) if dict(point.attributes) == wanted]
        assert len(found) <= 1, found
        return float(found[0].value) if found else None


@pytest.fixture
def metrics_of() -> Iterator[Callable[[str], Metrics]]:
    """Prometheus into a registry and OpenTelemetry metrics into a reader, at once."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    instrumentation.configure(
        meter_provider=provider, registry=registry, opentelemetry=False, structlog=False
    )
    try:
        yield lambda pool: Metrics(registry, reader, pool)
    finally:
        instrumentation.reset()
        provider.shutdown()


class Held:
    """Calls that block in their threads until released; ``started`` counts them in."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self) -> None:
        self.started.release()
        self.release.wait(5)

    async def running(self, count: int) -> None:
        """Wait, in a thread of its own, until ``count`` calls run."""

        def wait() -> bool:
            return all(self.started.acquire(timeout=5) for _ in range(count))

        with ThreadPoolExecutor(1, thread_name_prefix="test-waiter") as waiter:
            assert await asyncio.get_running_loop().run_in_executor(waiter, wait)


NO_REFUSALS = {"shut_down": 0.0, "rejected": 0.0, "dropped": 0.0}


@pytest.mark.asyncio
@pytest.mark.parametrize("pool", ["worker pool as the default", "thread pool as executor="])
async def test_pool_metrics_equal_the_truth_during_and_after_a_burst(
    metrics_of: Callable[[str], Metrics], pool: str
) -> None:
    held = Held()
    executor: Executor
    if pool == "worker pool as the default":
        executor = WorkerPool(max_workers=2, thread_name_prefix="burst", idle_timeout=None)
        asyncio.get_running_loop().set_default_executor(executor)
        hold = threaded(held)
    else:
        executor = ThreadPoolExecutor(2, thread_name_prefix="burst")
        hold = threaded(held, executor=executor)
    metrics = metrics_of("burst")
    try:
        calls = [asyncio.ensure_future(hold()) for _ in range(3)]
        await held.running(2)
        during = {"busy": 2.0, "idle": 0.0, "max": 2.0, "queued": 1.0, **NO_REFUSALS}
        await turns_until(lambda: metrics.read() == during, "the third call queued")
        assert metrics.read() == during

        held.release.set()
        await asyncio.gather(*calls)
        after = {"busy": 0.0, "idle": 2.0, "max": 2.0, "queued": 0.0, **NO_REFUSALS}
        await turns_until(lambda: metrics.read() == after, "both workers waiting again")
    finally:
        held.release.set()
        executor.shutdown(wait=True)
    gone = {"busy": None, "idle": None, "max": None, "queued": None, **NO_REFUSALS}
    assert metrics.read() == gone  # a pool shut down is no longer reported, its refusals are


@pytest.mark.asyncio
async def test_pools_of_one_name_are_added_up(metrics_of: Callable[[str], Metrics]) -> None:
    held = Held()
    pools = [
        ThreadPoolExecutor(2, thread_name_prefix="twin"),
        ThreadPoolExecutor(3, thread_name_prefix="twin"),
    ]
    metrics = metrics_of("twin")
    try:
        calls = [asyncio.ensure_future(threaded(held, executor=pool)()) for pool in pools]
        await held.running(2)
        both = {"busy": 2.0, "idle": 0.0, "max": 5.0, "queued": 0.0, **NO_REFUSALS}
        assert metrics.read() == both  # a call runs in each pool, which took it off its queue
        held.release.set()
        await asyncio.gather(*calls)
    finally:
        held.release.set()
        for pool in pools:
            pool.shutdown(wait=True)


@pytest.mark.asyncio
async def test_a_thread_pool_with_a_single_call_waiting_counts_no_worker_idle(
    metrics_of: Callable[[str], Metrics],
) -> None:
    # A ThreadPoolExecutor's worker counts itself idle as it ends a call, then
    # takes the next queued one: while any call waits, no worker is idle.
    first, second = Held(), Held()
    executor = ThreadPoolExecutor(1, thread_name_prefix="one-waiting")
    metrics = metrics_of("one-waiting")
    try:
        calls = [
            asyncio.ensure_future(threaded(work, executor=executor)())
            for work in (first, second, second)
        ]
        await first.running(1)
        await turns_until(lambda: metrics.read()["queued"] == 2.0, "two calls queued")
        first.release.set()
        await second.running(1)  # the worker ended a call and took the next one
        one_waiting = {"busy": 1.0, "idle": 0.0, "max": 1.0, "queued": 1.0, **NO_REFUSALS}
        assert metrics.read() == one_waiting
        second.release.set()
        await asyncio.gather(*calls)
    finally:
        first.release.set()
        second.release.set()
        executor.shutdown(wait=True)


@pytest.mark.asyncio
async def test_an_executor_set_as_the_default_is_the_default_pool_wherever_it_is_used(
    metrics_of: Callable[[str], Metrics],
) -> None:
    held = Held()
    executor = ThreadPoolExecutor(2, thread_name_prefix="app-default")
    asyncio.get_running_loop().set_default_executor(executor)
    default = metrics_of("default")
    try:
        call = asyncio.ensure_future(threaded(held)())
        await held.running(1)
        await turns_until(lambda: default.read()["max"] == 2.0, "the default pool reported")
        assert default.read()["busy"] == 1.0
        held.release.set()
        await call
        before = refusals(default)
        executor.shutdown(wait=True)
        with pytest.raises(RuntimeError):  # shut down: ExecutorRefused
            await threaded(abs, executor=executor)(-1)  # the same pool, named explicitly
        assert refusals(default) == plus(before, 1, 0, 0)
    finally:
        held.release.set()
        executor.shutdown(wait=True)
    # Never under its own thread-name prefix: once the default, always the default.
    assert set(metrics_of("app-default").read().values()) == {None}


def test_a_pool_made_the_default_while_its_own_name_was_looked_up_stays_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two loops may hand one executor a call at once, one as its default
    # executor, the other by name: the default's name wins, whichever is last.
    executor = ThreadPoolExecutor(1, thread_name_prefix="raced-by-name")
    looked_up = _pool_state.pool_name

    def made_the_default_meanwhile(pool: Executor | None) -> str:
        name = looked_up(pool)
        assert pool is not None
        _pool_state.watch(pool, default=True)  # the other loop's call comes in between
        return name

    try:
        monkeypatch.setattr(_pool_state, "pool_name", made_the_default_meanwhile)
        _pool_state.watch(executor)
        monkeypatch.undo()
        assert pool_name(executor) == "default"
    finally:
        executor.shutdown(wait=True)


@pytest.mark.asyncio
async def test_a_pool_reports_no_refusals_from_its_first_call_on_and_after_it_is_gone(
    metrics_of: Callable[[str], Metrics],
) -> None:
    prefix = f"first-call-{id(metrics_of)}"  # a name no earlier test made known
    with ThreadPoolExecutor(1, thread_name_prefix=prefix) as executor:
        assert await threaded(abs, executor=executor)(-3) == 3
        idle = {"busy": 0.0, "idle": 1.0, "max": 1.0, "queued": 0.0, **NO_REFUSALS}
        # The worker counts itself idle a moment after it handed the result over.
        await turns_until(lambda: metrics_of(prefix).read() == idle, "the worker idle again")
    gone = {"busy": None, "idle": None, "max": None, "queued": None, **NO_REFUSALS}
    assert metrics_of(prefix).read() == gone  # shut down: its refusals stay, at none


@pytest.mark.asyncio
async def test_executors_that_are_gone_leave_nothing_behind() -> None:
    gc.collect()  # what earlier tests left is gone before the count
    known = len(_pool_state._seen)
    for _ in range(5):
        with ThreadPoolExecutor(1, thread_name_prefix="short-lived") as executor:
            assert await threaded(abs, executor=executor)(-1) == 1
        del executor

    def all_gone() -> bool:  # once the last call's done callbacks have run
        gc.collect()
        return len(_pool_state._seen) <= known

    await turns_until(all_gone, "the executors collected and forgotten")


class Unnamed(Executor):
    """An executor whose thread-name prefix, where one would be, names nothing."""

    _thread_name_prefix: object = ""


@pytest.mark.parametrize("prefix", ["", 7, None])
def test_a_pool_without_a_usable_thread_name_prefix_is_named_by_its_class(prefix: object) -> None:
    executor = Unnamed()
    executor._thread_name_prefix = prefix
    assert pool_name(executor) == "Unnamed"


class Overloaded(Exception):
    """A load-shedding executor's own refusal."""


class SheddingExecutor(ThreadPoolExecutor):
    """A thread pool that refuses every call with an exception of its own."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise Overloaded("too busy")


def refusals(metrics: Metrics) -> tuple[float, float, float]:
    """Return the pool's refusals so far: shut down, rejected, dropped (0 if never seen).

    Only the refusals are compared across backends: a broken pool's dying
    thread may still move its thread counts between the two reads.
    """
    counted = metrics.read(*REFUSAL_REASONS)
    assert set(counted) == set(REFUSAL_REASONS), counted  # both backends agree
    return tuple(counted[reason] or 0.0 for reason in REFUSAL_REASONS)  # type: ignore[return-value]


def plus(before: tuple[float, float, float], *more: float) -> tuple[float, ...]:
    return tuple(old + new for old, new in zip(before, more, strict=True))


@pytest.mark.asyncio
async def test_refusals_are_counted_by_pool_and_reason(
    metrics_of: Callable[[str], Metrics],
) -> None:
    held = Held()
    unnamed = refusals(metrics_of("SheddingExecutor"))
    shedding = SheddingExecutor()
    with pytest.raises(Overloaded):
        await threaded(held, executor=shedding)()
    # no thread-name prefix given: its class name, one for all such pools
    assert refusals(metrics_of("SheddingExecutor")) == plus(unnamed, 0, 1, 0)

    before = refusals(metrics_of("refusing"))
    executor = ThreadPoolExecutor(1, thread_name_prefix="refusing")
    hold = threaded(held, executor=executor)
    running = asyncio.ensure_future(hold())
    await held.running(1)
    queued = asyncio.ensure_future(hold())
    await turns_until(lambda: metrics_of("refusing").read()["queued"] == 1, "the call queued")
    executor.shutdown(wait=False, cancel_futures=True)
    held.release.set()
    await running
    with pytest.raises(RuntimeError):  # dropped: ExecutorRefused
        await queued
    with pytest.raises(RuntimeError):  # shut down: ExecutorRefused
        await hold()
    assert refusals(metrics_of("refusing")) == plus(before, 1, 0, 1)
    executor.shutdown(wait=True)
    shedding.shutdown()


@pytest.mark.asyncio
async def test_a_worker_pool_counts_what_it_refuses_and_drops(
    metrics_of: Callable[[str], Metrics],
) -> None:
    held = Held()
    before = refusals(metrics_of("own-refusals"))
    pool = WorkerPool(max_workers=1, thread_name_prefix="own-refusals")
    hold = threaded(held, executor=pool)
    running = asyncio.ensure_future(hold())
    await held.running(1)
    queued = pool.submit(abs, -1)  # asyncio.to_thread's way in counts too
    pool.shutdown(wait=False, cancel_futures=True)
    held.release.set()
    await running
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        await hold()
    assert refusals(metrics_of("own-refusals")) == plus(before, 1, 0, 1)
    pool.shutdown(wait=True)


@pytest.mark.asyncio
@pytest.mark.parametrize("pool", ["worker pool", "thread pool"])
@pytest.mark.parametrize("limited", [True, False], ids=["limited", "unlimited"])
async def test_a_queued_call_its_caller_cancels_is_settled_at_once_and_no_refusal(
    metrics_of: Callable[[str], Metrics], pool: str, limited: bool
) -> None:
    """With a limit or without: the books to settle are its place and its counts."""
    held = Held()
    before = refusals(metrics_of("cancelling"))
    executor: Executor
    if pool == "worker pool":
        executor = WorkerPool(1, thread_name_prefix="cancelling", idle_timeout=None)
    else:
        executor = ThreadPoolExecutor(1, thread_name_prefix="cancelling")
    limiter = CapacityLimiter(2)
    hold = threaded(held, executor=executor, limit=limiter if limited else None)
    counts = metrics_of("cancelling").registry.get_sample_value
    labels = {"function": "tests.test_pool_metrics.Held", "kind": "threaded"}
    try:
        running = asyncio.ensure_future(hold())
        await held.running(1)
        queued = asyncio.ensure_future(hold())
        await turns_until(lambda: metrics_of("cancelling").read()["queued"] == 1, "the call queued")
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        # settled while the worker still runs the first call: place, count and outcome
        await turns_until(
            lambda: (
                counts("aiothreads_calls_finished_total", {**labels, "outcome": "cancelled"}) == 1
            ),
            "the cancelled call settled",
        )
        assert limiter.borrowed_tokens == (1 if limited else 0)
        assert counts("aiothreads_calls_queued", labels) == 0
        assert not running.done()
    finally:
        held.release.set()
        executor.shutdown(wait=True)
    await running
    await turns_until(lambda: metrics_of("cancelling").read()["queued"] is None, "the pool gone")
    assert refusals(metrics_of("cancelling")) == before  # the executor dropped nothing
    assert counts("aiothreads_calls_finished_total", {**labels, "outcome": "cancelled"}) == 1
    assert counts("aiothreads_calls_finished_total", {**labels, "outcome": "ok"}) == 1


DEFAULT_POOLS = """
import asyncio, threading
from concurrent.futures import ThreadPoolExecutor
from prometheus_client import CollectorRegistry
import {module}
from aiothreads import instrumentation, threaded

registry = CollectorRegistry()
instrumentation.configure(registry=registry, opentelemetry=False, structlog=False)
release, started = threading.Event(), threading.Semaphore(0)

@threaded
def hold():
    started.release()
    release.wait(5)

def value(name, **labels):
    return registry.get_sample_value(name, {{"pool": "default", **labels}})

async def main(own_pool):
    if own_pool:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(3))
    calls = [asyncio.ensure_future(hold()) for _ in range(2)]
    await asyncio.to_thread(lambda: [started.acquire(timeout=5) for _ in range(2)])
    busy = value("aiothreads_pool_threads", state="busy")
    maximum = value("aiothreads_pool_threads_max")
    release.set()
    await asyncio.gather(*calls)
    release.clear()
    return busy, maximum

print({module}.run(main(False)), {module}.run(main(True)))
"""


@pytest.mark.parametrize("module", ["asyncio", "uvloop"])
def test_a_loops_default_executor_is_the_default_pool(module: str) -> None:
    pytest.importorskip(module)
    completed = run_python(textwrap.dedent(DEFAULT_POOLS.format(module=module)))
    assert completed.returncode == 0, completed.stderr
    size = WorkerPool()._max_workers  # what aiothreads installs on this machine
    assert completed.stdout.split("\n")[0] == f"(2, {size}) (2, 3)"


class CountedReads(WorkerPool):
    """A worker pool that counts how often its numbers are read."""

    reads = 0

    def pool_threads(self) -> tuple[list[threading.Thread], int, int, int, bool]:
        self.reads += 1
        return super().pool_threads()


def test_a_pool_found_shut_down_is_not_read_again_while_it_lives() -> None:
    from aiothreads._pool_state import pool_states, watch

    pool = CountedReads(1, thread_name_prefix="read-once")
    watch(pool)
    assert "read-once" in {state.name for state in pool_states()}
    pool.shutdown(wait=True)
    reads = pool.reads
    for _ in range(3):
        assert "read-once" not in {state.name for state in pool_states() if state.busy is not None}
    assert pool.reads == reads + 1  # looked at once more, found shut down, then left alone


def refuse_to_start() -> None:
    raise OSError("no connection for this worker")


@pytest.mark.asyncio
async def test_a_broken_pool_that_refuses_a_call_counts_it_rejected_not_shut_down(
    metrics_of: Callable[[str], Metrics],
) -> None:
    from concurrent.futures.thread import BrokenThreadPool

    before = refusals(metrics_of("broken-start"))
    executor = ThreadPoolExecutor(1, thread_name_prefix="broken-start", initializer=refuse_to_start)
    absolute = threaded(abs, executor=executor)
    try:
        with pytest.raises(BrokenThreadPool):
            await absolute(-1)  # its worker failed to start: the pool broke, failing the call
        with pytest.raises(BrokenThreadPool):
            await absolute(-1)  # submit() raises the broken pool's own RuntimeError subclass
        assert refusals(metrics_of("broken-start")) == plus(before, 0, 2, 0)
    finally:
        executor.shutdown(wait=True)
