"""A reference model of aiothreads' metrics, compared with the real library after every step.

A Hypothesis state machine drives real ``@threaded`` (and ``@threaded_separate``) calls,
held in their threads by events, and real ``@threaded_iterable`` iterators, whose generators
hand over an item only when the test lets them: it starts, finishes, fails and cancels calls
(queued or running), opens iterators, feeds and drains them and stops them every way a
consumer can (``break``, ``aclose()``, a cancelled ``__anext__()``, garbage collection) or
the generator can (its end, an error). Several instances of one function and label set live
at once: calls of one function on two pools of one name, two calls in two threads of one
pool, iterators of one function side by side (one bounded, one not). After every step, every
value both backends export must equal the model's, in a Prometheus registry and in
OpenTelemetry's metrics (an SDK ``InMemoryMetricReader``); the series must be exactly the
model's:

* per function and kind: calls started, finished by outcome, in flight and queued; the
  slow-call count (none); dedicated threads started and alive; iterators active, channel
  depth and capacity, items handed over, time blocked on a full channel (none), generators
  stopped by reason;
* per pool (the two pools of one name add up): threads busy and idle, the maximum, calls
  waiting, refusals (none);
* where values land: the probes read the model's clock, so each call's wait and duration is
  known exactly. Every histogram (its buckets, count and sum; in OpenTelemetry also min, max
  and one histogram per outcome) holds the model's observations, each in the bucket of its
  value. Each bucket of the Prometheus duration histogram carries as exemplar the trace id,
  span id and value of the newest call that fell in it, as the ``InMemorySpanExporter``
  recorded that call's span, whichever of the pools' threads counted it; a bucket no traced
  call fell in carries none. Each span's outcome, queue wait and item count agree too;
* names: a ``functools.partial``, a lambda and a bound method are labelled (and their spans
  named) by the qualified name of the function they call, never with an argument.

The machine runs on asyncio's loop and on uvloop. A separate test runs two worker processes
in prometheus-client's multiprocess mode, each with two live calls and two live iterators of
one function, and checks the aggregated scrape against the sum of the processes' models.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple, TypeVar

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from aiothreads import (
    IteratorWrapper,
    _executor,
    instrumentation,
    threaded,
    threaded_iterable,
    threaded_separate,
)
from aiothreads._pool import WorkerPool
from aiothreads.instrumentation import _probes
from tests.conftest import LOOP_FACTORIES
from tests.modelling import LONG_SEARCH, MODEL_TIMEOUT, model_settings
from tests.waiting import turns_until

pytestmark = MODEL_TIMEOUT

T = TypeVar("T")

TIMEOUT: Final = 10.0
"""Seconds any wait may take before the test fails (far above what a step needs)."""

BOUNDS: Final = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    math.inf,
)
"""Upper bounds of the buckets of the duration and wait histograms, the last one open."""

CLOCK_STEPS: Final = (
    2**-15,
    2**-11,
    2**-10,
    2**-8,
    2**-5,
    2**-4,
    0.25,
    0.375,
    1.0,
    2.5,
    4.0,
    45.0,
    400.0,
)
"""How far a step may move the clock. All are binary fractions, so every clock reading and
every duration is exact, and a duration of one step of 0.25, 1.0 or 2.5 s lies exactly on a
bucket's bound (which the bucket includes)."""

OUTCOMES: Final = ("ok", "error", "cancelled")
SECRET: Final = "s3cr3t-argument"
"""Passed to the partial, the lambda and the bound method: no label or span name may show it."""

POOL: Final = "model-pool"
"""The name of the two pools the calls run on (they add up under it)."""
STREAM_POOL: Final = "model-streams"
"""The name of the pool the iterators' generators run on."""
CALL_POOL_SIZE: Final = 2
STREAM_POOL_SIZE: Final = 4
MAX_CALLS: Final = 10
"""Calls not yet ended, at most (so that some queue, and none waits forever)."""
UNBOUNDED_DEPTH: Final = 5
"""The most items the model lets wait in an unbounded channel."""

HOLD: Final = f"{__name__}.hold"
PARTIAL: Final = f"{__name__}.hold_with"
LAMBDA: Final = f"{__name__}.made_lambda.<locals>.<lambda>"
METHOD: Final = f"{__name__}.Service.hold"
STREAM: Final = f"{__name__}.stream"

Labels = tuple[str, str]
"""(function, kind) of a series."""
Key = tuple[str, frozenset[tuple[str, str]]]
"""A sample: its name and labels (Prometheus) or attributes (OpenTelemetry)."""


class Failure(Exception):
    """What a call or generator raises when the model fails it."""


class Gate:
    """Holds a call in its thread until the test releases it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = False

    def __repr__(self) -> str:
        return f"Gate({self.number}, {SECRET})"


def hold(gate: Gate) -> None:
    gate.started.set()
    if not gate.release.wait(TIMEOUT):
        raise TimeoutError("the test never released this call")
    if gate.fail:
        raise Failure("failed as the model asked")


def hold_with(secret: str, gate: Gate) -> None:
    assert secret == SECRET
    hold(gate)


def made_lambda() -> Callable[[Gate], None]:
    return lambda gate: hold_with(SECRET, gate)


class Service:
    """Its bound method is decorated; its repr would show the secret."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"Service({self.secret})"

    def hold(self, gate: Gate) -> None:
        hold_with(self.secret, gate)


class Feed:
    """Lets a generator hand over one item per permit; ``ready`` counts its trips round."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.permits = threading.Semaphore(0)
        self.ready = threading.Semaphore(0)
        self.end: str | None = None

    def __repr__(self) -> str:
        return f"Feed({self.number}, {SECRET})"


def stream(feed: Feed) -> Iterator[int]:
    number = 0
    while True:
        feed.ready.release()  # every item before this one is in the channel
        if not feed.permits.acquire(timeout=TIMEOUT):
            raise TimeoutError("the test never let this generator go on")
        if feed.end == "finish":
            return
        if feed.end == "fail":
            raise Failure("failed as the model asked")
        yield number
        number += 1


class Clock:
    """The probes' ``time`` module: ``perf_counter`` is the model's clock, the rest is real."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now

    @staticmethod
    def time_ns() -> int:
        return time.time_ns()


