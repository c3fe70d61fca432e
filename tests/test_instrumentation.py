"""Metrics, spans and log events: every one the docs list, with real backends."""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import time_ns
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest

from aiothreads import (
    BoundThreaded,
    BoundThreadedIterable,
    CapacityLimiter,
    ExecutorRefused,
    IteratorWrapper,
    ThreadedIterableBase,
    ThreadedSeparate,
    instrumentation,
    runs_in_threads,
    snapshot,
    sync_await,
    sync_wait_coroutine,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
    wait_coroutine,
)
from aiothreads.instrumentation import METRICS, _hooks, _probes
from aiothreads.instrumentation._hooks import current as current_telemetry
from tests.loops import cancels_itself
from tests.metrics_alone import count_calls_only
from tests.python_process import run_python
from tests.waiting import queued_for_a_place, turns_until

MODULE = __name__
LIMIT_WAIT = "aiothreads.limit_wait_seconds"


class _SignalIteratorEnd(SpanProcessor):
    """Sets an event when an iterator's span ends: its producer reported everything."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.startswith("iterable"):
            self.ended.set()


@dataclass
class Telemetry:
    registry: CollectorRegistry
    spans: InMemorySpanExporter
    provider: TracerProvider
    logs: list[dict[str, Any]]
    iterator_end: _SignalIteratorEnd

    async def iterator_ended(self) -> None:
        assert await asyncio.to_thread(self.iterator_end.ended.wait, 5)

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        matching = [span for span in self.finished_spans() if span.name == name]
        assert len(matching) == 1, [span.name for span in self.finished_spans()]
        return matching[0]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if entry["event"] == event]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    iterator_end = _SignalIteratorEnd()
    provider.add_span_processor(iterator_end)
    with structlog.testing.capture_logs() as logs:
        instrumentation.configure(
            registry=registry, tracer_provider=provider, structlog=True, prometheus=True
        )
        try:
            yield Telemetry(registry, exporter, provider, logs, iterator_end)
        finally:
            instrumentation.reset()
            provider.shutdown()
    structlog.reset_defaults()  # capture_logs leaves structlog marked as configured


async def wait_in_own_thread(event: threading.Event) -> bool:
    """Wait for ``event`` without using the loop's (possibly saturated) default executor."""
    with ThreadPoolExecutor(1) as waiter:
        return await asyncio.get_running_loop().run_in_executor(waiter, event.wait, 5)


def name(function: str) -> str:
    return f"{MODULE}.{function}"


@threaded
def add(a: int, b: int) -> int:
    return a + b


class _Broken(Exception):
    pass


@threaded
def broken() -> None:
    raise _Broken("no")


@pytest.mark.asyncio
async def test_successful_call_metrics(telemetry: Telemetry) -> None:
    began = time.perf_counter()
    assert await add(1, 2) == 3
    elapsed = time.perf_counter() - began
    labels = {"function": name("add"), "kind": "threaded"}
    assert telemetry.value("aiothreads_calls_started_total", **labels) == 1
    assert telemetry.value("aiothreads_calls_finished_total", outcome="ok", **labels) == 1
    assert telemetry.value("aiothreads_call_duration_seconds_count", **labels) == 1
    assert telemetry.value("aiothreads_call_wait_seconds_count", **labels) == 1
    # Parts of the call, so never longer than the whole of it as the caller saw it.
    assert 0 <= telemetry.value("aiothreads_call_wait_seconds_sum", **labels) <= elapsed
    assert 0 <= telemetry.value("aiothreads_call_duration_seconds_sum", **labels) <= elapsed
    assert telemetry.events("threaded call failed") == []
    assert telemetry.value("aiothreads_calls_in_flight", **labels) == 0
    assert telemetry.value("aiothreads_calls_queued", **labels) == 0


@pytest.mark.asyncio
async def test_calls_in_flight_and_queued_while_running(telemetry: Telemetry) -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
    started, release = threading.Event(), threading.Event()

    @threaded
    def hold() -> None:
        started.set()
        release.wait(5)

    first, second = hold(), hold()
    assert await wait_in_own_thread(started)
    labels = {
        "function": name("test_calls_in_flight_and_queued_while_running.<locals>.hold"),
        "kind": "threaded",
    }
    assert telemetry.value("aiothreads_calls_in_flight", **labels) == 1
    assert telemetry.value("aiothreads_calls_queued", **labels) == 1
    release.set()
    await asyncio.gather(first, second)
    assert telemetry.value("aiothreads_calls_in_flight", **labels) == 0
    assert telemetry.value("aiothreads_calls_queued", **labels) == 0
    assert telemetry.value("aiothreads_call_wait_seconds_count", **labels) == 2


@pytest.mark.asyncio
async def test_failed_call_metrics_span_and_event(telemetry: Telemetry) -> None:
    with pytest.raises(_Broken):
        await broken()
    labels = {"function": name("broken"), "kind": "threaded"}
    assert telemetry.value("aiothreads_calls_finished_total", outcome="error", **labels) == 1
    span = telemetry.span(f"threaded {name('broken')}")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "no"  # the type is in error.type, not repeated
    assert span.attributes is not None
    assert span.attributes["error.type"] == f"{__name__}._Broken"
    assert [event.name for event in span.events] == ["exception"]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"].endswith("_Broken")
    (event,) = telemetry.events("threaded call failed")
    assert event["function"] == name("broken")
    assert event["kind"] == "threaded"
    assert event["error"] == "_Broken: no"
    assert event["trace_id"] == format(span.context.trace_id, "032x")
    assert event["span_id"] == format(span.context.span_id, "016x")
    assert event["thread"] == span.attributes["thread.name"]  # type: ignore[index]


@pytest.mark.asyncio
async def test_call_cancelled_before_it_ran(telemetry: Telemetry) -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
    release = threading.Event()

    @threaded
    def hold() -> None:
        release.wait(5)

    @threaded
    def never() -> None:
        raise AssertionError("must not run")

    blocker, queued = hold(), never()
    queued.cancel()
    release.set()
    await blocker
    await asyncio.get_running_loop().run_in_executor(None, lambda: None)  # the queue drained
    labels = {
        "function": name("test_call_cancelled_before_it_ran.<locals>.never"),
        "kind": "threaded",
    }
    assert telemetry.value("aiothreads_calls_finished_total", outcome="cancelled", **labels) == 1
    assert telemetry.value("aiothreads_calls_queued", **labels) == 0
    span = telemetry.span(f"threaded {labels['function']}")
    assert span.attributes is not None
    assert span.attributes["aiothreads.outcome"] == "cancelled"


@pytest.mark.asyncio
async def test_span_attributes_and_parenting(telemetry: Telemetry) -> None:
    tracer = telemetry.provider.get_tracer("test")
    inner_tracer = telemetry.provider.get_tracer("driver")

    @threaded
    def query() -> int:
        with inner_tracer.start_as_current_span("db query"):
            return threading.get_ident()

    with tracer.start_as_current_span("request") as request:
        thread_id = await query()
    call = telemetry.span(f"threaded {name('test_span_attributes_and_parenting.<locals>.query')}")
    driver = telemetry.span("db query")
    assert call.parent is not None
    assert call.parent.span_id == request.get_span_context().span_id
    assert driver.parent is not None
    assert driver.parent.span_id == call.context.span_id
    assert call.attributes is not None
    assert call.attributes["code.function.name"].endswith("query")
    assert call.attributes["thread.id"] == thread_id
    assert call.attributes["thread.name"] != threading.current_thread().name
    assert call.attributes["aiothreads.kind"] == "threaded"
    assert call.attributes["aiothreads.outcome"] == "ok"
    assert call.kind is trace.SpanKind.INTERNAL


@pytest.mark.asyncio
async def test_each_span_names_the_thread_that_ran_its_call(telemetry: Telemetry) -> None:
    both_running = threading.Barrier(2, timeout=5)
    with ThreadPoolExecutor(2, thread_name_prefix="meeting") as pool:

        @threaded(executor=pool)
        def meet() -> tuple[int, str]:
            both_running.wait()  # so the two calls run in two threads
            return threading.get_ident(), threading.current_thread().name

        ran_in = await asyncio.gather(meet(), meet())
    assert len(set(ran_in)) == 2
    function = name("test_each_span_names_the_thread_that_ran_its_call.<locals>.meet")
    spans = [span for span in telemetry.finished_spans() if span.name == f"threaded {function}"]
    named = sorted(
        (span.attributes["thread.id"], span.attributes["thread.name"])
        for span in spans
        if span.attributes is not None
    )
    assert named == sorted(ran_in)


@pytest.mark.asyncio
async def test_separate_thread_metrics_and_events(telemetry: Telemetry) -> None:
    @threaded_separate
    def job() -> str:
        return threading.current_thread().name

    thread_name = await job()
    labels = {
        "function": name("test_separate_thread_metrics_and_events.<locals>.job"),
        "kind": "separate",
    }
    assert telemetry.value("aiothreads_separate_threads_started_total", **labels) == 1
    assert telemetry.value("aiothreads_separate_threads_alive", **labels) == 0
    assert [entry["thread"] for entry in telemetry.events("separate thread started")] == [
        thread_name
    ]
    (finished,) = telemetry.events("separate thread finished")
    assert finished["outcome"] == "ok"


@pytest.mark.asyncio
async def test_separate_threads_alive_while_running(telemetry: Telemetry) -> None:
    running, release = threading.Barrier(3, timeout=5), threading.Event()

    @threaded_separate
    def job() -> None:
        running.wait()
        release.wait(5)

    calls = [job(), job()]
    await asyncio.to_thread(running.wait)
    labels = {
        "function": name("test_separate_threads_alive_while_running.<locals>.job"),
        "kind": "separate",
    }
    assert telemetry.value("aiothreads_separate_threads_alive", **labels) == 2
    release.set()
    await asyncio.gather(*calls)
    assert telemetry.value("aiothreads_separate_threads_alive", **labels) == 0


@pytest.mark.asyncio
async def test_a_separate_iterators_thread_is_counted_among_the_separate_threads(
    telemetry: Telemetry,
) -> None:
    producing, release = threading.Event(), threading.Event()

    @threaded_iterable_separate(max_size=1)
    def rows() -> Generator[int, None, None]:
        yield 1
        producing.set()
        release.wait(5)
        yield 2

    labels = {
        "function": name(
            "test_a_separate_iterators_thread_is_counted_among_the_separate_threads.<locals>.rows"
        ),
        "kind": "iterable_separate",
    }
    async with rows() as items:
        try:
            assert await items.__anext__() == 1
            assert await wait_in_own_thread(producing)
            assert telemetry.value("aiothreads_separate_threads_started_total", **labels) == 1
            assert telemetry.value("aiothreads_separate_threads_alive", **labels) == 1
        finally:
            release.set()  # its thread runs on to the end
        assert [item async for item in items] == [2]
    await telemetry.iterator_ended()  # its thread counted its own end before the span's
    assert telemetry.value("aiothreads_separate_threads_started_total", **labels) == 1
    assert telemetry.value("aiothreads_separate_threads_alive", **labels) == 0


