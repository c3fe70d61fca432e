"""The core under a thread switch between almost every bytecode: exact books, no hang, no error.

``sys.setswitchinterval(1e-6)`` makes the interpreter hand the GIL over after
about a microsecond, so threads interleave nearly anywhere, as they do on a
free-threaded build. Several event loops, each in a thread of its own, make
threaded calls, stream generators, drain channels fed by several threads,
``sync_await`` on their own loop and on each other's, share a limiter and
cancel work, while other threads take ``snapshot()`` and scrape the metrics.
At the end every call returned its own result once, every item arrived once,
the limiter and the gauges are back to zero, the metrics count exactly what
was done, and no thread, loop or callback raised. See docs/free-threading.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import sys
import threading
import traceback
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

import aiothreads
from aiothreads import (
    CapacityLimiter,
    ChannelClosed,
    FromThreadChannel,
    IteratorWrapper,
    instrumentation,
    sync_await,
    sync_wait_coroutine,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
)
from aiothreads._loops import release_if_closed
from aiothreads._pool import WorkerPool
from tests.conftest import LOOP_FACTORIES

SWITCH_INTERVAL = 1e-6
BOUND = 15.0
"""Seconds any single wait may take before the run counts as hung (far above the norm)."""

CURRENT_FRAMES_CAN_CRASH = sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
"""On CPython 3.11, ``sys._current_frames()`` can crash the interpreter while other threads
enter functions (docs/free-threading.md); ``snapshot()`` and the pool metrics call it."""

LOOPS = 3
CALLS = 60
"""Per loop and round: plain calls, and as many calls that are cancelled at random."""
FAILURES = 10
LIMITED = 24
STREAMS = 6
ITEMS = 40
PRODUCERS = 3
CHANNEL_ITEMS = 40
BRIDGED = 10
SEPARATE = 20
ROUNDS = 2

SUBMITTERS = 4

SHARED_PLACES = 3
OWN_PLACES = 2


class Refused(Exception):
    """What the failing function raises, with its argument."""


@dataclass
class Books:
    """What the run did, counted by the test itself under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[BaseException | str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    """Calls made, by function label."""
    ok: Counter[str] = field(default_factory=Counter)
    """Results the callers received, by function label."""
    cancelled: Counter[str] = field(default_factory=Counter)
    """Cancellations the callers saw, by function label."""
    yielded: Counter[str] = field(default_factory=Counter)
    """Items generators handed over (resumed after their ``yield``), by function label."""
    generators_ended: int = 0
    generators_started: int = 0
    holders: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    gave_up: int = 0

    def add(self, counter: Counter[str], label: str, amount: int = 1) -> None:
        with self.lock:
            counter[label] += amount

    def failed(self, error: BaseException | str) -> None:
        with self.lock:
            self.errors.append(error)

    def report(self) -> str:
        """The errors entered, exceptions with their tracebacks."""
        return "\n".join(
            error if isinstance(error, str) else "".join(traceback.format_exception(error))
            for error in self.errors
        )

    @contextlib.contextmanager
    def holding(self, place: str, places: int) -> Iterator[None]:
        """Count a holder of ``place`` while inside; note the most at once."""
        with self.lock:
            self.holders[place] += 1
            self.peak[place] = max(self.peak[place], self.holders[place])
            if self.holders[place] > places:
                self.errors.append(f"{self.holders[place]} holders of {place}, at most {places}")
        try:
            yield
        finally:
            with self.lock:
                self.holders[place] -= 1


def label(function: str) -> str:
    return f"stress.{function}"


class Workload:
    """The decorated functions of one run, sharing ``books`` and one limiter."""

    def __init__(self, books: Books) -> None:
        self.books = books
        self.shared = CapacityLimiter(SHARED_PLACES)

        @threaded(name=label("square"))
        def square(value: int) -> int:
            return value * value

        @threaded(name=label("dropped"))
        def dropped(value: int) -> int:
            return value * value

        @threaded(name=label("fails"))
        def fails(value: int) -> int:
            raise Refused(value)

        @threaded(limit=self.shared, name=label("limited"))
        def limited(value: int) -> int:
            with books.holding("shared", SHARED_PLACES):
                return sum(range(value % 50))

        @threaded(limit=OWN_PLACES, name=label("own_limit"))
        def own_limit(value: int) -> int:
            with books.holding("own", OWN_PLACES):
                return -value

        @threaded_iterable(max_size=4, name=label("count_up"))
        def count_up(first: int, many: int) -> Generator[int, None, None]:
            books.add(books.calls, "generators")
            try:
                for value in range(first, first + many):
                    yield value
                    books.add(books.yielded, label("count_up"))
            finally:
                with books.lock:
                    books.generators_ended += 1

        @threaded_iterable_separate(max_size=2, limit=self.shared, name=label("endless"))
        def endless() -> Generator[int, None, None]:
            with books.holding("shared", SHARED_PLACES):
                books.add(books.calls, "generators")
                try:
                    value = 0
                    while True:
                        yield value
                        books.add(books.yielded, label("endless"))
                        value += 1
                finally:
                    with books.lock:
                        books.generators_ended += 1

        @threaded(name=label("produce"))
        def produce(channel: FromThreadChannel[tuple[int, int]], producer: int) -> None:
            for sequence in range(CHANNEL_ITEMS):
                channel.put((producer, sequence))

        @threaded(name=label("bridge"))
        def bridge(values: list[int], other: asyncio.AbstractEventLoop) -> list[int]:
            here = [sync_await(double, value) for value in values]
            there = [sync_wait_coroutine(other, double, value) for value in values]
            return here + there

        @threaded(name=label("parked"))
        def parked(entered: asyncio.Event) -> None:
            try:
                sync_await(park, entered)
            except asyncio.CancelledError:
                with books.lock:
                    books.gave_up += 1
                raise

        @threaded_separate(name=label("separate"))
        def separate(value: int) -> str:
            return f"{value}:{threading.current_thread().name}"

        self.square = square
        self.dropped = dropped
        self.fails = fails
        self.limited = limited
        self.own_limit = own_limit
        self.count_up = count_up
        self.endless = endless
        self.produce = produce
        self.bridge = bridge
        self.parked = parked
        self.separate = separate

    async def run(self, index: int, other: asyncio.AbstractEventLoop) -> None:
        """Everything at once on the running loop, ``ROUNDS`` times."""
        for round_number in range(ROUNDS):
            seed = index * 1000 + round_number
            await asyncio.gather(
                self.calls(),
                self.cancelled_calls(random.Random(seed)),
                self.failures(),
                self.limits(random.Random(seed)),
                self.streams(random.Random(seed)),
                self.a_stream_cancelled(),
                self.channel(),
                self.bridged(other),
                self.a_bridge_cancelled(),
                self.separate_threads(),
                self.snapshots(),
            )

    def made(self, function: str, amount: int) -> None:
        self.books.add(self.books.calls, label(function), amount)

    async def calls(self) -> None:
        self.made("square", CALLS)
        results = await asyncio.gather(*(self.square(value) for value in range(CALLS)))
        assert results == [value * value for value in range(CALLS)]
        self.books.add(self.books.ok, label("square"), CALLS)

    async def cancelled_calls(self, chance: random.Random) -> None:
        self.made("dropped", CALLS)
        calls = [self.dropped(value) for value in range(CALLS)]
        for call in calls:
            if chance.random() < 0.5:
                call.cancel()
        await asyncio.sleep(0)
        for call in calls[::7]:  # some while their thread may run them
            call.cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for value, outcome in enumerate(outcomes):
            if isinstance(outcome, asyncio.CancelledError):
                self.books.add(self.books.cancelled, label("dropped"))
            else:
                assert outcome == value * value
                self.books.add(self.books.ok, label("dropped"))

    async def failures(self) -> None:
        self.made("fails", FAILURES)
        outcomes = await asyncio.gather(
            *(self.fails(value) for value in range(FAILURES)), return_exceptions=True
        )
        assert [type(error) for error in outcomes] == [Refused] * FAILURES
        assert [error.args for error in outcomes] == [(value,) for value in range(FAILURES)]

    async def limits(self, chance: random.Random) -> None:
        self.made("limited", LIMITED)
        self.made("own_limit", LIMITED)
        limited = [asyncio.ensure_future(self.limited(value)) for value in range(LIMITED)]
        own = [asyncio.ensure_future(self.own_limit(value)) for value in range(LIMITED)]
        await asyncio.sleep(0)  # every waiting call's task has started: it counts as made
        for call in limited:
            if chance.random() < 0.25:
                call.cancel()
        outcomes = await asyncio.gather(*limited, return_exceptions=True)
        for value, outcome in enumerate(outcomes):
            if isinstance(outcome, asyncio.CancelledError):
                self.books.add(self.books.cancelled, label("limited"))
            else:
                assert outcome == sum(range(value % 50))
                self.books.add(self.books.ok, label("limited"))
        assert await asyncio.gather(*own) == [-value for value in range(LIMITED)]
        self.books.add(self.books.ok, label("own_limit"), LIMITED)

    async def streams(self, chance: random.Random) -> None:
        async def whole(first: int) -> None:
            received = [item async for item in self.count_up(first, ITEMS)]
            assert received == list(range(first, first + ITEMS))

        async def broken(first: int, stop: int) -> None:
            received = []
            stream = self.count_up(first, ITEMS)
            async for item in stream:
                received.append(item)
                if len(received) == stop:
                    break
            await stream.aclose()  # its thread is done, ``finally`` included
            assert received == list(range(first, first + stop))

        stops = [chance.randint(1, ITEMS) for _ in range(STREAMS)]
        await asyncio.gather(
            *(whole(number * ITEMS) for number in range(STREAMS)),
            *(broken(number * ITEMS, stop) for number, stop in enumerate(stops)),
        )

    async def a_stream_cancelled(self) -> None:
        stream: IteratorWrapper[Any, int] = self.endless()
        first_items = asyncio.Event()

        async def consume() -> None:
            async for item in stream:
                if item == 3:
                    first_items.set()

        consumer = asyncio.ensure_future(consume())
        await asyncio.wait_for(first_items.wait(), BOUND)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await asyncio.wait_for(stream.wait_closed(), BOUND)

    async def channel(self) -> None:
        channel: FromThreadChannel[tuple[int, int]] = FromThreadChannel(maxsize=4)
        self.made("produce", PRODUCERS)
        producers = asyncio.gather(
            *(self.produce(channel, producer) for producer in range(PRODUCERS))
        )
        producers.add_done_callback(lambda _: channel.close())
        received: list[tuple[int, int]] = []
        with contextlib.suppress(ChannelClosed):
            while True:
                received.append(await channel.get(timeout=BOUND))
        await producers
        self.books.add(self.books.ok, label("produce"), PRODUCERS)
        assert sorted(received) == [
            (producer, sequence)
            for producer in range(PRODUCERS)
            for sequence in range(CHANNEL_ITEMS)
        ]
        for producer in range(PRODUCERS):  # each producer's items in the order it put them
            order = [sequence for source, sequence in received if source == producer]
            assert order == list(range(CHANNEL_ITEMS))

    async def bridged(self, other: asyncio.AbstractEventLoop) -> None:
        values = list(range(BRIDGED))
        self.made("bridge", 2)
        results = await asyncio.gather(self.bridge(values, other), self.bridge(values, other))
        doubled = [value * 2 for value in values]
        assert results == [doubled + doubled] * 2
        self.books.add(self.books.ok, label("bridge"), 2)

    async def a_bridge_cancelled(self) -> None:
        entered = asyncio.Event()
        self.made("parked", 1)
        call = self.parked(entered)
        await asyncio.wait_for(entered.wait(), BOUND)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        self.books.add(self.books.cancelled, label("parked"))

    async def separate_threads(self) -> None:
        self.made("separate", SEPARATE)
        names = await asyncio.gather(*(self.separate(value) for value in range(SEPARATE)))
        assert [name.partition(":")[0] for name in names] == [str(v) for v in range(SEPARATE)]
        self.books.add(self.books.ok, label("separate"), SEPARATE)

    async def snapshots(self) -> None:
        for _ in range(5):
            check_snapshot(self.books)
            await asyncio.sleep(0)


async def double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


async def park(entered: asyncio.Event) -> None:
    entered.set()
    await asyncio.Event().wait()  # until the threaded call waiting here is cancelled


KINDS = {"threaded", "separate", "iterable", "iterable_separate"}


def check_snapshot(books: Books) -> None:
    """Take a snapshot with stacks; every entry must describe running work sanely."""
    for work in aiothreads.snapshot(stacks=True):
        if (
            work.kind not in KINDS
            or not work.function.startswith("stress.")
            or work.running_for < 0
            or work.queued_for < 0
        ):
            books.failed(f"a snapshot entry makes no sense: {work.as_dict()}")


class LoopThread:
    """An event loop running in a thread of its own; its errors go to ``books``."""

    def __init__(
        self, factory: Callable[[], asyncio.AbstractEventLoop], name: str, books: Books
    ) -> None:
        self.books = books
        self.loop = factory()
        self.loop.set_exception_handler(self._report)
        self.thread = threading.Thread(target=self.loop.run_forever, name=name)
        self.thread.start()

    def _report(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.books.failed(context.get("exception") or context["message"])

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Stop and close the loop, and release any thread still waiting on it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), f"{self.thread.name} never stopped"
        self.loop.close()
        release_if_closed(weakref.ref(self.loop))  # only after a failure: none is left else


def close_all(loops: list[LoopThread]) -> None:
    """Shut every loop down as ``asyncio.run`` does, all at once, then close them.

    Each step runs on every loop before the next, so no loop stops while a
    thread of another still waits on it (``sync_wait_coroutine``).
    """
    try:
        for step in ("shutdown_asyncgens", "shutdown_default_executor"):
            steps = [loop.submit(getattr(loop.loop, step)()) for loop in loops]
            for done in steps:
                done.result(BOUND)
    finally:
        for loop in loops:
            loop.stop()


class Scraper:
    """Scrapes each metric backend from a thread of its own, with snapshots, until stopped.

    The two threads add the same per-thread tallies up at once, as a
    Prometheus scrape and an OpenTelemetry collection do. Each Prometheus
    scrape checks what must hold at any moment: no counter goes down, and no
    function has more calls ended than made.
    """

    def __init__(self, registry: CollectorRegistry, reader: InMemoryMetricReader, books: Books):
        self.registry = registry
        self.reader = reader
        self.books = books
        self.stop = threading.Event()
        self.scrapes: Counter[str] = Counter()
        """Scrapes done, by thread (each thread counts its own)."""
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.threads = [
            threading.Thread(target=self._scrape, args=(name, scrape), name=f"stress-{name}")
            for name, scrape in (
                ("prometheus", self._scrape_prometheus),
                ("opentelemetry", self.reader.get_metrics_data),
            )
        ]
        for thread in self.threads:
            thread.start()

    def _scrape(self, name: str, scrape: Callable[[], object]) -> None:
        try:
            while True:  # at least once, and once more after the loops closed
                stopping = self.stop.is_set()
                scrape()
                check_snapshot(self.books)
                self.scrapes[name] += 1
                if stopping:
                    return
        except BaseException as error:
            self.books.failed(error)

    def _scrape_prometheus(self) -> None:
        generate_latest(self.registry)
        made: Counter[str] = Counter()
        ended: Counter[str] = Counter()
        for family in self.registry.collect():
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                function = sample.labels.get("function", "")
                if sample.name == "aiothreads_calls_finished_total":
                    ended[function] += int(sample.value)
                elif sample.name == "aiothreads_calls_started_total":
                    made[function] += int(sample.value)
                if sample.name.endswith("_total"):
                    key = (sample.name, labels)
                    if sample.value < self._last.get(key, 0.0):
                        self.books.failed(f"{key} went down to {sample.value}")
                    self._last[key] = sample.value
        for function, count in ended.items():
            if count > made[function]:
                self.books.failed(f"{function}: {count} calls ended, {made[function]} made")

    def finish(self) -> Counter[str]:
        self.stop.set()
        for thread in self.threads:
            thread.join(BOUND)
            assert not thread.is_alive(), f"{thread.name} never stopped"
        return self.scrapes


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Hand the GIL over after about a microsecond, as if threads ran at once."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture
def frames_safe_to_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPython 3.11, show ``snapshot()`` and the pool metrics no thread's frames.

    Until aiothreads stops calling ``sys._current_frames()`` there, the run
    checks everything else on 3.11, and the frames on the other versions.
    """
    if CURRENT_FRAMES_CAN_CRASH:
        monkeypatch.setattr(sys, "_current_frames", dict)


@pytest.fixture
def books() -> Iterator[Books]:
    """The run's books; an exception escaping any thread is entered as an error."""
    kept = Books()
    before = threading.excepthook

    def note(arguments: threading.ExceptHookArgs) -> None:
        kept.failed(arguments.exc_value or repr(arguments.exc_type))

    threading.excepthook = note
    try:
        yield kept
    finally:
        threading.excepthook = before


@dataclass
class Backends:
    registry: CollectorRegistry
    reader: InMemoryMetricReader

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def otel(self, name: str, **attributes: str) -> float:
        total = 0.0
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        found = point.attributes or {}
                        if all(found.get(key) == value for key, value in attributes.items()):
                            total += float(point.value)
        return total


@pytest.fixture
def backends() -> Iterator[Backends]:
    """Prometheus, OpenTelemetry metrics and (recording) spans, all on."""
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    instrumentation.configure(
        registry=registry,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        structlog=False,
    )
    try:
        yield Backends(registry, reader)
    finally:
        instrumentation.reset()
        meter_provider.shutdown()
        tracer_provider.shutdown()


def run_at_once(
    factories: list[Callable[[], asyncio.AbstractEventLoop]], books: Books, backends: Backends
) -> Workload:
    """Run the workload on a loop per factory at once, with a scraper; close them all."""
    workload = Workload(books)
    scraper = Scraper(backends.registry, backends.reader, books)
    loops: list[LoopThread] = []
    try:
        for index, factory in enumerate(factories):
            loops.append(LoopThread(factory, f"stress-loop-{index}", books))
        runs = [
            loop.submit(workload.run(index, loops[(index + 1) % len(loops)].loop))
            for index, loop in enumerate(loops)
        ]
        for run in runs:
            error = run.exception(BOUND)
            if error is not None:
                books.failed(error)
    finally:
        close_all(loops)
        scrapes = scraper.finish()
    assert scrapes["prometheus"] > 0
    assert scrapes["opentelemetry"] > 0
    return workload


def check_books(workload: Workload, books: Books, backends: Backends, loops: int) -> None:
    """Everything made was counted once, by outcome; nothing is left running."""
    assert not books.errors, books.report()
    rounds = loops * ROUNDS
    assert books.calls[label("square")] == books.ok[label("square")] == rounds * CALLS
    for function, made in books.calls.items():
        if function == "generators":
            continue
        kind = "separate" if function == label("separate") else "threaded"
        labels = {"function": function, "kind": kind}
        assert backends.value("aiothreads_calls_started_total", **labels) == made, function
        ok = backends.value("aiothreads_calls_finished_total", outcome="ok", **labels)
        error = backends.value("aiothreads_calls_finished_total", outcome="error", **labels)
        cancelled = backends.value("aiothreads_calls_finished_total", outcome="cancelled", **labels)
        assert ok + error + cancelled == made, function
        # A call cancelled once its thread has finished it counts as ok, though its caller
        # saw it cancelled: each result received is an ok, each cancellation seen at most one.
        assert ok >= books.ok[function], function
        assert cancelled <= books.cancelled[function], function
        assert error == (made if function == label("fails") else 0), function
        assert backends.value("aiothreads_calls_in_flight", **labels) == 0, function
        assert backends.value("aiothreads_calls_queued", **labels) == 0, function
        assert backends.otel("aiothreads.call.started", **labels) == made, function
        assert backends.otel("aiothreads.call.active", **labels) == 0, function
    separate = {"function": label("separate"), "kind": "separate"}
    assert backends.value("aiothreads_separate_threads_started_total", **separate) == (
        rounds * SEPARATE
    )
    assert backends.value("aiothreads_separate_threads_alive", **separate) == 0
    streams = {label("count_up"): "iterable", label("endless"): "iterable_separate"}
    for function, kind in streams.items():
        labels = {"function": function, "kind": kind}
        yielded = backends.value("aiothreads_items_yielded_total", **labels)
        assert yielded == books.yielded[function], function
        assert backends.value("aiothreads_iterators_active", **labels) == 0, function
        assert backends.value("aiothreads_channel_depth", **labels) == 0, function
    assert books.generators_ended == books.calls["generators"] == rounds * (2 * STREAMS + 1)
    assert books.gave_up == books.calls[label("parked")] == rounds
    assert workload.shared.borrowed_tokens == 0
    assert workload.shared.waiting == 0
    assert books.holders == Counter({"shared": 0, "own": 0})
    assert aiothreads.snapshot() == []


def test_loops_of_one_kind_keep_exact_books_under_constant_thread_switching(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    frames_safe_to_read: None,
    switch_often: None,
    books: Books,
    backends: Backends,
) -> None:
    workload = run_at_once([loop_factory] * LOOPS, books, backends)
    check_books(workload, books, backends, LOOPS)


def test_asyncio_and_uvloop_loops_share_a_limiter_and_await_on_each_other(
    frames_safe_to_read: None, switch_often: None, books: Books, backends: Backends
) -> None:
    factories = [LOOP_FACTORIES[name] for name in sorted(LOOP_FACTORIES)]
    workload = run_at_once(factories, books, backends)
    check_books(workload, books, backends, len(factories))


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_calls_submitted_while_the_pool_shuts_down_all_run_or_are_cancelled(
    switch_often: None, books: Books, cancel_futures: bool
) -> None:
    pool = WorkerPool(max_workers=4, idle_timeout=None)
    ran = Counter[int]()
    enough = threading.Barrier(SUBMITTERS + 1, timeout=BOUND)

    def work(submitter: int) -> int:
        books.add(ran, submitter)
        return submitter

    def submit(submitter: int, accepted: list[concurrent.futures.Future[int]]) -> None:
        try:
            while True:
                accepted.append(pool.submit(work, submitter))
                if len(accepted) == 50:
                    enough.wait()
        except RuntimeError:  # shut down: nothing more is accepted
            if len(accepted) < 50:
                enough.abort()
        except BaseException as error:
            books.failed(error)

    accepted: list[list[concurrent.futures.Future[int]]] = [[] for _ in range(SUBMITTERS)]
    submitters = [
        threading.Thread(target=submit, args=(index, accepted[index]), name=f"submitter-{index}")
        for index in range(SUBMITTERS)
    ]
    for thread in submitters:
        thread.start()
    enough.wait()  # every submitter is well under way
    pool.shutdown(wait=True, cancel_futures=cancel_futures)
    for thread in submitters:
        thread.join(BOUND)
        assert not thread.is_alive()
    assert not books.errors, books.report()
    for submitter, futures in enumerate(accepted):
        # Each accepted call ran or was dropped; ``wait()`` would not see a dropped
        # one (a future cancelled while pending is never "notified", as in the stdlib).
        results = [future.result(BOUND) for future in futures if not future.cancelled()]
        assert results == [submitter] * ran[submitter]
        if not cancel_futures:
            assert ran[submitter] == len(futures)