def probes_read(clock: Any) -> Any:
    """Make ``clock`` the ``time`` module the probes read; return the one they read until now.

    A call that only metrics record has no probe: its clock is ``ThreadCall``'s own.
    """
    probes = vars(_probes)
    previous, probes["time"] = probes["time"], clock
    vars(_executor)["_perf_counter"] = clock.perf_counter
    return previous


class SpanEnds(SpanProcessor):
    """Sets the event of a piece of work once the span of the call or iterator under it ends."""

    def __init__(self) -> None:
        self._events: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def expect(self, parent: int) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[parent] = event
        return event

    def on_end(self, span: ReadableSpan) -> None:
        if span.parent is None:
            return
        with self._lock:
            event = self._events.pop(span.parent.span_id, None)
        if event is not None:
            event.set()


class Histogram(NamedTuple):
    """An OpenTelemetry histogram data point, as compared."""

    buckets: tuple[int, ...]
    observed: int
    total: float
    smallest: float
    largest: float


class Exemplar(NamedTuple):
    trace_id: str
    span_id: str
    value: float


def bucket_of(value: float) -> int:
    """Return the index of the bucket ``value`` falls in: the first bound at or above it."""
    return next(index for index, bound in enumerate(BOUNDS) if value <= bound)


def le(bound: float) -> str:
    """Return the ``le`` label of the bucket up to ``bound``."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def key(name: str, labels: Mapping[str, str]) -> Key:
    return name, frozenset(labels.items())


def show(sample: Key) -> str:
    name, labels = sample
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}"


def same(actual: object, expected: object) -> bool:
    if isinstance(actual, tuple) and isinstance(expected, tuple):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        if math.isinf(expected):
            return actual == expected
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
    return actual == expected


def differences(actual: Mapping[Key, object], expected: Mapping[Key, object]) -> list[str]:
    """Say where ``actual`` is not ``expected``: a series missing, unexpected or off."""
    off = [
        sample
        for sample in actual.keys() | expected.keys()
        if sample not in actual
        or sample not in expected
        or not same(actual[sample], expected[sample])
    ]
    found: list[str] = []
    for sample in sorted(off, key=show):
        if sample not in actual:
            found.append(f"missing {show(sample)}, the model says {expected[sample]!r}")
        elif sample not in expected:
            found.append(f"unexpected {show(sample)} = {actual[sample]!r}")
        else:
            found.append(
                f"{show(sample)} = {actual[sample]!r}, the model says {expected[sample]!r}"
            )
    return found


class Threads:
    """Where work runs, as the model sees it: here a thread of its own per call."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running: list[Work] = []
        self.queue: deque[Work] = deque()

    def idle(self) -> int:
        return self.size - len(self.running)

    def modelled(self) -> tuple[int, int, int]:
        """Busy, idle and queued, as the model has them."""
        return len(self.running), self.idle(), len(self.queue)

    def settled(self) -> bool:
        return True

    def describe(self) -> str:
        return f"{len(self.running)} dedicated threads"


class Pool(Threads):
    """The model of one ``WorkerPool``: the work running and the calls waiting."""

    def __init__(self, executor: WorkerPool) -> None:
        super().__init__(executor.pool_threads()[2])
        self.executor = executor
        self.name = executor.pool_name

    def found(self) -> tuple[int, int, int]:
        """Busy, idle and queued, as the pool itself has them (what its metrics are read from)."""
        workers, idle, _, queued, _ = self.executor.pool_threads()
        return len(workers) - idle, idle, queued

    def settled(self) -> bool:
        return self.found() == self.modelled()

    def describe(self) -> str:
        return f"{self.name} has {self.found()}, the model {self.modelled()}"


class Work:
    """One call or iterator, as the model follows it."""

    def __init__(
        self,
        number: int,
        labels: Labels,
        pool: Threads,
        parent: int,
        ended: threading.Event,
    ) -> None:
        self.number = number
        self.labels = labels
        self.pool = pool
        self.parent = parent
        """The span id of the span it was made under: its own span's parent."""
        self.ended = ended
        """Set once its span ended, after its metrics were counted."""
        self.submitted_at = 0.0
        self.started_at: float | None = None
        self.cancelled = False
        self.outcome: str | None = None
        self.items: int | None = None
        self.span: ReadableSpan | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.number} of {self.labels[0]}>"


class Call(Work):
    gate: Gate
    future: asyncio.Future[None]


class Iteration(Work):
    feed: Feed
    wrapper: IteratorWrapper[Any, int] | None
    capacity: int
    produced: int
    consumed: int

    def depth(self) -> int:
        return self.produced - self.consumed

    def room(self) -> int:
        return (self.capacity or UNBOUNDED_DEPTH) - self.depth()


class Observation(NamedTuple):
    value: float
    outcome: str
    work: Work


class Series:
    """What the model counted for one (function, kind)."""

    def __init__(self) -> None:
        self.submitted = 0
        self.ended: Counter[str] = Counter()
        self.durations: list[Observation] = []
        self.waits: list[float] = []
        self.items = 0
        self.stopped: Counter[str] = Counter()
        self.threads_started = 0


class Target(NamedTuple):
    decorated: Callable[[Gate], Any]
    function: str
    kind: str
    pool: Threads


class StreamTarget(NamedTuple):
    decorated: Callable[[Feed], IteratorWrapper[Any, int]]
    capacity: int
    pool: Threads


def warmed_up(pool: WorkerPool) -> WorkerPool:
    """Start every worker of ``pool`` now.

    Then no call starts one, and which call would (a worker back from a call may not yet
    count as free) does not matter.
    """
    size = pool.pool_threads()[2]
    everyone = threading.Barrier(size)
    started = [pool.submit(everyone.wait, TIMEOUT) for _ in range(size)]
    for future in started:
        future.result(TIMEOUT)
    return pool