@threaded_iterable(max_size=4)
def numbers(limit: int) -> Generator[int, None, None]:
    yield from range(limit)


@pytest.mark.asyncio
async def test_items_yielded_and_iterator_span(telemetry: Telemetry) -> None:
    assert len([item async for item in numbers(1000)]) == 1000
    await telemetry.iterator_ended()
    labels = {"function": name("numbers"), "kind": "iterable"}
    assert telemetry.value("aiothreads_items_yielded_total", **labels) == 1000
    assert telemetry.value("aiothreads_calls_finished_total", outcome="ok", **labels) == 1
    assert telemetry.value("aiothreads_iterators_active", **labels) == 0
    span = telemetry.span(f"iterable {name('numbers')}")
    assert span.attributes is not None
    assert span.attributes["aiothreads.items"] == 1000
    assert span.attributes["aiothreads.outcome"] == "ok"


@pytest.mark.asyncio
async def test_a_wrapper_built_by_hand_is_traced_under_its_generators_name(
    telemetry: Telemetry,
) -> None:
    def letters() -> Generator[str, None, None]:
        yield from "abc"

    wrapper: IteratorWrapper[Any, str] = IteratorWrapper(letters, max_size=1)  # as in 1.x
    assert [item async for item in wrapper] == ["a", "b", "c"]
    await telemetry.iterator_ended()
    function = name(
        "test_a_wrapper_built_by_hand_is_traced_under_its_generators_name.<locals>.letters"
    )
    labels = {"function": function, "kind": "iterable"}
    assert telemetry.value("aiothreads_items_yielded_total", **labels) == 3
    assert telemetry.span(f"iterable {function}").attributes is not None


@pytest.mark.asyncio
async def test_channel_depth_capacity_and_backpressure(telemetry: Telemetry) -> None:
    about_to_block = threading.Event()

    @threaded_iterable(max_size=3)
    def fast() -> Generator[int, None, None]:
        for number in range(100):
            if number == 4:
                about_to_block.set()
            yield number

    labels = {
        "function": name("test_channel_depth_capacity_and_backpressure.<locals>.fast"),
        "kind": "iterable",
    }
    began = time.perf_counter()
    async with fast() as items:
        # Taking two drains the channel to half, which wakes the blocked producer.
        assert [await items.__anext__(), await items.__anext__()] == [0, 1]
        assert await asyncio.to_thread(about_to_block.wait, 5)
        assert telemetry.value("aiothreads_channel_capacity", **labels) == 3
        assert telemetry.value("aiothreads_iterators_active", **labels) == 1
        assert 0 < telemetry.value("aiothreads_channel_depth", **labels) <= 3
        assert [item async for item in items] == list(range(2, 100))
    await telemetry.iterator_ended()
    blocked = telemetry.value("aiothreads_producer_blocked_seconds_total", **labels)
    assert 0 < blocked <= time.perf_counter() - began  # one producer blocks one wait at a time
    assert telemetry.value("aiothreads_iterators_active", **labels) == 0
    assert telemetry.value("aiothreads_channel_depth", **labels) == 0


@pytest.mark.asyncio
async def test_unbounded_capacity_is_infinite(telemetry: Telemetry) -> None:
    gate = threading.Event()

    @threaded_iterable
    def unbounded() -> Generator[int, None, None]:
        yield 1
        gate.wait(5)

    labels = {
        "function": name("test_unbounded_capacity_is_infinite.<locals>.unbounded"),
        "kind": "iterable",
    }
    async with unbounded() as items:
        await items.__anext__()
        assert telemetry.value("aiothreads_channel_capacity", **labels) == float("inf")
        gate.set()


@pytest.mark.asyncio
async def test_an_iterator_waiting_for_a_thread_is_queued_not_active(
    telemetry: Telemetry,
) -> None:
    release, finish = threading.Event(), threading.Event()

    def rows() -> Generator[int, None, None]:
        yield 1
        finish.wait(5)

    labels = {
        "function": name(
            "test_an_iterator_waiting_for_a_thread_is_queued_not_active.<locals>.rows"
        ),
        "kind": "iterable",
    }
    with ThreadPoolExecutor(1) as only_thread:
        busy = asyncio.get_running_loop().run_in_executor(only_thread, release.wait, 5)
        async with threaded_iterable(rows, executor=only_thread)() as items:
            first = asyncio.ensure_future(items.__anext__())
            await turns_until(
                lambda: telemetry.value("aiothreads_calls_queued", **labels) == 1,
                "the generator queued behind the busy thread",
            )
            assert telemetry.value("aiothreads_iterators_active", **labels) == 0
            release.set()
            assert await first == 1
            assert telemetry.value("aiothreads_calls_queued", **labels) == 0
            assert telemetry.value("aiothreads_iterators_active", **labels) == 1
            finish.set()
            assert [item async for item in items] == []
        assert await busy
    await telemetry.iterator_ended()
    assert telemetry.value("aiothreads_iterators_active", **labels) == 0


def endless_source(started: threading.Event) -> Generator[int, None, None]:
    started.set()
    number = 0
    while True:
        yield number
        number += 1


endless = threaded_iterable(endless_source, max_size=1)
endless_separate = threaded_iterable_separate(endless_source, max_size=1)


async def stop_by_break() -> None:
    started = threading.Event()
    async for _ in endless(started):
        break


async def stop_by_close() -> None:
    started = threading.Event()
    items = endless(started)
    await items.__anext__()
    await items.aclose()


async def stop_by_cancel() -> None:
    first_taken = asyncio.Event()
    release = threading.Event()

    @threaded_iterable(max_size=1)
    def stalls() -> Generator[int, None, None]:
        yield 1
        release.wait(5)  # the consumer waits in __anext__ meanwhile
        yield 2

    async def consume() -> None:
        async for _ in stalls():
            first_taken.set()

    task = asyncio.create_task(consume())
    await first_taken.wait()  # the consumer went straight back into __anext__
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()


async def stop_by_collection() -> None:
    started = threading.Event()
    items = endless(started)
    await items.__anext__()
    del items
    gc.collect()


async def stop_by_error() -> None:
    @threaded_iterable
    def fails() -> Generator[int, None, None]:
        yield 1
        raise _Broken("generator")

    with pytest.raises(_Broken):
        async for _ in fails():
            pass


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        (stop_by_break, "break"),
        (stop_by_close, "closed"),
        (stop_by_collection, "collected"),
        (stop_by_error, "error"),
    ],
)
async def test_generator_cancellation_reasons(telemetry: Telemetry, stop: Any, reason: str) -> None:
    await stop()
    await telemetry.iterator_ended()
    total = sum(
        sample.value
        for metric in telemetry.registry.collect()
        if metric.name == "aiothreads_generator_cancellations"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["reason"] == reason
    )
    assert total == 1
    (event,) = telemetry.events("threaded generator cancelled")
    assert event["reason"] == reason
    assert isinstance(event["items"], int)  # the items it handed over before it stopped
    span = next(s for s in telemetry.finished_spans() if s.name.startswith("iterable "))
    assert any(
        e.name == "cancelled" and e.attributes is not None and e.attributes["reason"] == reason
        for e in span.events
    )


class _RaisingProcessor(SpanProcessor):
    """A span processor with a bug: it raises whenever a span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor bug")


@pytest.mark.asyncio
async def test_a_span_processor_that_raises_never_breaks_a_call() -> None:
    provider = TracerProvider()
    provider.add_span_processor(_RaisingProcessor())
    instrumentation.configure(tracer_provider=provider, prometheus=False, structlog=False)
    try:

        async def on_the_loop() -> str:
            return "awaited"

        @threaded
        def call() -> str:
            return sync_await(on_the_loop)

        @threaded_iterable(max_size=1)
        def rows() -> Generator[int, None, None]:
            yield from range(3)

        assert await call() == "awaited"
        assert [row async for row in rows()] == [0, 1, 2]
        with pytest.raises(_Broken):
            await broken()
    finally:
        instrumentation.reset()
        provider.shutdown()


class _SpanWithoutContext:
    """A recording span whose context cannot be read, as a broken tracing backend's."""

    def is_recording(self) -> bool:
        return True

    def get_span_context(self) -> Any:
        raise RuntimeError("the span's context is lost")

    def __getattr__(self, name: str) -> Callable[..., None]:  # set_attributes, end, ...
        return lambda *args, **kwargs: None


class _TracerOfSpansWithoutContext:
    def start_span(self, *args: Any, **kwargs: Any) -> _SpanWithoutContext:
        return _SpanWithoutContext()


