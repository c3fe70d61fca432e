"""Calls made under a parent span that its trace left out (not sampled).

The SDK's default sampler drops every child of such a parent, and aiothreads
knows that without asking it; every other sampler is asked, span by span.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.trace import SpanContext, TraceFlags
from prometheus_client import CollectorRegistry

from aiothreads import instrumentation, threaded
from aiothreads.instrumentation._otel import _running_context_getter

TRACE_ID = 0x5B8EFFF798038103D269B633813FC60C


def parent(*, sampled: bool, remote: bool = False, span_id: int = 0xEEE19B7EC3C1B174) -> Any:
    """A parent span from another tracer (or process, with ``remote``), sampled or not."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(TRACE_ID, span_id, is_remote=remote, trace_flags=flags)
    return trace.NonRecordingSpan(context)


class _Ended(SpanProcessor):
    """Keeps every span that ends, sampled or only recorded."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class _Asked:
    """Counts how often a sampler is asked, and asks it."""

    def __init__(self, sampler: sampling.Sampler) -> None:
        self.times = 0
        self._ask = sampler.should_sample

    def __call__(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
        self.times += 1
        return self._ask(*args, **kwargs)


@contextlib.contextmanager
def traced_with(
    sampler: sampling.Sampler, *, metrics: bool = False, **provider_options: Any
) -> Iterator[_Ended]:
    """Configure aiothreads with an SDK tracer provider that samples with ``sampler``.

    With ``metrics``, Prometheus metrics too (into a registry of their own).
    """
    ended = _Ended()
    provider = TracerProvider(sampler=sampler, **provider_options)
    provider.add_span_processor(ended)
    instrumentation.configure(
        tracer_provider=provider,
        prometheus=metrics,
        registry=CollectorRegistry() if metrics else None,
        structlog=False,
    )
    try:
        yield ended
    finally:
        instrumentation.reset()
        provider.shutdown()


@threaded
def current_span_context() -> SpanContext:
    return trace.get_current_span().get_span_context()


async def call_under(span: Any) -> SpanContext:
    with trace.use_span(span):
        return await current_span_context()


FOLLOWING_THEIR_PARENT: dict[str, Callable[[], sampling.Sampler]] = {
    "parent based, always on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
    "parent based, always off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parent based, trace id ratio": lambda: sampling.ParentBasedTraceIdRatio(0.5),
    "the SDK's default": lambda: sampling.DEFAULT_ON,
    "parent based, always on, as OTEL_TRACES_SAMPLER loads it": lambda: (
        sampling._ParentBasedAlwaysOn(None)
    ),
    "parent based, always off, as OTEL_TRACES_SAMPLER loads it": lambda: (
        sampling._ParentBasedAlwaysOff(None)
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("metrics", [False, True], ids=["spans alone", "with metrics"])
@pytest.mark.parametrize("remote", [False, True], ids=["local parent", "remote parent"])
@pytest.mark.parametrize(
    "make_sampler", FOLLOWING_THEIR_PARENT.values(), ids=FOLLOWING_THEIR_PARENT
)
async def test_a_sampler_that_follows_the_parent_is_not_asked_under_an_unsampled_one(
    monkeypatch: pytest.MonkeyPatch,
    make_sampler: Callable[[], sampling.Sampler],
    remote: bool,
    metrics: bool,
) -> None:
    sampler = make_sampler()
    asked = _Asked(sampler)
    monkeypatch.setattr(sampler, "should_sample", asked)
    with traced_with(sampler, metrics=metrics) as ended:
        unsampled = parent(sampled=False, remote=remote)
        assert await call_under(unsampled) == unsampled.get_span_context()
        assert await call_under(unsampled) == unsampled.get_span_context()
        assert (asked.times, ended.spans) == (0, [])

        sampled = parent(sampled=True, remote=remote)
        ran_in = await call_under(sampled)
        assert asked.times == 1
        assert [span.context for span in ended.spans] == [ran_in]
        assert ended.spans[0].parent == sampled.get_span_context()

        await current_span_context()  # no parent: the root sampler decides
        assert asked.times == 2


MAY_RECORD_UNDER_AN_UNSAMPLED_PARENT: dict[str, tuple[Callable[[], sampling.Sampler], bool]] = {
    "always on": (lambda: sampling.ALWAYS_ON, False),
    "parent based, records local unsampled": (
        lambda: sampling.ParentBased(
            sampling.ALWAYS_ON, local_parent_not_sampled=sampling.ALWAYS_ON
        ),
        False,
    ),
    "parent based, records remote unsampled": (
        lambda: sampling.ParentBased(
            sampling.ALWAYS_ON, remote_parent_not_sampled=sampling.ALWAYS_ON
        ),
        True,
    ),
    "parent based, trace id ratio under local unsampled": (
        lambda: sampling.ParentBased(
            sampling.ALWAYS_ON, local_parent_not_sampled=sampling.TraceIdRatioBased(1.0)
        ),
        False,
    ),
    "parent based, records remote unsampled without sampling": (
        lambda: sampling.ParentBased(
            sampling.ALWAYS_ON,
            remote_parent_not_sampled=sampling.AlwaysRecordSampler(sampling.ALWAYS_OFF),
        ),
        True,
    ),
    "parent based, records local unsampled, named always off": (
        lambda: sampling.ParentBased(
            sampling.ALWAYS_ON, local_parent_not_sampled=_NamedAlwaysOff(sampling.Decision.DROP)
        ),
        False,
    ),
    "always records": (lambda: sampling.AlwaysRecordSampler(sampling.DEFAULT_ON), False),
    "a subclass of parent based": (lambda: _RecordsEverything(sampling.ALWAYS_ON), False),
}


class _NamedAlwaysOff(sampling.StaticSampler):
    """Describes itself as ``ALWAYS_OFF`` does, and records every span."""

    def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
        return sampling.ALWAYS_ON.should_sample(*args, **kwargs)


class _RecordsEverything(sampling.ParentBased):
    """Looks like ``ParentBased`` with its defaults, and records every span."""

    def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
        return sampling.ALWAYS_ON.should_sample(*args, **kwargs)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("make_sampler", "remote"),
    MAY_RECORD_UNDER_AN_UNSAMPLED_PARENT.values(),
    ids=MAY_RECORD_UNDER_AN_UNSAMPLED_PARENT,
)
async def test_a_sampler_that_may_record_under_an_unsampled_parent_is_asked(
    make_sampler: Callable[[], sampling.Sampler], remote: bool
) -> None:
    with traced_with(make_sampler()) as ended:
        unsampled = parent(sampled=False, remote=remote)
        ran_in = await call_under(unsampled)
    assert [span.context for span in ended.spans] == [ran_in]
    assert ended.spans[0].parent == unsampled.get_span_context()


class _OwnTracerProvider:
    """Not the SDK's: its tracers look like the SDK's default, and record every span."""

    def __init__(self) -> None:
        self.sdk = TracerProvider(sampler=sampling.ALWAYS_ON)

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _OwnTracer(self.sdk.get_tracer(*args, **kwargs))


class _OwnTracer:
    sampler = sampling.DEFAULT_ON

    def __init__(self, recording: Any) -> None:
        self._recording = recording

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording.start_span(*args, **kwargs)


@pytest.mark.asyncio
async def test_a_tracer_other_than_the_sdks_is_asked_for_every_span() -> None:
    ended = _Ended()
    provider = _OwnTracerProvider()
    provider.sdk.add_span_processor(ended)
    instrumentation.configure(tracer_provider=provider, prometheus=False, structlog=False)
    try:
        ran_in = await call_under(parent(sampled=False))
    finally:
        instrumentation.reset()
        provider.sdk.shutdown()
    assert [span.context for span in ended.spans] == [ran_in]


@pytest.mark.asyncio
async def test_a_sampler_put_on_the_tracer_later_is_asked_from_then_on() -> None:
    with traced_with(sampling.DEFAULT_ON) as ended:
        unsampled = parent(sampled=False)
        await call_under(unsampled)
        assert ended.spans == []
        tracing = instrumentation._hooks.current().tracing  # type: ignore[union-attr]
        tracing.tracer().sampler = sampling.ALWAYS_ON  # type: ignore[union-attr]
        ran_in = await call_under(unsampled)
    assert [span.context for span in ended.spans] == [ran_in]


@pytest.mark.asyncio
async def test_sampled_and_unsampled_requests_in_turn_each_get_their_own_answer() -> None:
    with traced_with(sampling.DEFAULT_ON) as ended:
        recorded = []
        for turn in range(3):
            await call_under(parent(sampled=False, span_id=0x100 + turn))
            recorded.append(await call_under(parent(sampled=True, span_id=0x200 + turn)))
            await call_under(parent(sampled=False, span_id=0x300 + turn))
    assert [span.context for span in ended.spans] == recorded
    assert [span.parent.span_id for span in ended.spans if span.parent] == [0x200, 0x201, 0x202]


@pytest.mark.asyncio
async def test_the_sdk_counts_the_spans_it_drops_when_it_is_told_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    try:
        with traced_with(sampling.DEFAULT_ON, meter_provider=meters):
            for _ in range(3):
                await call_under(parent(sampled=False))
        started = [
            point
            for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "otel.sdk.span.started"
            for point in metric.data.data_points
        ]
    finally:
        meters.shutdown()
    dropped = [
        point.value
        for point in started
        if point.attributes.get("otel.span.sampling_result") == "DROP"
    ]
    assert dropped == [3]


@threaded
def fail() -> None:
    raise LookupError("failed on purpose")


@pytest.mark.asyncio
async def test_a_call_under_an_unsampled_parent_still_logs_its_debug_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        traced_with(sampling.DEFAULT_ON, metrics=True) as ended,
        caplog.at_level(logging.DEBUG, logger="aiothreads"),
        trace.use_span(parent(sampled=False)),
        pytest.raises(LookupError),
    ):
        await fail()
    assert ended.spans == []
    assert [record.getMessage().split()[:3] for record in caplog.records] == [
        ["threaded", "call", "failed"]
    ]


@pytest.mark.asyncio
async def test_a_call_under_an_unsampled_parent_with_metrics_on_is_only_counted() -> None:
    """Nothing but metrics can record it, so it is counted as such calls are: with no probe."""
    with traced_with(sampling.DEFAULT_ON, metrics=True), trace.use_span(parent(sampled=False)):
        call = current_span_context()
        assert type(call.probe).__name__ == "CountingProbe"  # type: ignore[attr-defined]
        await call
        with trace.use_span(parent(sampled=True)):
            sampled = current_span_context()
            assert type(sampled.probe).__name__ == "CallProbe"  # type: ignore[attr-defined]
            await sampled


def test_the_running_context_is_read_as_the_api_reads_it() -> None:
    from opentelemetry import context

    running = _running_context_getter(context)
    assert running() is context.get_current()
    token = context.attach(context.set_value("tenant", "acme"))
    try:
        assert running() is context.get_current()
        assert running().get("tenant") == "acme"
    finally:
        context.detach(token)
    assert running() is context.get_current()
    elsewhere = contextvars.Context()  # a thread's or a task's own: the API's default there
    assert elsewhere.run(running) is elsewhere.run(context.get_current)


class _RuntimeOfItsOwn:
    """A runtime context other than the API's default, as ``OTEL_PYTHON_CONTEXT`` loads one."""

    def __init__(self) -> None:
        from opentelemetry.context import Context

        self.current = Context({"runtime": "its own"})
        self._current_context = contextvars.ContextVar("looks like the default's")

    def get_current(self) -> Any:
        return self.current


def test_a_runtime_context_of_its_own_is_read_through_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import context

    runtime = _RuntimeOfItsOwn()
    monkeypatch.setattr(context, "_RUNTIME_CONTEXT", runtime)
    assert _running_context_getter(context)() is runtime.current


class _ParentWithoutContext(trace.NonRecordingSpan):
    """A current span whose context cannot be read: a broken instrumentation's."""

    def __init__(self) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)

    def get_span_context(self) -> SpanContext:
        raise RuntimeError("this span's context cannot be read")


@pytest.mark.asyncio
@pytest.mark.parametrize("metrics", [False, True], ids=["spans alone", "with metrics"])
async def test_a_parent_whose_context_cannot_be_read_never_breaks_a_call(metrics: bool) -> None:
    with traced_with(sampling.DEFAULT_ON, metrics=metrics) as ended:
        unsampled = parent(sampled=False)
        await call_under(unsampled)  # the sampler is known to drop spans under it
        with trace.use_span(_ParentWithoutContext()):
            with pytest.raises(LookupError):
                await fail()
            assert await double(21) == 42
    assert ended.spans == []


@threaded
def double(number: int) -> int:
    return 2 * number