class Shared:
    """The pools, and the functions decorated to run on them, that one test's examples share.

    Metrics read every pool that is alive, shut down or not: pools made per example, kept
    alive by the examples a failure is shrunk through, would make every step slower.
    """

    def __init__(self) -> None:
        self.executors = [
            warmed_up(WorkerPool(CALL_POOL_SIZE, POOL, idle_timeout=None)),
            warmed_up(WorkerPool(CALL_POOL_SIZE, POOL, idle_timeout=None)),
            warmed_up(WorkerPool(STREAM_POOL_SIZE, STREAM_POOL, idle_timeout=None)),
        ]
        a, b, s = self.executors
        self.calls: dict[str, tuple[Callable[[Gate], Any], str, str, int | None]] = {
            "hold on pool a": (threaded(executor=a)(hold), HOLD, "threaded", 0),
            "hold on pool b": (threaded(executor=b)(hold), HOLD, "threaded", 1),
            "hold on a thread of its own": (threaded_separate(hold), HOLD, "separate", None),
            "partial": (
                threaded(executor=a)(functools.partial(hold_with, SECRET)),
                PARTIAL,
                "threaded",
                0,
            ),
            "lambda": (threaded(executor=b)(made_lambda()), LAMBDA, "threaded", 1),
            "bound method": (
                threaded(executor=a)(Service(SECRET).hold),
                METHOD,
                "threaded",
                0,
            ),
        }
        self.streams: dict[str, tuple[Callable[[Feed], IteratorWrapper[Any, int]], int]] = {
            "bounded": (threaded_iterable(stream, max_size=4, executor=s), 4),
            "unbounded": (threaded_iterable(stream, executor=s), 0),
        }

    def shutdown(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=True)


TARGETS: Final = (
    "hold on pool a",
    "hold on pool b",
    "hold on a thread of its own",
    "partial",
    "lambda",
    "bound method",
)
PICK: Final = st.integers(min_value=0, max_value=15)


def pick(candidates: list[T], index: int) -> T:
    return candidates[index % len(candidates)]