class _ProviderOfSpansWithoutContext(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _TracerOfSpansWithoutContext()


@pytest.mark.asyncio
async def test_a_span_whose_context_cannot_be_read_never_breaks_a_call() -> None:
    instrumentation.configure(
        tracer_provider=_ProviderOfSpansWithoutContext(),
        registry=CollectorRegistry(),
        structlog=False,
    )
    try:
        assert await add(2, 3) == 5  # its duration would carry the span's ids as an exemplar
        with pytest.raises(_Broken):
            await broken()
    finally:
        instrumentation.reset()


class _BrokenLogger:
    """A structlog logger whose every level raises, as a log pipeline that is down would."""

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            raise RuntimeError("the log pipeline is down")

        return log


@pytest.mark.asyncio
async def test_a_log_backend_that_raises_never_breaks_a_call() -> None:
    instrumentation.configure(logger=_BrokenLogger(), prometheus=False, opentelemetry=False)
    try:

        @threaded_separate
        def separate() -> str:
            return "returned"

        assert await separate() == "returned"  # logs its thread's start and end
        with pytest.raises(_Broken):
            await broken()  # logs the failure
    finally:
        instrumentation.reset()


class _ListLogger:
    """A structlog-like logger that keeps every event it is given, at any level."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.entries.append((level, event, fields))

        return log


@pytest.mark.asyncio
async def test_log_events_go_to_the_logger_passed_to_configure() -> None:
    logger = _ListLogger()
    instrumentation.configure(logger=logger, prometheus=False, opentelemetry=False)
    try:
        with pytest.raises(_Broken):
            await broken()  # logs the failure
    finally:
        instrumentation.reset()
    assert [(level, event) for level, event, _ in logger.entries] == [
        ("debug", "threaded call failed")
    ]
    (_, _, fields) = logger.entries[0]
    assert fields["function"] == name("broken")
    assert fields["error"] == "_Broken: no"


class _MetricsOnAFullDisk:
    """Metrics whose series cannot be created, as in multiprocess mode on a full disk."""

    def series(self, kind: str, function: str) -> Any:
        raise OSError(28, "No space left on device")

    def stream_opened(
        self, kind: str, function: str, capacity: int, depth: Callable[[], int]
    ) -> object:
        return None

    def stream_closed(self, token: object) -> None:
        pass


@pytest.mark.asyncio
async def test_a_metrics_backend_that_cannot_create_a_series_never_breaks_a_call() -> None:
    _hooks.install(_probes.Telemetry(metrics=_MetricsOnAFullDisk()))
    try:

        @threaded_iterable(max_size=1)
        def rows() -> Generator[int, None, None]:
            yield from range(3)

        assert await add(2, 3) == 5
        assert [row async for row in rows()] == [0, 1, 2]
        with pytest.raises(_Broken):
            await broken()
    finally:
        instrumentation.reset()


@pytest.mark.asyncio
async def test_spans_made_in_a_generator_are_children_of_its_span(telemetry: Telemetry) -> None:
    tracer = telemetry.provider.get_tracer("test")

    @threaded_iterable(max_size=1)
    def rows() -> Generator[int, None, None]:
        with tracer.start_as_current_span("fetch row"):
            yield 1

    assert [row async for row in rows()] == [1]
    await telemetry.iterator_ended()
    stream = telemetry.span(f"iterable {name(rows.__qualname__)}")
    fetch = telemetry.span("fetch row")
    assert fetch.parent is not None
    assert fetch.parent.span_id == stream.context.span_id


@pytest.mark.asyncio
async def test_a_failing_generator_is_reported_with_its_error(telemetry: Telemetry) -> None:
    await stop_by_error()
    await telemetry.iterator_ended()
    span = telemetry.span(f"iterable {name('stop_by_error.<locals>.fails')}")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == f"{__name__}._Broken"
    stopped, raised = span.events  # it stopped early, for an error: its exception
    assert (stopped.name, dict(stopped.attributes or {})) == ("cancelled", {"reason": "error"})
    assert raised.name == "exception"
    (event,) = telemetry.events("threaded call failed")
    assert event["function"] == name("stop_by_error.<locals>.fails")
    assert event["error"] == "_Broken: generator"


@pytest.mark.asyncio
async def test_cancellation_reason_cancelled(telemetry: Telemetry) -> None:
    await stop_by_cancel()
    await telemetry.iterator_ended()
    (event,) = telemetry.events("threaded generator cancelled")
    assert event["reason"] == "cancelled"


def test_cancellation_reason_loop_closed(telemetry: Telemetry) -> None:
    kept: list[object] = []

    async def main() -> None:
        started = threading.Event()
        items = endless_separate(started)
        kept.append(items)
        await items.__anext__()

    asyncio.run(main())
    assert telemetry.iterator_end.ended.wait(5)  # the dedicated thread reports on its way out
    (event,) = telemetry.events("threaded generator cancelled")
    assert event["reason"] == "loop_closed"
    assert event["kind"] == "iterable_separate"


@pytest.mark.asyncio
async def test_sync_await_span_is_a_child_of_the_call(telemetry: Telemetry) -> None:
    tracer = telemetry.provider.get_tracer("test")

    async def lookup(key: str) -> str:
        with tracer.start_as_current_span("cache get"):
            return key

    async def other() -> str:
        return "x"

    @threaded
    def work() -> str:
        return sync_await(lookup, "k") + wait_coroutine(other())

    assert await work() == "kx"
    call = telemetry.span(
        f"threaded {name('test_sync_await_span_is_a_child_of_the_call.<locals>.work')}"
    )
    bridge = telemetry.span(
        f"sync_await {name('test_sync_await_span_is_a_child_of_the_call.<locals>.lookup')}"
    )
    cache = telemetry.span("cache get")
    assert bridge.parent is not None
    assert bridge.parent.span_id == call.context.span_id
    assert cache.parent is not None
    assert cache.parent.span_id == bridge.context.span_id
    labels = {
        "function": name("test_sync_await_span_is_a_child_of_the_call.<locals>.other"),
        "kind": "sync_await",
    }
    assert telemetry.value("aiothreads_calls_finished_total", outcome="ok", **labels) == 1


@pytest.mark.asyncio
async def test_sync_await_that_fails_or_is_cancelled_is_reported_with_its_error(
    telemetry: Telemetry,
) -> None:
    async def refuses() -> None:
        raise _Broken("on the loop")

    @threaded
    def work() -> list[str]:
        current = [trace.get_current_span().name]  # type: ignore[attr-defined]
        with pytest.raises(_Broken):
            sync_await(refuses)
        current.append(trace.get_current_span().name)  # type: ignore[attr-defined]
        with pytest.raises(asyncio.CancelledError):
            sync_await(cancels_itself)
        with pytest.raises(TypeError):
            sync_wait_coroutine("not a loop", _echo, "x")  # type: ignore[arg-type]
        current.append(trace.get_current_span().name)  # type: ignore[attr-defined]
        return current

    call_span = f"threaded {name(work.__qualname__)}"
    assert await work() == [call_span] * 3
    for function, error in ((refuses, "_Broken"), (_echo, "TypeError")):
        span = telemetry.span(f"sync_await {name(function.__qualname__)}")
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"].endswith(error)  # type: ignore[union-attr]
        assert [event.name for event in span.events] == ["exception"]
    cancelled = telemetry.span(
        f"sync_await {f'{cancels_itself.__module__}.{cancels_itself.__qualname__}'}"
    )
    assert cancelled.status.status_code is not StatusCode.ERROR
    labels = {
        "function": f"{cancels_itself.__module__}.{cancels_itself.__qualname__}",
        "kind": "sync_await",
    }
    assert telemetry.value("aiothreads_calls_finished_total", outcome="cancelled", **labels) == 1


async def _echo(value: str) -> str:
    await asyncio.sleep(0)
    return value


class _HandMadeCoroutine(Coroutine[Any, Any, str]):
    """A coroutine object that is not a native coroutine: no __qualname__, no frame."""

    def __init__(self) -> None:
        self._inner = _echo("hand-made")

    def send(self, value: Any) -> Any:
        return self._inner.send(value)

    def throw(self, *args: Any) -> Any:
        return self._inner.throw(*args)

    def close(self) -> None:
        self._inner.close()

    def __await__(self) -> Generator[Any, None, str]:
        return self._inner.__await__()


@pytest.mark.asyncio
async def test_a_hand_made_coroutine_is_named_after_its_class(telemetry: Telemetry) -> None:
    @threaded
    def work() -> str:
        return wait_coroutine(_HandMadeCoroutine())

    assert await work() == "hand-made"
    labels = {"function": "_HandMadeCoroutine", "kind": "sync_await", "outcome": "ok"}
    assert telemetry.value("aiothreads_calls_finished_total", **labels) == 1
    assert telemetry.span("sync_await _HandMadeCoroutine").status.is_ok


@pytest.mark.asyncio
async def test_sync_await_after_the_caller_gave_up_is_cancelled_not_failed(
    telemetry: Telemetry,
) -> None:
    started, caller_gone = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    async def lookup() -> str:
        return "never asked"

    def work() -> None:
        started.set()
        caller_gone.wait(5)
        try:
            sync_await(lookup)
        except BaseException as error:
            raised.append(error)
            raise

    executor = ThreadPoolExecutor(1)
    call = threaded(work, executor=executor)()
    assert await wait_in_own_thread(started)
    call.cancel()
    caller_gone.set()
    executor.shutdown(wait=True)
    assert [type(error) for error in raised] == [asyncio.CancelledError]
    bridge = telemetry.span(f"sync_await {name(lookup.__qualname__)}")
    assert bridge.status.status_code is not StatusCode.ERROR
    assert "error.type" not in (bridge.attributes or {})
    assert bridge.attributes is not None
    assert bridge.attributes["aiothreads.outcome"] == "cancelled"
    labels = {"function": name(lookup.__qualname__), "kind": "sync_await"}
    assert telemetry.value("aiothreads_calls_finished_total", outcome="cancelled", **labels) == 1
    assert telemetry.value("aiothreads_calls_finished_total", outcome="error", **labels) == 0


def assert_refused_under(span: ReadableSpan, parent: trace.Span) -> None:
    """``span`` is an error span of work its executor refused, a child of ``parent``."""
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "aiothreads.ExecutorRefused"
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.asyncio
@pytest.mark.parametrize("when", ["at submit", "while queued"])
async def test_a_call_its_executor_refused_ends_an_error_span_under_the_callers(
    telemetry: Telemetry, when: str
) -> None:
    executor = ThreadPoolExecutor(1)
    started, release = threading.Event(), threading.Event()
    if when == "at submit":
        executor.shutdown()
    else:  # queued behind a call that holds the only worker, then dropped
        executor.submit(lambda: (started.set(), release.wait(5)))
        assert await wait_in_own_thread(started)

    @threaded(executor=executor)
    def refused() -> None:
        pass

    with telemetry.provider.get_tracer("test").start_as_current_span("request") as request:
        call = refused()
    if when == "while queued":
        executor.shutdown(wait=False, cancel_futures=True)
        release.set()
    with pytest.raises(ExecutorRefused):
        await call
    executor.shutdown()
    test = "test_a_call_its_executor_refused_ends_an_error_span_under_the_callers.<locals>"
    span = telemetry.span(f"threaded {name(test + '.refused')}")
    assert_refused_under(span, request)
    (event,) = telemetry.events("threaded call refused")
    assert event["log_level"] == "debug"
    assert event["function"] == name(test + ".refused")
    assert event["kind"] == "threaded"
    assert event["error"].startswith("ExecutorRefused: the executor ")
    assert event["trace_id"] == format(span.context.trace_id, "032x")
    assert event["span_id"] == format(span.context.span_id, "016x")
    labels = {"function": name(test + ".refused"), "kind": "threaded", "outcome": "error"}
    assert telemetry.value("aiothreads_calls_finished_total", **labels) == 1


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_a_call_whose_submit_is_interrupted_is_logged_as_refused_not_as_the_interrupt(
    telemetry: Telemetry,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    interrupt: type[BaseException],
) -> None:
    @runs_in_threads
    class InterruptedExecutor(Executor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            raise interrupt

    @threaded(executor=InterruptedExecutor())
    def interrupted() -> None:
        pass

    loop = loop_factory()
    try:
        with pytest.raises(interrupt):  # the interrupt itself goes on, out of the loop
            loop.run_until_complete(loop.create_task(interrupted()))  # type: ignore[arg-type]
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    test = (
        "test_a_call_whose_submit_is_interrupted_is_logged_as_refused_not_as_the_interrupt"
        ".<locals>.interrupted"
    )
    (event,) = telemetry.events("threaded call refused")
    assert event["error"].startswith("ExecutorRefused: the executor refused the call")
    span = telemetry.span(f"threaded {name(test)}")
    assert span.attributes is not None
    assert span.attributes["error.type"] == "aiothreads.ExecutorRefused"


def _a_result_its_closed_loop_cannot_take(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], *, instrument: bool
) -> str:
    """Run a call whose loop is closed by hand while it runs; return its function's name."""
    started, release = threading.Event(), threading.Event()
    executor = ThreadPoolExecutor(1)

    @threaded(executor=executor, instrument=instrument)
    def outlives_its_loop() -> str:
        started.set()
        release.wait(5)
        return "nobody takes this"

    loop = loop_factory()
    try:
        running = loop.run_until_complete(_started(outlives_its_loop, started))
    finally:
        loop.close()  # by hand, while the call runs
    release.set()
    executor.shutdown(wait=True)  # the thread tried to deliver and gave up
    assert not running.done()
    return name(outlives_its_loop.__qualname__)


def test_a_result_its_closed_loop_cannot_take_is_logged_as_dropped(
    telemetry: Telemetry, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    function = _a_result_its_closed_loop_cannot_take(loop_factory, instrument=True)
    (event,) = telemetry.events("result dropped: event loop closed")
    assert event["log_level"] == "warning"
    assert event["function"] == function
    assert event["kind"] == "threaded"


@pytest.mark.parametrize("instrument", [False, True], ids=["kept out", "metrics alone"])
def test_a_dropped_result_is_logged_even_for_a_function_kept_out_of_instrumentation(
    caplog: pytest.LogCaptureFixture,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    instrument: bool,
) -> None:
    """Also where nothing but metrics records the call (no span, no log at DEBUG)."""
    count_calls_only(CollectorRegistry())
    try:
        with caplog.at_level(logging.WARNING, logger="aiothreads"):
            function = _a_result_its_closed_loop_cannot_take(loop_factory, instrument=instrument)
    finally:
        instrumentation.reset()
    (record,) = caplog.records
    assert record.getMessage().startswith("result dropped: event loop closed function=")
    assert record.aiothreads["function"] == function  # type: ignore[attr-defined]
    if instrument:  # told by the call's telemetry, which knows its kind
        assert record.aiothreads["kind"] == "threaded"  # type: ignore[attr-defined]


async def _started(
    function: Callable[[], Awaitable[str]], started: threading.Event
) -> asyncio.Future[str]:
    future = asyncio.ensure_future(function())
    assert await wait_in_own_thread(started)
    return future


@pytest.mark.asyncio
async def test_a_generator_its_executor_refused_ends_an_error_span_under_the_callers(
    telemetry: Telemetry,
) -> None:
    executor = ThreadPoolExecutor(1)
    executor.shutdown()

    @threaded_iterable(max_size=1, executor=executor)
    def refused() -> Generator[int, None, None]:
        yield 1

    with telemetry.provider.get_tracer("test").start_as_current_span("request") as request:
        stream = refused()
    with pytest.raises(ExecutorRefused):
        await stream.__anext__()  # started outside the request: the span is still its child
    span = telemetry.span(f"iterable {name(refused.__qualname__)}")
    assert_refused_under(span, request)


class _PauseAsSpanStarts(SpanProcessor):
    """Holds the thread that opens a span named ``name`` until ``release`` is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = threading.Event()
        self.release = threading.Event()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.name == self.name:
            self.started.set()
            self.release.wait(5)


@pytest.mark.asyncio
async def test_a_generator_whose_consumer_left_as_its_thread_started_never_runs_its_body(
    telemetry: Telemetry,
) -> None:
    ran: list[str] = []

    @threaded_iterable(max_size=1)
    def rows() -> Generator[int, None, None]:
        ran.append("body")
        yield 1

    # The producer thread opens its span after it took the producer, before the generator.
    pause = _PauseAsSpanStarts(f"iterable {name(rows.__qualname__)}")
    telemetry.provider.add_span_processor(pause)
    stream = rows()
    first = asyncio.ensure_future(stream.__anext__())
    try:
        assert await wait_in_own_thread(pause.started)
        closing = stream.close()  # the consumer leaves while the thread is between the two
    finally:
        pause.release.set()
    await closing
    with pytest.raises(StopAsyncIteration):
        await first
    assert ran == []


def _documented_reason(page: str, row: str) -> str:
    """Return the last cell (the ``reason`` label) of the table row of ``page`` starting ``row``."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text()
    (found,) = [line for line in text.splitlines() if line.startswith(f"| {row}")]
    return found.strip().strip("|").split("|")[-1].strip(" `")


@pytest.mark.asyncio
@pytest.mark.parametrize("when", ["at submit", "while queued"])
async def test_a_generator_its_executor_refused_is_counted_as_the_docs_say(
    telemetry: Telemetry, when: str
) -> None:
    submitted: list[object] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    executor = Recording(1)
    started, release = threading.Event(), threading.Event()
    if when == "at submit":
        executor.shutdown()
    else:  # queued behind a call that holds the only worker, then dropped
        executor.submit(lambda: (started.set(), release.wait(5)))
        assert await wait_in_own_thread(started)

    @threaded_iterable(max_size=1, executor=executor)
    def refused() -> Generator[int, None, None]:
        yield 1

    stream = refused()
    starting = asyncio.ensure_future(stream.__anext__())
    if when == "while queued":
        await turns_until(lambda: len(submitted) == 2, "the generator queued")
        executor.shutdown(wait=False, cancel_futures=True)
        release.set()
    with pytest.raises(ExecutorRefused):
        await starting
    executor.shutdown()
    labels = {"function": name(refused.__qualname__), "kind": "iterable"}
    stopped = [
        metric.name
        for metric in telemetry.registry.collect()
        if metric.name == "aiothreads_generator_cancellations"
        for sample in metric.samples
        if sample.labels.get("function") == labels["function"] and sample.value
    ]
    reason = _documented_reason("semantics.md", "the executor refuses or drops the generator")
    assert stopped == ([] if reason == "" else ["aiothreads_generator_cancellations"])
    if not reason:  # the counter's own definition says so too
        assert "refuse" in _documented_reason("observability.md", "`error`")
    assert telemetry.value("aiothreads_calls_finished_total", outcome="error", **labels) == 1


@runs_in_threads
class _InterruptedExecutor(Executor):
    """An executor whose ``submit()`` is interrupted (Ctrl-C arrives inside it)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise KeyboardInterrupt("interrupted in submit")


def test_a_generator_whose_start_is_interrupted_is_traced_as_refused_by_the_interrupt(
    telemetry: Telemetry, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    @threaded_iterable(max_size=1, executor=_InterruptedExecutor())
    def interrupted() -> Generator[int, None, None]:
        yield 1

    loop = loop_factory()
    try:
        with telemetry.provider.get_tracer("test").start_as_current_span("request") as request:
            stream = interrupted()
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(stream.__anext__())
    finally:
        loop.close()
    span = telemetry.span(f"iterable {name(interrupted.__qualname__)}")
    assert_refused_under(span, request)
    assert span.status.description == "the executor refused the call: interrupted in submit"


@pytest.mark.asyncio
async def test_labels_never_carry_argument_values(telemetry: Telemetry) -> None:
    secret = "s3cr3t-argument"

    @threaded
    def takes(value: str) -> str:
        return value

    @threaded_iterable
    def echoes(value: str) -> Generator[str, None, None]:
        yield value

    await takes(secret)
    assert [item async for item in echoes(secret)] == [secret]
    for metric in telemetry.registry.collect():
        for sample in metric.samples:
            assert secret not in str(sample.labels)
    for span in telemetry.finished_spans():
        assert secret not in str(span.attributes)
    assert secret not in str(telemetry.logs)


def joined(*parts: str) -> str:
    return "".join(parts)


@pytest.mark.asyncio
async def test_a_partial_of_a_partial_is_labelled_by_the_function_inside(
    telemetry: Telemetry,
) -> None:
    tagged = functools.partial(joined, "s3cr3t-")
    vars(tagged)["note"] = "tagged"  # with an attribute, a partial of it is not flattened
    bound_twice = functools.partial(tagged, "argument")
    assert bound_twice.func is tagged
    assert await threaded(bound_twice)() == "s3cr3t-argument"
    labels = {"function": name("joined"), "kind": "threaded"}
    assert telemetry.value("aiothreads_calls_finished_total", outcome="ok", **labels) == 1
    assert telemetry.span(f"threaded {name('joined')}").attributes is not None


def test_every_documented_metric_is_exported(telemetry: Telemetry) -> None:
    async def exercise() -> None:
        await add(1, 1)
        assert [item async for item in numbers(3)] == [0, 1, 2]

    asyncio.run(exercise())
    exported = set()
    for metric in telemetry.registry.collect():
        suffix = "_total" if metric.type == "counter" else ""
        exported.add(metric.name + suffix)
    assert set(METRICS) <= exported


def test_configure_off_and_enabled_backends(telemetry: Telemetry) -> None:
    assert set(instrumentation.enabled_backends()) == {"opentelemetry", "prometheus", "structlog"}
    instrumentation.configure(enabled=False)
    assert instrumentation.enabled_backends() == []
    asyncio.run(add(1, 1))  # type: ignore[arg-type]
    assert telemetry.finished_spans() == []


def test_unknown_backend_in_the_environment_is_left_out_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIOTHREADS_INSTRUMENTATION", "prometheus,statsd")
    try:
        with pytest.warns(RuntimeWarning, match="statsd"):
            instrumentation.configure()
        assert instrumentation.enabled_backends() == ["prometheus"]
    finally:
        instrumentation.reset()


def test_environment_selects_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOTHREADS_INSTRUMENTATION", "opentelemetry")
    try:
        instrumentation.configure()
        assert instrumentation.enabled_backends() == ["opentelemetry"]
    finally:
        instrumentation.reset()


@pytest.mark.parametrize("backend", ["opentelemetry", "prometheus", "structlog"])
def test_an_object_passed_to_configure_switches_its_backend_on_whatever_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setenv("AIOTHREADS_INSTRUMENTATION", "off")
    provider = TracerProvider()
    passed = {
        "opentelemetry": {"tracer_provider": provider},
        "prometheus": {"registry": CollectorRegistry()},
        "structlog": {"logger": structlog.get_logger("aiothreads")},
    }[backend]
    try:
        instrumentation.configure(**passed)
        assert instrumentation.enabled_backends() == [backend]  # the others stay off
    finally:
        instrumentation.reset()
        provider.shutdown()


@pytest.mark.parametrize(
    ("variable", "backends"),
    [
        (" prometheus , opentelemetry", ["opentelemetry", "prometheus"]),
        ("Prometheus,OpenTelemetry", ["opentelemetry", "prometheus"]),
        ("OFF", []),
    ],
    ids=["spaces", "capitals", "off in capitals"],
)
def test_the_environment_is_read_whatever_the_spaces_and_case_of_its_names(
    monkeypatch: pytest.MonkeyPatch, variable: str, backends: list[str]
) -> None:
    monkeypatch.setenv("AIOTHREADS_INSTRUMENTATION", variable)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no name is taken for an unknown backend
            instrumentation.configure()
        assert sorted(instrumentation.enabled_backends()) == backends
    finally:
        instrumentation.reset()


def test_reset_looks_the_backends_up_again(monkeypatch: pytest.MonkeyPatch) -> None:
    instrumentation.configure(enabled=False)
    assert instrumentation.enabled_backends() == []
    monkeypatch.setenv("AIOTHREADS_INSTRUMENTATION", "opentelemetry")
    instrumentation.reset()
    try:
        assert instrumentation.enabled_backends() == ["opentelemetry"]  # from the environment
    finally:
        instrumentation.reset()


def test_without_backends_the_core_gets_nothing_to_call_unless_debug_logs_are_wanted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrumentation.configure(opentelemetry=False, prometheus=False, structlog=False)
    try:
        with caplog.at_level("INFO", logger="aiothreads"):
            assert current_telemetry() is None  # a call then costs one check
        with caplog.at_level("DEBUG", logger="aiothreads"):
            assert current_telemetry() is not None  # the stdlib debug events flow
        instrumentation.configure(enabled=False)  # off: not even debug events
        with caplog.at_level("DEBUG", logger="aiothreads"):
            assert current_telemetry() is None
    finally:
        instrumentation.reset()


def test_reset_lets_debug_log_events_flow_again_after_configure_switched_everything_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    instrumentation.configure(enabled=False)  # off: not even debug events
    monkeypatch.setenv("AIOTHREADS_INSTRUMENTATION", "off")
    instrumentation.reset()
    try:
        with caplog.at_level("DEBUG", logger="aiothreads"):
            # The environment chose no backend; the stdlib debug events flow as without configure.
            assert current_telemetry() is not None
    finally:
        instrumentation.reset()


def test_stdlib_events_without_backends(caplog: pytest.LogCaptureFixture) -> None:
    instrumentation.configure(opentelemetry=False, prometheus=False, structlog=False)
    try:
        with caplog.at_level("DEBUG", logger="aiothreads"):

            @threaded_separate
            def failing() -> None:
                raise _Broken("stdlib")

            with pytest.raises(_Broken):
                asyncio.run(failing())  # type: ignore[arg-type]
    finally:
        instrumentation.reset()
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("separate thread started") for message in messages)
    assert any(message.startswith("threaded call failed") for message in messages)
    failure = next(r for r in caplog.records if r.getMessage().startswith("threaded call failed"))
    assert failure.aiothreads["error"] == "_Broken: stdlib"  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_limit_waits_are_instrumented() -> None:
    registry = CollectorRegistry()
    instrumentation.configure(registry=registry, opentelemetry=False, structlog=False)
    try:
        release = threading.Event()

        @threaded(limit=1)
        def hold() -> None:
            release.wait(5)

        first, second = hold(), hold()
        assert hold.limiter is not None
        limiter = hold.limiter
        await turns_until(lambda: limiter.waiting == 1, "the second call waits on the limiter")
        release.set()
        await asyncio.gather(first, second)
    finally:
        instrumentation.reset()
    name = f"{MODULE}.test_limit_waits_are_instrumented.<locals>.hold"
    count = registry.get_sample_value(
        "aiothreads_limit_wait_seconds_count", {"function": name, "kind": "threaded"}
    )
    assert count == 1


@pytest.mark.asyncio
async def test_with_metrics_alone_a_calls_wait_for_a_thread_is_the_time_it_waited() -> None:
    # Without spans or debug events a call is only counted: its wait must still be timed.
    registry = CollectorRegistry()
    instrumentation.configure(registry=registry, opentelemetry=False, structlog=False)
    try:
        with ThreadPoolExecutor(1) as single:
            started, release = threading.Event(), threading.Event()

            @threaded(executor=single)
            def hold() -> None:
                started.set()
                release.wait(5)

            begun = time.perf_counter()
            first = hold()
            await turns_until(started.is_set, "the first call holds the only thread")
            second = hold()
            submitted = time.perf_counter()
            await turns_until(lambda: single._work_queue.qsize() == 1, "the second call waits")
            released = time.perf_counter()
            release.set()
            await asyncio.gather(first, second)
            done = time.perf_counter()
    finally:
        instrumentation.reset()
    labels = {"function": f"{MODULE}.{hold.__qualname__}", "kind": "threaded"}
    assert registry.get_sample_value("aiothreads_call_wait_seconds_count", labels) == 2
    waited = registry.get_sample_value("aiothreads_call_wait_seconds_sum", labels)
    assert waited is not None
    assert 0 < released - submitted <= waited <= 2 * (done - begun)  # two waits, both inside


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print")


@threaded
def unprintable() -> None:
    raise _Unprintable


@pytest.mark.asyncio
async def test_a_span_whose_exception_cannot_be_printed_still_ends(telemetry: Telemetry) -> None:
    with pytest.raises(_Unprintable):
        await unprintable()
    span = telemetry.span(f"threaded {name('unprintable')}")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "<unprintable _Unprintable>"
    assert span.attributes is not None
    assert span.attributes["error.type"] == f"{__name__}._Unprintable"


def _named_and_opted_out(bound: bool = False) -> dict[str, tuple[Any, Any]]:
    """Per decorator: a function named "loader" and one opted out of instrumentation.

    ``bound``: methods, bound to an instance, which must keep both options.
    """

    def rows(*_: object) -> Generator[int, None, None]:
        yield from range(2)

    def value(*_: object) -> int:
        return 1

    made = {
        "threaded": (threaded(value, name="loader"), threaded(value, instrument=False)),
        "separate": (
            threaded_separate(value, name="loader"),
            threaded_separate(value, instrument=False),
        ),
        "iterable": (
            threaded_iterable(rows, name="loader"),
            threaded_iterable(rows, instrument=False),
        ),
        "iterable_separate": (
            threaded_iterable_separate(rows, name="loader"),
            threaded_iterable_separate(rows, instrument=False),
        ),
    }
    if not bound:
        return made
    bound_pairs: dict[str, tuple[Any, Any]] = {}
    for kind, (named, opted_out) in made.items():
        holder = type("Holder", (), {"named": named, "opted_out": opted_out})()
        bound_pairs[kind] = (holder.named, holder.opted_out)
    return bound_pairs


async def _use(decorated: Any) -> None:
    if isinstance(decorated, ThreadedIterableBase):
        assert [item async for item in decorated()] == [0, 1]
    else:
        assert await decorated() == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("bound", [False, True], ids=["function", "method"])
@pytest.mark.parametrize("kind", ["threaded", "separate", "iterable", "iterable_separate"])
async def test_name_replaces_the_function_name_everywhere(
    telemetry: Telemetry, kind: str, bound: bool
) -> None:
    named, _ = _named_and_opted_out(bound)[kind]
    await _use(named)
    if kind.startswith("iterable"):
        await telemetry.iterator_ended()
    finished = telemetry.value(
        "aiothreads_calls_finished_total", function="loader", kind=kind, outcome="ok"
    )
    assert finished == 1
    assert telemetry.span(f"{kind} loader") is not None
    assert repr(named).startswith(f"<{type(named).__name__} loader")


@pytest.mark.asyncio
@pytest.mark.parametrize("bound", [False, True], ids=["function", "method"])
@pytest.mark.parametrize("kind", ["threaded", "separate", "iterable", "iterable_separate"])
async def test_a_function_opted_out_of_instrumentation_records_nothing(
    telemetry: Telemetry, kind: str, bound: bool
) -> None:
    def function_series() -> list[str]:  # the pools' own series show the threads it used
        exposition = generate_latest(telemetry.registry).decode()
        return [line for line in exposition.splitlines() if "aiothreads_pool_" not in line]

    _, opted_out = _named_and_opted_out(bound)[kind]
    before = function_series()
    await _use(opted_out)
    assert telemetry.finished_spans() == []
    assert function_series() == before


class Report:
    """A report whose rows a method streams."""

    def __init__(self, rows: list[str]) -> None:
        self.rows = rows

    def lines(self, prefix: str) -> Iterator[str]:
        """Stream the report's rows, each after ``prefix``."""
        for row in self.rows:
            yield prefix + row


class Ledger:
    """A ledger whose entries a method records in a thread."""

    def __init__(self) -> None:
        self.entries: list[int] = []
        self.recording, self.release = threading.Event(), threading.Event()

    def record(self, amount: int) -> int:
        """Record ``amount``, once the ledger is released; return how many entries it has."""
        self.recording.set()
        self.release.wait(5)
        self.entries.append(amount)
        return len(self.entries)


@pytest.mark.asyncio
async def test_a_bound_function_made_directly_takes_the_defaults_of_1x(
    telemetry: Telemetry,
) -> None:
    ledger = Ledger()
    bound = BoundThreaded(Ledger.record, ledger)
    assert bound.__name__ == "record"
    assert bound.__doc__ == Ledger.record.__doc__
    assert bound.__wrapped__ is Ledger.record
    assert repr(bound) == f"<BoundThreaded {name('Ledger.record')}>"
    call = bound(7)
    try:
        assert await asyncio.to_thread(ledger.recording.wait, 5)
        assert [(work.kind, work.function) for work in snapshot()] == [
            ("threaded", name("Ledger.record"))
        ]
    finally:
        ledger.release.set()
        assert await call == 1
    labels = {"function": name("Ledger.record"), "kind": "threaded", "outcome": "ok"}
    assert telemetry.value("aiothreads_calls_finished_total", **labels) == 1  # instrumented


@pytest.mark.asyncio
async def test_a_bound_function_shows_its_given_name_while_it_runs() -> None:
    ledger = Ledger()
    bound = BoundThreaded(Ledger.record, ledger, name="ledger.record")
    call = bound(7)
    try:
        assert await asyncio.to_thread(ledger.recording.wait, 5)
        assert [work.function for work in snapshot()] == ["ledger.record"]
    finally:
        ledger.release.set()
        assert await call == 1


@pytest.mark.asyncio
async def test_a_bound_iterable_made_directly_takes_the_defaults_of_1x(
    telemetry: Telemetry,
) -> None:
    report = Report(["a", "b"])
    bound = BoundThreadedIterable(Report.lines, report)
    assert bound.max_size == 0  # unbounded, as in 1.x
    assert bound.__name__ == "lines"
    assert bound.__doc__ == Report.lines.__doc__
    assert bound.__wrapped__ is Report.lines
    assert [line async for line in bound("> ")] == ["> a", "> b"]
    await telemetry.iterator_ended()
    labels = {"function": name("Report.lines"), "kind": "iterable"}
    assert telemetry.value("aiothreads_items_yielded_total", **labels) == 2  # instrumented


@pytest.mark.parametrize(
    ("options", "error"),
    [({"name": ""}, ValueError), ({"name": 3}, TypeError), ({"instrument": "no"}, TypeError)],
)
def test_bad_name_or_instrument_options_fail_at_decoration(
    options: dict[str, Any], error: type[Exception]
) -> None:
    def value() -> int:
        return 1

    for decorator in (threaded, threaded_separate, threaded_iterable, threaded_iterable_separate):
        with pytest.raises(error):
            decorator(value, **options)


@pytest.mark.asyncio
async def test_counts_stay_exact_under_10000_concurrent_calls_with_cancellations(
    telemetry: Telemetry,
) -> None:
    executed: list[int] = []

    @threaded
    def work(value: int) -> int:
        executed.append(value)
        return value

    loop = asyncio.get_running_loop()
    calls = [work(value) for value in range(10_000)]
    for call in calls[::7]:
        call.cancel()
    await asyncio.wait(calls)
    # The workers report a call that was cancelled unrun when they dequeue it;
    # shutting the pool down waits for them to dequeue everything.
    await loop.shutdown_default_executor()
    returned = {call.result() for call in calls if not call.cancelled()}
    assert returned <= set(executed)
    labels = {"function": name(QUALNAME + ".work"), "kind": "threaded"}

    def finished(outcome: str) -> float:
        return telemetry.value("aiothreads_calls_finished_total", outcome=outcome, **labels)

    assert telemetry.value("aiothreads_calls_started_total", **labels) == 10_000
    assert finished("ok") + finished("cancelled") == 10_000
    assert finished("error") == 0
    # A call that ran but whose caller cancelled before the result arrived is
    # "ok" (the work succeeded) or "cancelled" (if it was cancelled while it
    # ran); one that never ran is "cancelled".
    assert len(returned) <= finished("ok") <= len(executed)
    assert finished("cancelled") >= 10_000 - len(executed)
    assert telemetry.value("aiothreads_call_duration_seconds_count", **labels) == len(executed)
    assert telemetry.value("aiothreads_call_wait_seconds_count", **labels) == len(executed)
    assert telemetry.value("aiothreads_calls_in_flight", **labels) == 0
    assert telemetry.value("aiothreads_calls_queued", **labels) == 0
    spans = [span for span in telemetry.finished_spans() if span.name.endswith("<locals>.work")]
    assert len(spans) == 10_000
    by_outcome = [(span.attributes or {}).get("aiothreads.outcome") for span in spans]
    assert by_outcome.count("ok") == finished("ok")
    assert by_outcome.count("cancelled") == finished("cancelled")


QUALNAME = "test_counts_stay_exact_under_10000_concurrent_calls_with_cancellations.<locals>"


class _CountStarts(SpanProcessor):
    def __init__(self) -> None:
        self.started = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started += 1


@pytest.mark.asyncio
async def test_a_queued_call_holds_no_span_and_its_span_starts_at_submission(
    telemetry: Telemetry,
) -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
    starts = _CountStarts()
    telemetry.provider.add_span_processor(starts)
    started, release = threading.Event(), threading.Event()

    @threaded
    def hold() -> None:
        started.set()
        release.wait(5)

    @threaded
    def queued() -> None:
        pass

    first = hold()
    assert await wait_in_own_thread(started)
    submitted_at = trace.get_current_span().get_span_context()  # no span: nothing current
    assert not submitted_at.is_valid
    before = time_ns()
    second = queued()
    assert starts.started == 1  # only the running call has a span
    release.set()
    await asyncio.gather(first, second)
    test = "test_a_queued_call_holds_no_span_and_its_span_starts_at_submission.<locals>"
    span = telemetry.span(f"threaded {name(test + '.queued')}")
    assert span.start_time is not None
    assert span.end_time is not None
    assert before <= span.start_time
    holder = telemetry.span(f"threaded {name(test + '.hold')}")
    assert holder.end_time is not None
    assert span.start_time < holder.end_time  # its wait for the worker is inside its span
    assert span.attributes is not None
    waited_ns = span.attributes["aiothreads.queue_wait_seconds"] * 1e9
    clocks = 1e6  # the wait is read on the monotonic clock, span times on the wall clock
    assert holder.end_time - span.start_time - clocks <= waited_ns
    assert waited_ns <= span.end_time - span.start_time + clocks
    assert "aiothreads.limit_wait_seconds" not in span.attributes


class _KeepsWeakly(SpanProcessor):
    """Remembers the spans started (``on_end`` gets a copy) without keeping them alive."""

    def __init__(self) -> None:
        self.started: list[weakref.ref[Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(weakref.ref(span))


@pytest.mark.asyncio
async def test_a_finished_call_lets_its_span_go_before_the_loop_sees_it() -> None:
    """Calls that finished faster than the loop takes their results hold no ended spans.

    With 10,000 calls in flight, thousands can wait for the loop that way.
    """
    provider = TracerProvider()
    kept = _KeepsWeakly()
    provider.add_span_processor(kept)
    instrumentation.configure(tracer_provider=provider, prometheus=False, structlog=False)
    worker = ThreadPoolExecutor(1)
    try:
        call = threaded(lambda: 1, executor=worker)()
        worker.submit(lambda: None).result(5)  # blocks the loop until the call's thread is done
        gc.collect()
        assert not call.done()  # the loop has not taken the result yet
        assert len(kept.started) == 1
        assert kept.started[0]() is None
        assert await call == 1
    finally:
        worker.shutdown()
        instrumentation.reset()
        provider.shutdown()


@pytest.mark.asyncio
async def test_a_call_that_waited_for_its_limit_has_the_wait_on_its_span(
    telemetry: Telemetry,
) -> None:
    started, release = threading.Event(), threading.Event()

    @threaded(limit=1)
    def hold() -> None:
        started.set()
        release.wait(5)

    called_from = time_ns()
    first, second = hold(), hold()
    assert await wait_in_own_thread(started)
    assert hold.limiter is not None
    limiter = hold.limiter
    await turns_until(lambda: limiter.waiting == 1, "the second call waits on the limiter")
    release.set()
    await asyncio.gather(first, second)
    spans = [span for span in telemetry.finished_spans() if span.name.endswith(".hold")]
    (waited,) = [span for span in spans if LIMIT_WAIT in (span.attributes or {})]
    (held,) = [span for span in spans if span is not waited]
    assert waited.start_time is not None
    assert held.end_time is not None
    # It starts when it was called: before its wait, so before the call it waited for ended.
    assert called_from <= waited.start_time <= held.end_time
    waits = sorted(
        (span.attributes or {}).get("aiothreads.limit_wait_seconds", 0.0) for span in spans
    )
    assert waits[0] == 0.0  # the first call found a place at once: no attribute
    assert waits[1] > 0.0
    waited_longest = max((span.attributes or {})["aiothreads.queue_wait_seconds"] for span in spans)
    assert waits[1] <= waited_longest  # the limit wait is part of the queue wait


@pytest.mark.asyncio
async def test_an_iterator_that_waited_for_its_limit_has_the_wait_on_its_span(
    telemetry: Telemetry,
) -> None:
    limiter = CapacityLimiter(1)

    @threaded_iterable(max_size=1, limit=limiter)
    def rows() -> Generator[int, None, None]:
        yield 1

    began = time.perf_counter()
    async with limiter:
        stream = rows()
        first = await queued_for_a_place(limiter, stream.__anext__())
    assert await first == 1
    await stream.aclose()
    await telemetry.iterator_ended()
    elapsed = time.perf_counter() - began
    (span,) = [span for span in telemetry.finished_spans() if span.name.endswith(".rows")]
    assert span.attributes is not None
    assert 0 < span.attributes[LIMIT_WAIT] <= elapsed  # type: ignore[operator]


@pytest.mark.asyncio
async def test_an_iterator_dropped_before_its_producer_ran_is_traced_under_its_caller(
    telemetry: Telemetry,
) -> None:
    started, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(1) as worker:
        worker.submit(lambda: (started.set(), release.wait(5)))
        assert await wait_in_own_thread(started)

        @threaded_iterable(max_size=1, executor=worker)
        def never_ran() -> Generator[int, None, None]:
            yield 1

        with telemetry.provider.get_tracer("test").start_as_current_span("request") as request:
            stream = never_ran()
            first = asyncio.ensure_future(stream.__anext__())
            await turns_until(lambda: worker._work_queue.qsize() == 1, "the producer queuing")
        await stream.close()  # outside the request: the span still belongs under it
        with pytest.raises(StopAsyncIteration):
            await first
        release.set()
    span = telemetry.span(f"iterable {name(never_ran.__qualname__)}")
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.attributes is not None
    assert span.attributes["aiothreads.outcome"] == "cancelled"


@pytest.mark.asyncio
async def test_without_a_registry_the_metrics_go_to_prometheus_clients_default_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As most services scrape them: prometheus_client.REGISTRY (one of the test's own here)."""
    import prometheus_client  # patched where the configuration looks it up

    default = CollectorRegistry()
    monkeypatch.setattr(prometheus_client, "REGISTRY", default)
    instrumentation.configure(prometheus=True, opentelemetry=False, structlog=False)
    try:

        @threaded
        def counted() -> int:
            return 1

        assert await counted() == 1
    finally:
        instrumentation.reset()
    labels = {"function": name(counted.__qualname__), "kind": "threaded", "outcome": "ok"}
    assert default.get_sample_value("aiothreads_calls_finished_total", labels) == 1


@pytest.mark.asyncio
async def test_a_refused_call_is_counted_when_only_metrics_are_on() -> None:
    registry = CollectorRegistry()
    instrumentation.configure(registry=registry, opentelemetry=False, structlog=False)
    executor = ThreadPoolExecutor(1)
    executor.shutdown()
    try:

        @threaded(executor=executor)
        def refused() -> None:
            pass

        with pytest.raises(ExecutorRefused):
            await refused()
    finally:
        instrumentation.reset()
    labels = {"function": name(refused.__qualname__), "kind": "threaded", "outcome": "error"}
    assert registry.get_sample_value("aiothreads_calls_finished_total", labels) == 1


@pytest.mark.asyncio
async def test_with_metrics_alone_a_call_cancelled_while_it_ran_is_counted_as_cancelled() -> None:
    # The function returns normally, but its caller gave up while it ran: the
    # documented outcome is "cancelled", with or without a probe.
    registry = CollectorRegistry()
    count_calls_only(registry)
    try:
        with ThreadPoolExecutor(1) as single:
            started, release = threading.Event(), threading.Event()

            @threaded(executor=single)
            def hold() -> int:
                started.set()
                release.wait(5)
                return 1

            @threaded(executor=single)
            def after() -> None:
                pass

            call = hold()
            assert await wait_in_own_thread(started)
            call.cancel()
            release.set()
            await after()  # its one thread ended the first call, and counted it, before
    finally:
        instrumentation.reset()
    labels = {"function": name(hold.__qualname__), "kind": "threaded"}

    def finished(outcome: str) -> float | None:
        return registry.get_sample_value(
            "aiothreads_calls_finished_total", {**labels, "outcome": outcome}
        )

    assert finished("cancelled") == 1
    assert finished("ok") == 0
    assert registry.get_sample_value("aiothreads_calls_in_flight", labels) == 0


@pytest.mark.asyncio
async def test_an_uninstrumented_iterator_cancelled_while_waiting_for_its_limit_counts_nothing(
    telemetry: Telemetry,
) -> None:
    limiter = CapacityLimiter(1)

    @threaded_iterable(max_size=1, limit=limiter, instrument=False)
    def quiet() -> Generator[int, None, None]:
        yield 1

    async with limiter:
        stream = quiet()
        admission = await queued_for_a_place(limiter, stream.__anext__())
        admission.cancel()
        with pytest.raises(asyncio.CancelledError):
            await admission
    assert name(quiet.__qualname__) not in generate_latest(telemetry.registry).decode()
    assert telemetry.finished_spans() == []


@pytest.mark.asyncio
async def test_no_span_is_made_current_when_the_tracer_does_not_record() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    instrumentation.configure(tracer_provider=provider, prometheus=False, structlog=False)
    try:
        outer = trace.NonRecordingSpan(trace.SpanContext(trace_id=1, span_id=2, is_remote=False))

        async def on_the_loop() -> Any:
            return trace.get_current_span()

        @threaded
        def current_span() -> tuple[Any, Any]:
            return trace.get_current_span(), sync_await(on_the_loop)

        with trace.use_span(outer):
            assert await current_span() == (outer, outer)
    finally:
        instrumentation.reset()
        provider.shutdown()


def test_a_call_that_would_record_nothing_gets_no_probe() -> None:
    # The API's own tracer provider (no SDK installed one) records nothing, and
    # the aiothreads logger is not enabled for DEBUG.
    assert not logging.getLogger("aiothreads").isEnabledFor(logging.DEBUG)
    instrumentation.configure(prometheus=False, structlog=False)
    try:
        telemetry = current_telemetry()
        assert telemetry is not None
        assert telemetry.call("threaded", "nothing.to.record") is None
    finally:
        instrumentation.reset()


@pytest.mark.asyncio
async def test_counts_of_threads_that_ended_are_kept(telemetry: Telemetry) -> None:
    @threaded_separate
    def job() -> None:
        pass

    for _ in range(40):  # a thread each, more than a series keeps before folding
        await job()
    gc.collect()
    labels = {
        "function": name("test_counts_of_threads_that_ended_are_kept.<locals>.job"),
        "kind": "separate",
    }
    assert telemetry.value("aiothreads_calls_started_total", **labels) == 40
    assert telemetry.value("aiothreads_calls_finished_total", outcome="ok", **labels) == 40
    assert telemetry.value("aiothreads_separate_threads_started_total", **labels) == 40
    assert telemetry.value("aiothreads_separate_threads_alive", **labels) == 0
    assert telemetry.value("aiothreads_call_duration_seconds_count", **labels) == 40


def test_calls_submitted_from_threads_that_ended_stay_counted(telemetry: Telemetry) -> None:
    def run_a_loop() -> None:
        assert asyncio.run(add(2, 3)) == 5

    threads = [threading.Thread(target=run_a_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    labels = {"function": name("add"), "kind": "threaded"}
    assert telemetry.value("aiothreads_calls_started_total", **labels) == 3
    assert telemetry.value("aiothreads_calls_finished_total", outcome="ok", **labels) == 3
    assert telemetry.value("aiothreads_calls_queued", **labels) == 0


@pytest.mark.asyncio
async def test_healthy_functions_report_every_outcome_from_the_start(
    telemetry: Telemetry,
) -> None:
    assert await add(1, 1) == 2
    labels = {"function": name("add"), "kind": "threaded"}
    for outcome in ("ok", "error", "cancelled"):
        found = telemetry.registry.get_sample_value(
            "aiothreads_calls_finished_total", {**labels, "outcome": outcome}
        )
        assert found is not None, outcome


@pytest.mark.asyncio
async def test_the_duration_histogram_links_a_call_to_its_trace(telemetry: Telemetry) -> None:
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    assert await add(2, 3) == 5
    span = telemetry.span(f"threaded {name('add')}")
    trace_id = format(span.context.trace_id, "032x")
    span_id = format(span.context.span_id, "016x")
    exposition = openmetrics(telemetry.registry).decode()
    with_exemplar = [
        line
        for line in exposition.splitlines()
        if line.startswith("aiothreads_call_duration_seconds_bucket")
        and f'function="{name("add")}"' in line
        and " # " in line
    ]
    assert len(with_exemplar) == 1, exposition
    assert f'trace_id="{trace_id}"' in with_exemplar[0]
    assert f'span_id="{span_id}"' in with_exemplar[0]


@pytest.mark.asyncio
async def test_a_duration_exemplar_carries_the_wall_clock_time_of_its_call(
    telemetry: Telemetry,
) -> None:
    before = time.time()
    assert await add(2, 3) == 5
    after = time.time()
    exemplars = [
        found.exemplar
        for family in telemetry.registry.collect()
        if family.name == "aiothreads_call_duration_seconds"
        for found in family.samples
        if found.labels.get("function") == name("add") and found.exemplar is not None
    ]
    assert len(exemplars) == 1, exemplars
    # Unix time, as OpenMetrics asks, so a backend can place it next to its trace.
    assert before <= exemplars[0].timestamp <= after


class _CountingMeterProvider:
    """An SDK meter provider whose synchronous instruments count their operations."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.operations = 0

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        meter = self.provider.get_meter(*args, **kwargs)
        counting = self

        class _Meter:
            def __getattr__(self, name: str) -> Any:
                return getattr(meter, name)

            def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
                histogram = meter.create_histogram(*args, **kwargs)

                class _Histogram:
                    def record(self, *args: Any, **kwargs: Any) -> None:
                        counting.operations += 1
                        histogram.record(*args, **kwargs)

                return _Histogram()

        return _Meter()


def _otel_points(reader: Any) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = [(metric.unit, point) for point in metric.data.data_points]
    return points


def _value(points: dict[str, list[Any]], name: str, **attributes: str) -> float:
    found = [
        point
        for _, point in points.get(name, [])
        if all(point.attributes.get(key) == value for key, value in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, points.get(name))
    point = found[0]
    return float(point.count if hasattr(point, "count") else point.value)


@pytest.mark.asyncio
async def test_opentelemetry_metrics_cost_two_instrument_operations_per_call() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = _CountingMeterProvider(MeterProvider(metric_readers=[reader]))
    instrumentation.configure(
        meter_provider=provider, prometheus=False, opentelemetry=False, structlog=False
    )
    try:
        assert instrumentation.enabled_backends() == ["opentelemetry_metrics"]
        assert [await add(index, 1) for index in range(3)] == [1, 2, 3]
        with pytest.raises(_Broken):
            await broken()
        assert provider.operations == 8  # a wait and a duration for each of four calls
        points = _otel_points(reader)
        function = {"function": name("add"), "kind": "threaded"}
        assert _value(points, "aiothreads.call.started", **function) == 3
        assert _value(points, "aiothreads.call.finished", outcome="ok", **function) == 3
        assert _value(points, "aiothreads.call.finished", outcome="error", **function) == 0
        assert _value(points, "aiothreads.call.duration", outcome="ok", **function) == 3
        assert _value(points, "aiothreads.call.wait.duration", **function) == 3
        assert _value(points, "aiothreads.call.active", **function) == 0
        assert _value(points, "aiothreads.call.queued", **function) == 0
        failing = {"function": name("broken"), "kind": "threaded"}
        assert _value(points, "aiothreads.call.duration", outcome="error", **failing) == 1
        units = {metric: unit for metric, found in points.items() for unit, _ in found}
        assert units["aiothreads.call.duration"] == "s"
        assert units["aiothreads.call.started"] == "{call}"
    finally:
        instrumentation.reset()
        provider.provider.shutdown()


@pytest.fixture
def both_metrics() -> Iterator[tuple[Any, CollectorRegistry]]:
    """OpenTelemetry metrics into an in-memory reader and Prometheus into a registry, at once."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    instrumentation.configure(
        meter_provider=provider, registry=registry, opentelemetry=False, structlog=False
    )
    try:
        yield reader, registry
    finally:
        instrumentation.reset()
        provider.shutdown()


@pytest.mark.asyncio
async def test_opentelemetry_and_prometheus_metrics_agree(
    both_metrics: tuple[Any, CollectorRegistry],
) -> None:
    reader, registry = both_metrics
    assert instrumentation.enabled_backends() == ["opentelemetry_metrics", "prometheus"]

    @threaded_iterable(max_size=4)
    def numbers() -> Iterator[int]:
        yield from range(10)

    assert [await add(1, 1) for _ in range(5)] == [2] * 5
    assert [item async for item in numbers()] == list(range(10))
    points = _otel_points(reader)
    calls = {"function": name("add"), "kind": "threaded"}
    stream = {
        "function": name("test_opentelemetry_and_prometheus_metrics_agree.<locals>.numbers"),
        "kind": "iterable",
    }
    assert _value(points, "aiothreads.call.started", **calls) == registry.get_sample_value(
        "aiothreads_calls_started_total", calls
    )
    assert _value(points, "aiothreads.generator.items", **stream) == 10
    assert registry.get_sample_value("aiothreads_items_yielded_total", stream) == 10
    assert _value(points, "aiothreads.generator.active", **stream) == 0


OPENTELEMETRY_AND_PROMETHEUS_NAMES = {
    "aiothreads.call.started": "aiothreads_calls_started_total",
    "aiothreads.call.active": "aiothreads_calls_in_flight",
    "aiothreads.call.queued": "aiothreads_calls_queued",
    "aiothreads.call.slow": "aiothreads_calls_slow_total",
    "aiothreads.thread.started": "aiothreads_separate_threads_started_total",
    "aiothreads.thread.active": "aiothreads_separate_threads_alive",
    "aiothreads.generator.items": "aiothreads_items_yielded_total",
    "aiothreads.generator.blocked": "aiothreads_producer_blocked_seconds_total",
    "aiothreads.channel.depth": "aiothreads_channel_depth",
    "aiothreads.channel.capacity": "aiothreads_channel_capacity",
    "aiothreads.generator.active": "aiothreads_iterators_active",
}


@pytest.mark.asyncio
async def test_every_opentelemetry_instrument_reports_what_its_prometheus_family_does(
    both_metrics: tuple[Any, CollectorRegistry],
) -> None:
    reader, registry = both_metrics
    running, parked, release = threading.Event(), threading.Event(), threading.Event()

    @threaded_separate
    def hold() -> None:
        running.set()
        release.wait(5)

    @threaded_iterable(max_size=3)
    def stream() -> Generator[int, None, None]:
        yield from range(5)  # 4 waits until the consumer drained the channel to 1
        parked.set()
        release.wait(5)
        yield from itertools.count(5)

    held = asyncio.ensure_future(hold())
    try:
        assert await asyncio.to_thread(running.wait, 5)
        async with stream() as items:
            assert await items.__anext__() == 0
            await turns_until(lambda: items.channel.waiting_for_room, "the producer blocking")
            assert [await items.__anext__(), await items.__anext__()] == [1, 2]
            assert await asyncio.to_thread(parked.wait, 5)  # the counts stand still now
            seen = _assert_the_same_in_both(reader, registry)
            assert seen["aiothreads.thread.active"] == seen["aiothreads.thread.started"] == 1
            assert seen["aiothreads.call.active"] == 2  # hold() and the producer
            assert seen["aiothreads.channel.capacity"] == 3
            assert seen["aiothreads.channel.depth"] == 2
            assert seen["aiothreads.generator.active"] == 1
            assert seen["aiothreads.generator.blocked"] > 0
            release.set()
        await held
        seen = _assert_the_same_in_both(reader, registry)
        assert seen["aiothreads.thread.active"] == seen["aiothreads.generator.active"] == 0
        assert seen["aiothreads.generator.stopped"] == 1
        assert seen["aiothreads.generator.items"] >= 5  # and 5 if it got in before the close
        assert seen["aiothreads.call.finished"] == 2
    finally:
        release.set()
        await held


def _assert_the_same_in_both(reader: Any, registry: CollectorRegistry) -> dict[str, float]:
    """Compare every observed point with its Prometheus sample; return each instrument's sum."""
    names = {
        **OPENTELEMETRY_AND_PROMETHEUS_NAMES,
        "aiothreads.call.finished": "aiothreads_calls_finished_total",
        "aiothreads.generator.stopped": "aiothreads_generator_cancellations_total",
    }
    sums = dict.fromkeys(names, 0.0)
    for otel_name, found in _otel_points(reader).items():
        if otel_name not in names:  # the histograms
            continue
        for _, point in found:
            labels = {key: str(value) for key, value in point.attributes.items()}
            sample = registry.get_sample_value(names[otel_name], labels)
            assert (sample or 0) == point.value, otel_name  # Prometheus leaves out what cannot be
            sums[otel_name] += point.value
    return sums


def test_switching_opentelemetry_metrics_off_stops_their_reports() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    instrumentation.configure(meter_provider=provider, registry=registry, opentelemetry=False)
    try:
        assert asyncio.run(add(1, 2)) == 3
        instrumentation.configure(registry=registry, opentelemetry=False)
        assert instrumentation.enabled_backends() == ["prometheus"]
        assert asyncio.run(add(1, 2)) == 3
        points = _otel_points(reader)
        assert "aiothreads.call.started" not in points
        labels = {"function": name("add"), "kind": "threaded"}
        assert registry.get_sample_value("aiothreads_calls_started_total", labels) == 2
    finally:
        instrumentation.reset()
        provider.shutdown()


def test_switching_opentelemetry_metrics_off_stops_the_pools_reports_too() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    instrumentation.configure(meter_provider=provider, registry=registry, opentelemetry=False)
    try:
        assert asyncio.run(add(1, 2)) == 3
        assert "aiothreads.pool.call.refused" in _otel_points(reader)
        instrumentation.configure(registry=registry, opentelemetry=False)
        pools = [metric for metric in _otel_points(reader) if metric.startswith("aiothreads.pool.")]
        assert pools == []
        refused = {"pool": "default", "reason": "shut_down"}
        assert registry.get_sample_value("aiothreads_pool_refused_total", refused) is not None
    finally:
        instrumentation.reset()
        provider.shutdown()


def test_switching_opentelemetry_metrics_off_stops_recording_their_histograms() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    settings: dict[str, Any] = {"registry": registry, "opentelemetry": False, "structlog": False}
    instrumentation.configure(meter_provider=provider, **settings)
    try:
        assert asyncio.run(add(1, 2)) == 3
        calls = {"function": name("add"), "kind": "threaded"}
        points = _otel_points(reader)
        assert _value(points, "aiothreads.call.duration", outcome="ok", **calls) == 1
        assert _value(points, "aiothreads.call.wait.duration", **calls) == 1
        instrumentation.configure(**settings)
        assert asyncio.run(add(1, 2)) == 3
        points = _otel_points(reader)  # what was recorded while they were on, no more
        assert _value(points, "aiothreads.call.duration", outcome="ok", **calls) == 1
        assert _value(points, "aiothreads.call.wait.duration", **calls) == 1
        assert registry.get_sample_value("aiothreads_call_duration_seconds_count", calls) == 2
    finally:
        instrumentation.reset()
        provider.shutdown()


def test_opentelemetry_metrics_switch_on_when_the_application_installed_a_meter_provider() -> None:
    script = """
import asyncio, aiothreads
from aiothreads import instrumentation
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

print(sorted(instrumentation.enabled_backends()))
instrumentation.reset()
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

@aiothreads.threaded
def one():
    return 1

assert asyncio.run(one()) == 1
print(sorted(instrumentation.enabled_backends()))
names = [
    metric.name
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics
]
print("aiothreads.call.duration" in names)
"""
    completed = run_python(script, env={**os.environ, "AIOTHREADS_INSTRUMENTATION": "auto"})
    assert completed.returncode == 0, completed.stderr
    before, after, recorded = completed.stdout.splitlines()
    assert "opentelemetry_metrics" not in before
    assert "opentelemetry_metrics" in after
    assert recorded == "True"


def test_configuring_opentelemetry_metrics_again_counts_each_call_once() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    settings: dict[str, Any] = {"prometheus": False, "opentelemetry": False, "structlog": False}
    try:
        for _ in range(2):
            instrumentation.configure(meter_provider=provider, **settings)
            assert asyncio.run(add(1, 2)) == 3
        calls = {"function": name("add"), "kind": "threaded"}
        assert _value(_otel_points(reader), "aiothreads.call.started", **calls) == 2
        instrumentation.configure(opentelemetry_metrics=False, **settings)
        assert "aiothreads.call.started" not in _otel_points(reader)
    finally:
        instrumentation.reset()
        provider.shutdown()


@pytest.mark.asyncio
async def test_with_metrics_alone_a_calls_duration_leaves_out_its_wait_for_a_thread() -> None:
    registry = CollectorRegistry()
    instrumentation.configure(registry=registry, opentelemetry=False, structlog=False)
    try:
        with ThreadPoolExecutor(1) as single:
            started, release = threading.Event(), threading.Event()

            @threaded(executor=single)
            def hold() -> None:
                started.set()
                release.wait(5)

            @threaded(executor=single)
            def quick() -> None:
                pass

            first = hold()
            await turns_until(started.is_set, "the first call holds the only thread")
            second = quick()
            await turns_until(lambda: single._work_queue.qsize() == 1, "the second call waits")
            await asyncio.sleep(0.1)  # not to synchronise: a wait long enough to measure
            release.set()
            await asyncio.gather(first, second)
    finally:
        instrumentation.reset()
    labels = {"function": f"{MODULE}.{quick.__qualname__}", "kind": "threaded"}
    waited = registry.get_sample_value("aiothreads_call_wait_seconds_sum", labels)
    ran = registry.get_sample_value("aiothreads_call_duration_seconds_sum", labels)
    assert waited is not None
    assert ran is not None
    assert waited >= 0.1
    assert ran < waited  # it ran at once: what it waited is not in its run


def test_a_limit_wait_exactly_on_a_bucket_bound_is_counted_in_that_bucket() -> None:
    registry = CollectorRegistry()
    instrumentation.configure(registry=registry, opentelemetry=False, structlog=False)
    try:
        telemetry = current_telemetry()
        assert telemetry is not None
        assert telemetry.metrics is not None
        series = telemetry.metrics.series("threaded", "on_the_bound")
        series.limit_waited(0.005)
        buckets = {
            float(sample.labels["le"]): sample.value
            for family in registry.collect()
            if family.name == "aiothreads_limit_wait_seconds"
            for sample in family.samples
            if sample.name.endswith("_bucket") and sample.labels["function"] == "on_the_bound"
        }
    finally:
        instrumentation.reset()
    assert buckets[0.005] == 1
    below = max(bound for bound in buckets if bound < 0.005)
    assert buckets[below] == 0


@pytest.mark.asyncio
async def test_the_span_of_a_call_cancelled_while_queued_has_a_cancelled_event_and_no_error(
    telemetry: Telemetry,
) -> None:
    with ThreadPoolExecutor(1) as single:
        started, release = threading.Event(), threading.Event()

        @threaded(executor=single)
        def hold() -> None:
            started.set()
            release.wait(5)

        @threaded(executor=single)
        def never() -> None:
            raise AssertionError("must not run")

        try:
            blocker = hold()
            assert await wait_in_own_thread(started)
            queued = never()
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
        finally:
            release.set()
        await blocker
    span = telemetry.span(f"threaded {MODULE}.{never.__qualname__}")
    assert span.attributes is not None
    assert span.attributes["aiothreads.outcome"] == "cancelled"
    assert "error.type" not in span.attributes
    assert span.status.status_code is not StatusCode.ERROR
    assert [event.name for event in span.events] == ["cancelled"]


@pytest.mark.asyncio
async def test_a_limited_calls_span_tells_its_limit_wait_from_its_wait_for_a_thread(
    telemetry: Telemetry,
) -> None:
    started, release = threading.Event(), threading.Event()

    @threaded(limit=1)
    def hold() -> None:
        started.set()
        release.wait(5)

    first, second = hold(), hold()
    try:
        assert await wait_in_own_thread(started)
        assert hold.limiter is not None
        limiter = hold.limiter
        await turns_until(lambda: limiter.waiting == 1, "the second call waits on the limiter")
        await asyncio.sleep(0.1)  # not to synchronise: a limit wait long enough to measure
    finally:
        release.set()
    await asyncio.gather(first, second)
    spans = [span for span in telemetry.finished_spans() if span.name.endswith(".hold")]
    (waited,) = [span for span in spans if LIMIT_WAIT in (span.attributes or {})]
    assert waited.attributes is not None
    limit_wait = waited.attributes[LIMIT_WAIT]
    queue_wait = waited.attributes["aiothreads.queue_wait_seconds"]
    assert isinstance(limit_wait, float)
    assert isinstance(queue_wait, float)
    assert limit_wait >= 0.1
    assert queue_wait >= limit_wait  # its whole wait: for its place, then for a thread


def counted_alone() -> int:
    return 1


@pytest.mark.asyncio
async def test_a_separate_call_is_instrumented_unless_told_not_to() -> None:
    registry = CollectorRegistry()
    instrumentation.configure(
        registry=registry, prometheus=True, opentelemetry=False, structlog=False
    )
    labels = {"function": f"{__name__}.counted_alone", "kind": "separate"}
    try:
        assert await ThreadedSeparate(counted_alone)() == 1
        assert await ThreadedSeparate(counted_alone, instrument=False)() == 1
        assert await threaded_separate(counted_alone)() == 1
    finally:
        instrumentation.reset()
    assert registry.get_sample_value("aiothreads_separate_threads_started_total", labels) == 2