class MetricsMachine(RuleBasedStateMachine):
    """Drives calls and iterators; after each step compares both backends with the model."""

    loop_kind: ClassVar[str]
    shared: ClassVar[Shared | None] = None

    @classmethod
    def shared_pools(cls) -> Shared:
        if cls.shared is None:
            cls.shared = Shared()
        return cls.shared

    @classmethod
    def shut_shared_pools_down(cls) -> None:
        shared, cls.shared = cls.shared, None
        if shared is not None:
            shared.shutdown()

    def __init__(self) -> None:
        super().__init__()
        shared = type(self).shared_pools()
        self.threads_before = set(threading.enumerate())
        self.loop = LOOP_FACTORIES[self.loop_kind]()
        self.clock = Clock()
        self.real_time = probes_read(self.clock)
        self.registry = CollectorRegistry()
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.span_ends = SpanEnds()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracers.add_span_processor(self.span_ends)
        self.tracer = self.tracers.get_tracer("model")
        instrumentation.configure(
            registry=self.registry,
            meter_provider=self.meters,
            tracer_provider=self.tracers,
            structlog=False,
        )
        dedicated = Threads(MAX_CALLS)
        self.pools: list[Threads] = [*map(Pool, shared.executors), dedicated]
        self.targets = {
            name: Target(decorated, function, kind, dedicated if at is None else self.pools[at])
            for name, (decorated, function, kind, at) in shared.calls.items()
        }
        stream_pool = self.pools[2]
        self.streams = {
            name: StreamTarget(decorated, capacity, stream_pool)
            for name, (decorated, capacity) in shared.streams.items()
        }
        self.series: dict[Labels, Series] = {}
        self.streams_seen: set[Labels] = set()
        self.calls: list[Call] = []
        """Calls not ended yet: queued (cancelled or not) or running."""
        self.iterators: list[Iteration] = []
        """Iterators whose generator has not ended."""
        self.futures: list[asyncio.Future[None]] = []
        self.numbers = itertools.count()
        self.to_end: list[Work] = []
        self.to_start: list[Call] = []

    # -- running things ------------------------------------------------------

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def series_of(self, labels: Labels) -> Series:
        return self.series.setdefault(labels, Series())

    def made_under_a_span(self, number: int) -> tuple[trace.Span, int, threading.Event]:
        span = self.tracer.start_span(f"work {number}")
        parent = span.get_span_context().span_id
        return span, parent, self.span_ends.expect(parent)

    def submitted(self, work: Work) -> None:
        work.submitted_at = self.clock.now
        self.series_of(work.labels).submitted += 1
        pool = work.pool
        if pool.idle():
            self.started(work)
        else:
            pool.queue.append(work)

    def started(self, work: Work) -> None:
        work.started_at = self.clock.now
        work.pool.running.append(work)
        series = self.series_of(work.labels)
        series.waits.append(work.started_at - work.submitted_at)
        if work.labels[1] == "separate":
            series.threads_started += 1
        if isinstance(work, Call):
            self.to_start.append(work)

    def ended(self, work: Work, outcome: str, reason: str | None = None) -> None:
        """Count ``work`` that ran as ended; a worker of its pool takes the next call."""
        assert work.started_at is not None
        series = self.series_of(work.labels)
        series.ended[outcome] += 1
        series.durations.append(Observation(self.clock.now - work.started_at, outcome, work))
        if reason is not None:
            series.stopped[reason] += 1
        work.outcome = outcome
        self.to_end.append(work)
        pool = work.pool
        pool.running.remove(work)
        while pool.queue:
            waiting = pool.queue.popleft()
            if not waiting.cancelled:
                self.started(waiting)
                break
            # cancelled while queued: counted then; the worker only drops it now

    def settle(self) -> None:
        """Wait until what the last step set off has happened, as the model says it must."""
        for work in self.to_end:
            assert work.ended.wait(TIMEOUT), f"{work} never ended"
            work.span = self.span_of(work)
        for call in self.to_start:
            assert call.gate.started.wait(TIMEOUT), f"{call} never started"
        self.to_end.clear()
        self.to_start.clear()
        self.run(self.outcomes_delivered())

    async def outcomes_delivered(self) -> None:
        done = [future for future in self.futures if future.done()]
        for future in done:
            if not future.cancelled():
                future.exception()  # retrieved: failures are the model's doing
            self.futures.remove(future)
        try:
            await turns_until(lambda: all(pool.settled() for pool in self.pools), "settled pools")
        except AssertionError:
            raise AssertionError(
                "the pools never came to what the model says (busy, idle, queued): "
                + "; ".join(pool.describe() for pool in self.pools)
            ) from None

    def span_of(self, work: Work) -> ReadableSpan:
        found = [
            span
            for span in self.spans.get_finished_spans()
            if span.parent is not None and span.parent.span_id == work.parent
        ]
        assert len(found) == 1, found
        span = found[0]
        function, kind = work.labels
        assert span.name == f"{kind} {function}"
        attributes = dict(span.attributes or {})
        assert attributes["aiothreads.outcome"] == work.outcome, (work, attributes)
        if work.started_at is not None:
            wait = work.started_at - work.submitted_at
            assert attributes["aiothreads.queue_wait_seconds"] == wait, (
                work,
                attributes,
            )
        if work.items is not None:
            assert attributes["aiothreads.items"] == work.items, (work, attributes)
        return span

    # -- calls ----------------------------------------------------------------

    async def submit(self, name: str) -> Call:
        target = self.targets[name]
        number = next(self.numbers)
        span, parent, ended = self.made_under_a_span(number)
        call = Call(number, (target.function, target.kind), target.pool, parent, ended)
        call.gate = Gate(number)
        with trace.use_span(span, end_on_exit=False):
            call.future = target.decorated(call.gate)
        span.end()
        return call

    def start_call(self, name: str) -> None:
        call = self.run(self.submit(name))
        self.calls.append(call)
        self.futures.append(call.future)
        self.submitted(call)
        self.settle()

    @initialize()
    def two_live_of_each(self) -> None:
        """A call of every target, two of ``hold`` on pool a (which runs two, and two wait)."""
        for name in ("hold on pool a", *TARGETS):
            self.start_call(name)
        for variant in ("bounded", "unbounded"):
            self.open(variant)

    @precondition(lambda self: len(self.calls) < MAX_CALLS)
    @rule(name=st.sampled_from(TARGETS))
    def call(self, name: str) -> None:
        self.start_call(name)

    @precondition(lambda self: any(call.started_at is not None for call in self.calls))
    @rule(index=PICK, fail=st.booleans(), elapsed=st.sampled_from((0.0, *CLOCK_STEPS)))
    def finish(self, index: int, fail: bool, elapsed: float) -> None:
        """Let a running call return or raise, ``elapsed`` seconds on; the next call starts."""
        self.clock.now += elapsed
        call = pick([call for call in self.calls if call.started_at is not None], index)
        call.gate.fail = fail
        call.gate.release.set()
        self.calls.remove(call)
        self.ended(call, "cancelled" if call.cancelled else "error" if fail else "ok")
        self.settle()

    @precondition(lambda self: any(not call.cancelled for call in self.calls))
    @rule(index=PICK, waiting=st.booleans())
    def cancel(self, index: int, waiting: bool) -> None:
        """Cancel a call, one that waits for a worker if ``waiting`` and there is one."""
        candidates = [call for call in self.calls if not call.cancelled]
        queued = [call for call in candidates if call.started_at is None]
        call = pick(queued if waiting and queued else candidates, index)
        call.future.cancel()
        call.cancelled = True
        if call.started_at is None:
            # Settled at once, as never run; it stays in the pool's own queue
            # (``aiothreads_pool_queued``) until a worker takes it out and drops it.
            self.series_of(call.labels).ended["cancelled"] += 1
            call.outcome = "cancelled"
            self.to_end.append(call)
            self.calls.remove(call)
        self.settle()

    @rule(step=st.sampled_from(CLOCK_STEPS))
    def advance_clock(self, step: float) -> None:
        self.clock.now += step

    # -- iterators --------------------------------------------------------------

    async def first_item(self, variant: str) -> Iteration:
        target = self.streams[variant]
        number = next(self.numbers)
        span, parent, ended = self.made_under_a_span(number)
        iteration = Iteration(number, (STREAM, "iterable"), target.pool, parent, ended)
        iteration.feed = Feed(number)
        iteration.capacity = target.capacity
        with trace.use_span(span, end_on_exit=False):
            wrapper = iteration.wrapper = target.decorated(iteration.feed)
        span.end()
        iteration.feed.permits.release()
        assert await asyncio.wait_for(wrapper.__anext__(), TIMEOUT) == 0
        return iteration

    def open(self, variant: str) -> None:
        iteration = self.run(self.first_item(variant))
        self.streams_seen.add(iteration.labels)
        self.submitted(iteration)
        assert iteration.started_at is not None, "the streams' pool never makes a generator wait"
        iteration.produced = iteration.consumed = 1
        self.iterators.append(iteration)
        self.passed_round(iteration, 2)  # its start, and its first item handed over
        self.settle()

    def passed_round(self, iteration: Iteration, times: int = 1) -> None:
        for _ in range(times):
            assert iteration.feed.ready.acquire(timeout=TIMEOUT), f"{iteration} stalled"

    def produce_items(self, iteration: Iteration, count: int) -> None:
        for _ in range(count):
            iteration.feed.permits.release()
            self.passed_round(iteration)
        iteration.produced += count

    @precondition(lambda self: len(self.iterators) < STREAM_POOL_SIZE)
    @rule(variant=st.sampled_from(["bounded", "unbounded"]))
    def open_iterator(self, variant: str) -> None:
        self.open(variant)

    @precondition(lambda self: any(iteration.room() for iteration in self.iterators))
    @rule(index=PICK, count=st.integers(min_value=1, max_value=3))
    def produce(self, index: int, count: int) -> None:
        iteration = pick([iteration for iteration in self.iterators if iteration.room()], index)
        self.produce_items(iteration, min(count, iteration.room()))

    async def take(self, iteration: Iteration, count: int) -> None:
        assert iteration.wrapper is not None
        for _ in range(count):
            item = await asyncio.wait_for(iteration.wrapper.__anext__(), TIMEOUT)
            assert item == iteration.consumed
            iteration.consumed += 1

    @precondition(lambda self: any(iteration.depth() for iteration in self.iterators))
    @rule(index=PICK, count=st.integers(min_value=1, max_value=3))
    def consume(self, index: int, count: int) -> None:
        iteration = pick([iteration for iteration in self.iterators if iteration.depth()], index)
        self.run(self.take(iteration, min(count, iteration.depth())))

    def stopped(self, iteration: Iteration, outcome: str, reason: str | None) -> None:
        """Model the end of ``iteration``'s generator, once it was told to end."""
        self.iterators.remove(iteration)
        iteration.items = iteration.produced
        self.series_of(iteration.labels).items += iteration.produced
        self.ended(iteration, outcome, reason)
        self.settle()

    def woken(self, iteration: Iteration) -> None:
        """Let the generator try to hand over one more item, which finds the consumer gone."""
        iteration.feed.permits.release()

    @precondition(lambda self: bool(self.iterators))
    @rule(index=PICK)
    def break_out(self, index: int) -> None:
        iteration = pick(self.iterators, index)
        if not iteration.depth():
            self.produce_items(iteration, 1)

        async def leave_early() -> None:
            assert iteration.wrapper is not None
            async for item in iteration.wrapper:
                assert item == iteration.consumed
                break

        self.run(leave_early())
        iteration.consumed += 1
        self.woken(iteration)
        self.stopped(iteration, "cancelled", "break")

    @precondition(lambda self: bool(self.iterators))
    @rule(index=PICK)
    def close(self, index: int) -> None:
        iteration = pick(self.iterators, index)

        async def close() -> None:
            assert iteration.wrapper is not None
            closing = iteration.wrapper.close()
            self.woken(iteration)
            await asyncio.wait_for(asyncio.ensure_future(closing), TIMEOUT)

        self.run(close())
        self.stopped(iteration, "cancelled", "closed")

    @precondition(lambda self: any(not iteration.depth() for iteration in self.iterators))
    @rule(index=PICK)
    def cancel_consumer(self, index: int) -> None:
        iteration = pick(
            [iteration for iteration in self.iterators if not iteration.depth()], index
        )

        async def cancel_while_waiting() -> None:
            assert iteration.wrapper is not None
            waiting = asyncio.ensure_future(iteration.wrapper.__anext__())
            await asyncio.sleep(0)  # one turn: it waits for an item now
            waiting.cancel()
            await asyncio.wait([waiting], timeout=TIMEOUT)
            assert waiting.cancelled()

        self.run(cancel_while_waiting())
        self.woken(iteration)
        self.stopped(iteration, "cancelled", "cancelled")

    @precondition(lambda self: bool(self.iterators))
    @rule(index=PICK)
    def drop(self, index: int) -> None:
        iteration = pick(self.iterators, index)
        wrapper, iteration.wrapper = iteration.wrapper, None
        assert wrapper is not None
        gone = weakref.ref(wrapper)
        del wrapper
        if gone() is not None:
            gc.collect()
        assert gone() is None, "the iterator outlived its last reference"
        self.woken(iteration)
        self.stopped(iteration, "cancelled", "collected")

    @precondition(lambda self: bool(self.iterators))
    @rule(index=PICK, fail=st.booleans())
    def end_generator(self, index: int, fail: bool) -> None:
        iteration = pick(self.iterators, index)
        iteration.feed.end = "fail" if fail else "finish"
        iteration.feed.permits.release()
        if fail:
            self.stopped(iteration, "error", "error")
        else:
            self.stopped(iteration, "ok", None)

    # -- the comparison ----------------------------------------------------------

    @invariant()
    def both_backends_agree_with_the_model(self) -> None:
        values, exemplars = prometheus_samples(self.registry)
        points = opentelemetry_points(self.reader)
        leaked = [show(sample) for sample in [*values, *points] if SECRET in show(sample)]
        assert not leaked, f"an argument in a label: {leaked}"
        expected_values, expected_exemplars = self.expected_prometheus()
        problems = differences(values, expected_values)
        problems += [f"exemplar {line}" for line in differences(exemplars, expected_exemplars)]
        opentelemetry = differences(points, self.expected_opentelemetry())
        problems += [f"opentelemetry {line}" for line in opentelemetry]
        assert not problems, "\n".join(problems)

    def in_pools(self, labels: Labels) -> tuple[int, int]:
        """Count the work of ``labels`` running, and waiting for a worker (not cancelled)."""
        running = sum(work.labels == labels for pool in self.pools for work in pool.running)
        queued = sum(
            work.labels == labels and not work.cancelled
            for pool in self.pools
            for work in pool.queue
        )
        return running, queued

    def live_streams(self, labels: Labels) -> tuple[int, float, int, int]:
        """Return depth, bounded capacity, unbounded channels and active iterators of ``labels``."""
        live = [iteration for iteration in self.iterators if iteration.labels == labels]
        depth = sum(iteration.depth() for iteration in live)
        bounded = sum(iteration.capacity for iteration in live)
        unbounded = sum(not iteration.capacity for iteration in live)
        return depth, bounded, unbounded, len(live)

    def exemplars_of(self, series: Series) -> list[Exemplar | None]:
        """Per bucket, the newest traced observation that fell in it."""
        newest: list[Exemplar | None] = [None] * len(BOUNDS)
        for value, _, work in series.durations:
            assert work.span is not None
            context = work.span.context
            newest[bucket_of(value)] = Exemplar(
                format(context.trace_id, "032x"), format(context.span_id, "016x"), value
            )
        return newest

    def expected_prometheus(self) -> tuple[dict[Key, object], dict[Key, object]]:
        values: dict[Key, object] = {}
        exemplars: dict[Key, object] = {}

        def put(name: str, labels: Mapping[str, str], value: object) -> None:
            values[key(name, labels)] = value

        def histogram(name: str, labels: dict[str, str], observed: list[float]) -> None:
            for bound in BOUNDS:
                put(
                    f"{name}_bucket",
                    {**labels, "le": le(bound)},
                    sum(v <= bound for v in observed),
                )
            put(f"{name}_count", labels, len(observed))
            put(f"{name}_sum", labels, math.fsum(observed))

        for (function, kind), series in self.series.items():
            labels = {"function": function, "kind": kind}
            running, queued = self.in_pools((function, kind))
            put("aiothreads_calls_started_total", labels, series.submitted)
            for outcome in OUTCOMES:
                put(
                    "aiothreads_calls_finished_total",
                    {**labels, "outcome": outcome},
                    series.ended[outcome],
                )
            put("aiothreads_calls_slow_total", labels, 0)
            put("aiothreads_calls_in_flight", labels, running)
            put("aiothreads_calls_queued", labels, queued)
            histogram("aiothreads_call_wait_seconds", labels, series.waits)
            histogram(
                "aiothreads_call_duration_seconds",
                labels,
                [o.value for o in series.durations],
            )
            for bound, exemplar in zip(BOUNDS, self.exemplars_of(series), strict=True):
                if exemplar is not None:
                    exemplars[
                        key(
                            "aiothreads_call_duration_seconds_bucket",
                            {**labels, "le": le(bound)},
                        )
                    ] = exemplar
            if kind == "separate":
                put(
                    "aiothreads_separate_threads_started_total",
                    labels,
                    series.threads_started,
                )
                put("aiothreads_separate_threads_alive", labels, running)
            if kind == "iterable":
                put("aiothreads_items_yielded_total", labels, series.items)
                put("aiothreads_producer_blocked_seconds_total", labels, 0.0)
                for reason, count in series.stopped.items():
                    put(
                        "aiothreads_generator_cancellations_total",
                        {**labels, "reason": reason},
                        count,
                    )
        for function, kind in self.streams_seen:
            labels = {"function": function, "kind": kind}
            depth, bounded, unbounded, active = self.live_streams((function, kind))
            put("aiothreads_channel_depth", labels, depth)
            put(
                "aiothreads_channel_capacity",
                labels,
                math.inf if unbounded else bounded,
            )
            put("aiothreads_iterators_active", labels, active)
        for name, (busy, idle, maximum, queued) in self.pool_totals().items():
            put("aiothreads_pool_threads", {"pool": name, "state": "busy"}, busy)
            put("aiothreads_pool_threads", {"pool": name, "state": "idle"}, idle)
            put("aiothreads_pool_threads_max", {"pool": name}, maximum)
            put("aiothreads_pool_queued", {"pool": name}, queued)
            for reason in ("shut_down", "rejected", "dropped"):
                put("aiothreads_pool_refused_total", {"pool": name, "reason": reason}, 0)
        return values, exemplars

    def pool_totals(self) -> dict[str, tuple[int, int, int, int]]:
        """Per pool name: busy, idle, maximum, queued, added up over its pools."""
        totals: dict[str, tuple[int, int, int, int]] = {}
        for pool in self.pools:
            if not isinstance(pool, Pool):
                continue
            busy, idle, queued = pool.modelled()
            was_busy, was_idle, maximum, was_queued = totals.get(pool.name, (0, 0, 0, 0))
            totals[pool.name] = (
                busy + was_busy,
                idle + was_idle,
                pool.size + maximum,
                queued + was_queued,
            )
        return totals

    def expected_opentelemetry(self) -> dict[Key, object]:
        points: dict[Key, object] = {}

        def put(name: str, attributes: Mapping[str, str], value: object) -> None:
            points[key(name, attributes)] = value

        def histogram(observed: list[float]) -> Histogram:
            counts = Counter(bucket_of(value) for value in observed)
            return Histogram(
                tuple(counts[index] for index in range(len(BOUNDS))),
                len(observed),
                math.fsum(observed),
                min(observed),
                max(observed),
            )

        for (function, kind), series in self.series.items():
            attributes = {"function": function, "kind": kind}
            running, queued = self.in_pools((function, kind))
            put("aiothreads.call.started", attributes, series.submitted)
            for outcome in OUTCOMES:
                put(
                    "aiothreads.call.finished",
                    {**attributes, "outcome": outcome},
                    series.ended[outcome],
                )
                observed = [o.value for o in series.durations if o.outcome == outcome]
                if observed:
                    put(
                        "aiothreads.call.duration",
                        {**attributes, "outcome": outcome},
                        histogram(observed),
                    )
            if series.waits:
                put("aiothreads.call.wait.duration", attributes, histogram(series.waits))
            put("aiothreads.call.active", attributes, running)
            put("aiothreads.call.queued", attributes, queued)
            put("aiothreads.call.slow", attributes, 0)
            alive = running if kind == "separate" else 0
            put("aiothreads.thread.started", attributes, series.threads_started)
            put("aiothreads.thread.active", attributes, alive)
            put("aiothreads.generator.items", attributes, series.items)
            put("aiothreads.generator.blocked", attributes, 0.0)
            for reason, count in series.stopped.items():
                put(
                    "aiothreads.generator.stopped",
                    {**attributes, "reason": reason},
                    count,
                )
        for function, kind in self.streams_seen:
            attributes = {"function": function, "kind": kind}
            depth, bounded, _, active = self.live_streams((function, kind))
            put("aiothreads.channel.depth", attributes, depth)
            put("aiothreads.channel.capacity", attributes, bounded)
            put("aiothreads.generator.active", attributes, active)
        for name, (busy, idle, maximum, queued) in self.pool_totals().items():
            put("aiothreads.pool.thread.count", {"pool": name, "state": "busy"}, busy)
            put("aiothreads.pool.thread.count", {"pool": name, "state": "idle"}, idle)
            put("aiothreads.pool.thread.limit", {"pool": name}, maximum)
            put("aiothreads.pool.queue.size", {"pool": name}, queued)
            for reason in ("shut_down", "rejected", "dropped"):
                put("aiothreads.pool.call.refused", {"pool": name, "reason": reason}, 0)
        return points

    # -- the end -------------------------------------------------------------------

    def teardown(self) -> None:
        """Let every call and generator end, and wait for them; then put everything back."""
        try:
            for call in self.calls:
                call.gate.release.set()
            for iteration in self.iterators:
                iteration.feed.end = "finish"
                for _ in range(3):
                    iteration.feed.permits.release()
            deadline = time.monotonic() + TIMEOUT
            for work in [*self.calls, *self.iterators]:
                work.ended.wait(max(0.0, deadline - time.monotonic()))
            for thread in set(threading.enumerate()) - self.threads_before:  # dedicated ones
                thread.join(max(0.0, deadline - time.monotonic()))
            self.run(self.every_outcome_delivered())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            instrumentation.reset()
            probes_read(self.real_time)
            self.tracers.shutdown()
            self.meters.shutdown()

    async def every_outcome_delivered(self) -> None:
        """Retrieve every outcome, and wait until the pools are idle for the next example."""
        if self.futures:
            await asyncio.wait(self.futures, timeout=TIMEOUT)
        for future in self.futures:
            if future.done() and not future.cancelled():
                future.exception()
        pools = [pool for pool in self.pools if isinstance(pool, Pool)]
        await turns_until(
            lambda: all(pool.found() == (0, pool.size, 0) for pool in pools), "idle pools"
        )


def prometheus_samples(
    registry: CollectorRegistry,
) -> tuple[dict[Key, object], dict[Key, object]]:
    """Every sample of aiothreads' series on ``registry`` (pools: the model's), and exemplars."""
    values: dict[Key, object] = {}
    exemplars: dict[Key, object] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("pool", POOL) not in (POOL, STREAM_POOL):
                continue
            where = key(sample.name, sample.labels)
            values[where] = sample.value
            if sample.exemplar is not None:
                ids = sample.exemplar.labels
                exemplars[where] = Exemplar(ids["trace_id"], ids["span_id"], sample.exemplar.value)
    return values, exemplars


def opentelemetry_points(reader: InMemoryMetricReader) -> dict[Key, object]:
    """Every data point of aiothreads' instruments (pools: the model's)."""
    points: dict[Key, object] = {}
    data = reader.get_metrics_data()
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = {
                        name: str(value) for name, value in (point.attributes or {}).items()
                    }
                    if attributes.get("pool", POOL) not in (POOL, STREAM_POOL):
                        continue
                    if isinstance(point, HistogramDataPoint):
                        assert tuple(point.explicit_bounds) == BOUNDS[:-1]
                        value: object = Histogram(
                            tuple(point.bucket_counts),
                            point.count,
                            point.sum,
                            point.min,
                            point.max,
                        )
                    else:
                        assert isinstance(point, NumberDataPoint), point
                        value = point.value
                    points[key(metric.name, attributes)] = value
    return points


class OnAsyncio(MetricsMachine):
    loop_kind = "asyncio"


class OnUvloop(MetricsMachine):
    loop_kind = "uvloop"


def machine_settings(examples: int, steps: int) -> settings:
    """``model_settings``; in the fixed runs a failure is reported as found, not shrunk.

    Shrinking replays the machine hundreds of times, each replay with its loop, threads
    and both backends, which can take longer than the 60 seconds a test may run (the
    timeout ends the whole session). The long searches (``nox -s models``) have no
    timeout, and shrink; never with the explain phase, whose line tracing makes every
    replay many times slower.
    """
    fixed = model_settings(examples=examples, steps=steps)
    if LONG_SEARCH:
        return settings(fixed, phases=[phase for phase in Phase if phase is not Phase.explain])
    found = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)
    return settings(fixed, phases=found, report_multiple_bugs=False)


class TestMetricsModelOnAsyncio(OnAsyncio.TestCase):  # type: ignore[misc, valid-type]
    settings = machine_settings(examples=60, steps=20)

    def tearDown(self) -> None:
        OnAsyncio.shut_shared_pools_down()


@pytest.mark.skipif("uvloop" not in LOOP_FACTORIES, reason="uvloop is not installed")
class TestMetricsModelOnUvloop(OnUvloop.TestCase):  # type: ignore[misc, valid-type]
    settings = machine_settings(examples=60, steps=20)

    def tearDown(self) -> None:
        OnUvloop.shut_shared_pools_down()


MULTIPROCESS_SERVICE = """
import asyncio, json, multiprocessing, sys, threading, time
from prometheus_client import CollectorRegistry, multiprocess
from aiothreads import _executor, threaded, threaded_iterable
from aiothreads.instrumentation import _probes

TIMEOUT = 20
FUNCTIONS = ("__mp_main__.hold", "__mp_main__.items")


class Clock:
    now = 100.0

    def perf_counter(self):
        return self.now

    time_ns = staticmethod(time.time_ns)


@threaded
def hold(started, release, fail):
    started.release()
    if not release.wait(TIMEOUT):
        raise TimeoutError("never released")
    if fail:
        raise ValueError("failed on purpose")


def items(proceed, finish):
    yield 0
    if not proceed.wait(TIMEOUT):
        raise TimeoutError("never let go on")
    if not finish:
        yield 1  # the consumer has left: handing it over stops the generator


eight = threaded_iterable(items, max_size=8)
four = threaded_iterable(items, max_size=4)


def work(index, ready, go, done, leave):
    clock = _probes.time = Clock()
    _executor._perf_counter = clock.perf_counter  # what calls counted without a probe read

    async def main():
        started, release = threading.Semaphore(0), threading.Event()
        released = threading.Event()
        released.set()
        for _ in range(index + 1):
            await hold(started, released, False)
        try:
            await hold(started, released, True)
        except ValueError:
            pass
        live = [asyncio.ensure_future(hold(started, release, False)) for _ in range(2)]
        assert all(started.acquire(timeout=TIMEOUT) for _ in range(index + 4))
        proceed = [threading.Event() for _ in range(3)]
        closed, finished = eight(proceed[0], False), four(proceed[1], True)
        left = eight(proceed[2], False)
        assert await closed.__anext__() == 0
        assert await finished.__anext__() == 0
        async for _ in left:
            break
        proceed[2].set()
        await asyncio.wait_for(left.wait_closed(), TIMEOUT)
        ready.set()
        assert go.wait(TIMEOUT)
        clock.now += 0.3
        release.set()
        await asyncio.wait_for(asyncio.gather(*live), TIMEOUT)
        closing = closed.close()
        proceed[0].set()
        await asyncio.wait_for(asyncio.ensure_future(closing), TIMEOUT)
        proceed[1].set()
        assert [item async for item in finished] == []
        done.set()
        assert leave.wait(TIMEOUT)

    asyncio.run(main())


def scrape():
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("function") in FUNCTIONS:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found[sample.name + "{" + labels + "}"] = sample.value
    return found


if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    ready, done = [context.Event() for _ in range(2)], [context.Event() for _ in range(2)]
    go, leave = context.Event(), context.Event()
    workers = [
        context.Process(target=work, args=(index, ready[index], go, done[index], leave))
        for index in range(2)
    ]
    for worker in workers:
        worker.start()
    scrapes = {}
    try:
        assert all(event.wait(TIMEOUT) for event in ready), "a worker never got ready"
        scrapes["live"] = scrape()
        go.set()
        assert all(event.wait(TIMEOUT) for event in done), "a worker never finished"
        scrapes["ended"] = scrape()
    finally:
        leave.set()
        for worker in workers:
            worker.join(TIMEOUT)
    assert [worker.exitcode for worker in workers] == [0, 0]
    print(json.dumps(scrapes))
"""


class ProcessModel:
    """What one worker process of ``MULTIPROCESS_SERVICE`` counted, phase by phase.

    Worker ``index`` makes ``index + 1`` calls that return, one that fails, then two that it
    holds; it opens two iterators of one function (capacities 8 and 4) and leaves a third
    with ``break``. Then (``ended``) the clock moves 0.3 s, the held calls return, one
    iterator is closed and the other runs to its end.
    """

    CALLS: Final = {"function": "__mp_main__.hold", "kind": "threaded"}
    STREAMS: Final = {"function": "__mp_main__.items", "kind": "iterable"}

    def __init__(self, index: int, ended: bool) -> None:
        self.values: dict[str, float] = {}
        later = (100.0 + 0.3) - 100.0
        held = [later] * 2 if ended else []
        calls, streams = self.CALLS, self.STREAMS
        self.put("aiothreads_calls_started_total", calls, index + 4)
        self.finished(calls, ok=index + 1 + len(held), error=1, cancelled=0)
        self.put("aiothreads_calls_in_flight", calls, 0 if ended else 2)
        self.histogram("aiothreads_call_duration_seconds", calls, [0.0] * (index + 2) + held)
        self.histogram("aiothreads_call_wait_seconds", calls, [0.0] * (index + 4))
        self.put("aiothreads_calls_started_total", streams, 3)
        self.finished(streams, ok=int(ended), error=0, cancelled=1 + int(ended))
        self.put("aiothreads_calls_in_flight", streams, 0 if ended else 2)
        self.put("aiothreads_iterators_active", streams, 0 if ended else 2)
        self.put("aiothreads_channel_capacity", streams, 0 if ended else 12)
        self.put("aiothreads_items_yielded_total", streams, 3 if ended else 1)
        self.put(
            "aiothreads_generator_cancellations_total",
            {**streams, "reason": "break"},
            1,
        )
        if ended:
            self.put(
                "aiothreads_generator_cancellations_total",
                {**streams, "reason": "closed"},
                1,
            )
        self.histogram("aiothreads_call_duration_seconds", streams, [0.0, *([later] * 2 * ended)])
        self.histogram("aiothreads_call_wait_seconds", streams, [0.0] * 3)

    def put(self, name: str, labels: Mapping[str, str], value: float) -> None:
        self.values[show(key(name, labels))] = value

    def finished(self, labels: Mapping[str, str], **outcomes: int) -> None:
        for outcome, count in outcomes.items():
            self.put("aiothreads_calls_finished_total", {**labels, "outcome": outcome}, count)

    def histogram(self, name: str, labels: Mapping[str, str], observed: list[float]) -> None:
        for bound in BOUNDS:
            within = sum(value <= bound for value in observed)
            self.put(f"{name}_bucket", {**labels, "le": le(bound)}, within)
        self.put(f"{name}_count", labels, len(observed))
        self.put(f"{name}_sum", labels, math.fsum(observed))


def test_the_multiprocess_scrape_adds_up_the_workers_models(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    script = tmp_path / "service.py"
    script.write_text(textwrap.dedent(MULTIPROCESS_SERVICE))
    environment = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "AIOTHREADS_INSTRUMENTATION": "prometheus",
    }
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        env=environment,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    scrapes = json.loads(completed.stdout)
    assert sorted(scrapes) == ["ended", "live"]
    for phase, scraped in scrapes.items():
        expected: dict[str, float] = {}
        for index in range(2):
            for sample, value in ProcessModel(index, ended=phase == "ended").values.items():
                expected[sample] = expected.get(sample, 0) + value
        problems = [
            f"{sample} = {scraped.get(sample)}, the workers' models add up to {value}"
            for sample, value in expected.items()
            if sample not in scraped or not same(scraped[sample], value)
        ]
        problems += [
            f"unexpected {sample} = {value}"
            for sample, value in scraped.items()
            if sample not in expected and value != 0
        ]
        assert not problems, f"{phase}:\n" + "\n".join(problems)
