"""Probes: what the core reports about one call or stream, fanned out to the backends.

Probes are observers: they never change what the core does, and an error
inside a backend is swallowed so that telemetry can never break a call.

What a call costs is kept to the minimum each backend needs:

* a function's metric series, span name and span attributes are looked up
  once (``FunctionTelemetry``), not per call;
* a call's span is opened when its work starts, with the submit time as its
  start, so queue time stays visible while only running calls hold a live
  span; a span that is not recording (no SDK, or sampled out) costs nothing
  more.
"""

from __future__ import annotations

import contextlib
import threading
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from .._outcomes import CANCELLED, ERROR
from .._watchdog import SLOW_EVENT
from ._tallies import SEPARATE_KINDS, made_once

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Callable, Mapping

    from ._backends import Events, Metrics, Series, Tracing

__all__ = ["CallProbe", "CountingProbe", "FunctionTelemetry", "StreamProbe", "Telemetry"]

LIMIT_WAIT_ATTRIBUTE: Final = "aiothreads.limit_wait_seconds"
QUEUE_WAIT_ATTRIBUTE: Final = "aiothreads.queue_wait_seconds"
ITEMS_ATTRIBUTE: Final = "aiothreads.items"
_NO_ATTRIBUTES: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


class Telemetry:
    """The active backends; hands out one probe per call or stream."""

    __slots__ = ("_functions", "_lock", "events", "metrics", "tracing")

    def __init__(
        self,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        events: Events | None = None,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.events = events
        self._functions: dict[tuple[str, str], FunctionTelemetry] = {}
        self._lock = threading.Lock()

    def function(self, kind: str, function: str) -> FunctionTelemetry:
        """Return what is looked up once for calls of ``function`` of ``kind``."""
        return made_once(self._functions, (kind, function), self._lock, self._new_function)

    def _new_function(self, key: tuple[str, str]) -> FunctionTelemetry:
        return FunctionTelemetry(self, *key)

    def call(self, kind: str, function: str) -> CallProbe | None:
        """Start observing one call, where it is submitted; ``None`` if nothing would be recorded.

        That is the case with tracing alone while no SDK is installed (and no
        debug logging): the call then costs this look-up and nothing else.
        """
        return self.call_of(self.function(kind, function))

    def call_of(self, of: FunctionTelemetry) -> CallProbe | None:
        """``call`` for a function whose telemetry was looked up already (``function``).

        A call that could record nothing but metrics gets a ``CountingProbe``;
        what is possible is judged once, as the call is made.
        """
        return self.probe_of(of, of.recording_possible())

    def probe_of(self, of: FunctionTelemetry, recording: bool) -> CallProbe | None:
        """``call_of``, where ``recording`` is ``of.recording_possible()``, asked already."""
        if recording:
            return CallProbe(of)
        if of.countable:
            return CountingProbe(of, of.series)  # type: ignore[arg-type]  # countable: it has one
        if of.series is None:
            return None
        return CallProbe(of)  # a separate thread's start and end are counted, and logged

    def stream(
        self, kind: str, function: str, capacity: int, depth: Callable[[], int]
    ) -> StreamProbe:
        """Start observing one iterator; ``depth()`` reports its buffered items."""
        return StreamProbe(self.function(kind, function), capacity, depth)


class FunctionTelemetry:
    """What every call of one function needs from the backends, looked up once."""

    __slots__ = (
        "countable",
        "events",
        "function",
        "kind",
        "may_record",
        "metrics",
        "nothing_but_metrics_here",
        "recording_possible",
        "separate",
        "series",
        "span_attributes",
        "span_name",
        "telemetry",
        "tracing",
    )

    def __init__(self, telemetry: Telemetry, kind: str, function: str) -> None:
        self.telemetry = telemetry
        """Whose backends these are: a caller keeping this checks it is still the active one."""
        self.kind = kind
        self.function = function
        self.separate = kind in SEPARATE_KINDS
        self.metrics = telemetry.metrics
        self.tracing = telemetry.tracing
        self.events = telemetry.events
        self.may_record = self.events is not None or self.tracing is not None
        """Whether anything but metrics is on: else ``recording_possible()`` is false."""
        self.recording_possible: Callable[[], bool] = self._span_or_event_possible
        """Whether a call could record anything but metrics: a span or a log event."""
        if self.tracing is None and self.events is not None:
            self.recording_possible = self.events.enabled
        self.nothing_but_metrics_here: Callable[[], bool] = self._nothing_but_metrics_here
        """Whether a call made now would record nothing but metrics: no span (none could
        record, or the running context's sampled-out trace drops it), no log event."""
        if self.events is None and self.tracing is not None:
            self.nothing_but_metrics_here = self.tracing.records_nothing_here
        self.series: Series | None = None
        if self.metrics is not None:
            try:
                self.series = self.metrics.series(kind, function)
            except Exception:  # telemetry must never break a call: no metrics for it then
                self.series = None
        self.countable = self.series is not None and not self.separate
        """Whether a call that records nothing but metrics can be counted with no probe.

        Whoever runs such a call counts it into ``series`` directly (see
        ``ThreadCall``), and makes a ``CountingProbe`` only for what is rare
        (a refusal, a slow call, a dropped result, work that leaves the process).
        """
        self.span_name = f"{kind} {function}"
        self.span_attributes: Mapping[str, Any] = MappingProxyType(
            {"code.function.name": function, "aiothreads.kind": kind}
        )

    def _nothing_but_metrics_here(self) -> bool:
        events = self.events
        if events is not None and events.enabled():
            return False
        tracing = self.tracing
        return tracing is None or tracing.records_nothing_here()

    def carried_headers(self, span: Any = None) -> Mapping[str, str]:
        """Return the W3C headers that carry ``span`` to another process.

        With ``None`` (a call with no span of its own), those of the running
        context. Empty when nothing is traced.
        """
        tracing = self.tracing
        if tracing is None:
            return _NO_HEADERS
        try:
            return tracing.headers(span)
        except Exception:  # telemetry must never break the call: it goes untraced
            return _NO_HEADERS

    def _span_or_event_possible(self) -> bool:
        if self.tracing is not None and self.tracing.recording_possible():
            return True
        return self.events is not None and self.events.enabled()

    def counting_probe(self, submitted_at: float) -> CallProbe:
        """Make a probe for a call counted only, already counted as submitted at ``submitted_at``.

        ``submitted_at`` is on ``time.perf_counter()``'s clock.
        """
        return CountingProbe(self, self.series, submitted_at)  # type: ignore[arg-type]


class CallProbe:
    """Follows one call: submitted, started in a thread, finished (or skipped)."""

    __slots__ = ("_limit_wait", "_of", "_span", "_started", "_submitted", "_submitted_ns")

    def __init__(self, of: FunctionTelemetry) -> None:
        self._of = of
        self._span: Any = None
        self._limit_wait: float | None = None
        self._submitted = self._started = time.perf_counter()
        tracing = of.tracing
        self._submitted_ns = (
            time.time_ns() if tracing is not None and tracing.recording_possible() else 0
        )
        """When the call's span starts; 0 if it has none to open: none could record
        when the call was made (no SDK yet), or ``carry`` tried already."""
        series = of.series
        if series is not None:
            series.submitted()

    def limit_waited(self, seconds: float) -> None:
        """Record that the call waited ``seconds`` for a place under its limit.

        Its span then starts when the call was made, before that wait.
        """
        self._limit_wait = seconds
        if self._submitted_ns:
            self._submitted_ns -= round(seconds * 1e9)
        series = self._of.series
        if series is not None:
            series.limit_waited(seconds)

    def running(self, context: contextvars.Context | None = None) -> None:
        """Record that the work starts in the current thread.

        With ``context`` (the one the work runs in), the call's span is opened
        there and made current, so spans the work creates become its children.
        """
        self._started = started = time.perf_counter()
        of = self._of
        series = of.series
        if series is not None:
            series.started(started - self._submitted)
        if self._submitted_ns and self._span is None:  # not tried by ``carry`` already
            self._span = self._begin(context)
        if of.separate:
            if series is not None:
                series.thread_started()
            self._log("debug", "separate thread started")

    def _begin(self, context: contextvars.Context | None) -> Any:
        """Open the call's span from its submit time, current in ``context`` if given.

        Returns ``None`` if the span is not recording.
        """
        of = self._of
        tracing = of.tracing
        if tracing is None:
            return None
        try:
            span = tracing.begin(of.span_name, of.span_attributes, self._submitted_ns, context)
        except Exception:  # telemetry must never break the observed call
            return None
        return span

    def carry(self) -> Mapping[str, str]:
        """Open the call's span now, as its work leaves for another process; return its headers.

        The headers (W3C trace context and baggage) make the span the parent
        of what the work does there; the running context (the caller's) is
        its parent here. Empty when nothing is traced.
        """
        of = self._of
        if of.tracing is None:
            return _NO_HEADERS
        if self._span is None and self._submitted_ns:
            self._span = self._begin(None)
            self._submitted_ns = 0  # tried: not recording is the answer for this call too
        return of.carried_headers(self._span)

    def activate_here(self) -> object:
        """Make the span current in the running context; returns a token for ``restore``."""
        tracing = self._of.tracing
        if tracing is None or self._span is None:
            return None
        try:
            return tracing.activate(self._span)
        except Exception:  # telemetry must never break the observed call
            return None

    def restore(self, token: object) -> None:
        """Undo ``activate_here``."""
        tracing = self._of.tracing
        if tracing is not None and token is not None:
            with contextlib.suppress(Exception):  # a failing backend must not break the call
                tracing.deactivate(token)

    def finished(self, outcome: str, error: BaseException | None = None) -> None:
        """Record that the work ended here with ``outcome`` (ok, error or cancelled)."""
        self._record_end(outcome, error)
        if self._span is not None:
            self._end_span(outcome, error, self._ran_attributes())

    def _record_end(self, outcome: str, error: BaseException | None) -> None:
        of = self._of
        series = of.series
        if series is not None:
            trace = None
            if self._span is not None and of.tracing is not None:
                with contextlib.suppress(Exception):  # a failing backend must not break the call
                    trace = of.tracing.trace_of(self._span)
            series.finished(outcome, time.perf_counter() - self._started, trace)
        if outcome == ERROR and of.events is not None:
            self._log("debug", "threaded call failed", error=error)
        if of.separate:
            if series is not None:
                series.thread_finished()
            self._log("debug", "separate thread finished", outcome=outcome)

    def _end_span(
        self, outcome: str, error: BaseException | None, attributes: Mapping[str, Any]
    ) -> None:
        tracing = self._of.tracing
        span, self._span = self._span, None  # an ended span is the exporter's, not ours to keep
        if tracing is not None and span is not None:
            with contextlib.suppress(Exception):  # a failing backend must not break the call
                tracing.end(span, outcome, error, attributes)

    def skipped(
        self,
        outcome: str = CANCELLED,
        error: BaseException | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        """Record that the call ended before any thread ran it.

        ``cancelled`` when its caller gave up; ``error`` (with the reason)
        when the executor refused or dropped it. Its span, from submit to
        now, is a child of the span current in ``context`` (the submitter's),
        or in the running context if none is given.
        """
        of = self._of
        if of.series is not None:
            of.series.skipped(outcome)
        begun = self._submitted_ns != 0 and self._span is None
        if begun:
            if context is None:
                self._span = self._begin(None)
            else:  # the submitter's span is current there: ours becomes its child
                self._span = context.run(self._begin, None)
        if outcome == ERROR:  # logged while the span is open: the event carries its ids
            self._log("debug", "threaded call refused", error=error)
        if self._span is not None:  # opened here, or by ``carry`` before the executor refused
            self._end_span(outcome, error, self._unrun_attributes())
        self._stream_closed()

    def _ran_attributes(self) -> dict[str, Any]:
        """Return what the span of work that ran gets as it ends: how long it waited."""
        limit_wait = self._limit_wait
        queue_wait = self._started - self._submitted
        if limit_wait is None:
            return {QUEUE_WAIT_ATTRIBUTE: queue_wait}
        return {QUEUE_WAIT_ATTRIBUTE: queue_wait + limit_wait, LIMIT_WAIT_ATTRIBUTE: limit_wait}

    def _unrun_attributes(self) -> Mapping[str, Any]:
        """Return what the span of a call that never ran gets as it ends: nothing more."""
        return _NO_ATTRIBUTES

    def _stream_closed(self) -> None:
        """Report a stream's end; a plain call has none."""

    def slow(self, elapsed: float, details: dict[str, Any]) -> None:
        """Record that the work has run ``elapsed`` seconds, past the watchdog's threshold.

        Called once, from the watchdog's thread, while the work still runs.
        """
        of = self._of
        if of.series is not None:
            of.series.slow()
        tracing = of.tracing
        span = self._span  # read once: the work's own thread may end it meanwhile
        if tracing is not None and span is not None:
            attributes = {
                "aiothreads.elapsed": elapsed,
                "thread.id": details["thread_id"],
                "thread.name": details["thread"],
                "code.stacktrace": "\n".join(details["stack"]),
            }
            with contextlib.suppress(Exception):  # a failing backend must not break the call
                tracing.event(span, "aiothreads.slow", attributes)
        self._log("warning", SLOW_EVENT, **details)

    def trace_ids(self) -> tuple[str, str] | None:
        """Return the trace id and span id of the call's span, if it records one."""
        tracing = self._of.tracing
        span = self._span  # read once: snapshot() asks from other threads while it ends
        if tracing is None or span is None:
            return None
        try:
            return tracing.ids(span)
        except Exception:  # a failing backend must not break the call
            return None

    def dropped(self) -> None:
        """Record that the outcome could not be delivered: the event loop was closed."""
        self._log("warning", "result dropped: event loop closed")

    def _log(self, level: str, event: str, **fields: Any) -> None:
        of = self._of
        events = of.events
        if events is None:
            return
        fields.update(function=of.function, kind=of.kind)
        tracing = of.tracing
        span = self._span  # read once: the watchdog logs from its own thread
        with contextlib.suppress(Exception):  # a failing backend must not break the call
            if tracing is not None and span is not None:
                ids = tracing.ids(span)
                if ids:
                    fields.update(trace_id=ids[0], span_id=ids[1])
            events.emit(level, event, fields)


class CountingProbe(CallProbe):
    """Follows a call that only metrics record (no span, no log event): it counts, no more.

    What else a probe does (a refusal, a slow call, a dropped result) it does
    as a ``CallProbe``, which has nothing to end or log either.
    """

    __slots__ = ("_series",)

    def __init__(
        self, of: FunctionTelemetry, series: Series, submitted_at: float | None = None
    ) -> None:
        """Count a call submitted now; or, with ``submitted_at``, one counted as submitted then.

        ``submitted_at`` is on ``time.perf_counter()``'s clock.
        """
        self._of = of
        self._series = series
        self._span = None
        self._limit_wait = None
        self._submitted_ns = 0
        if submitted_at is None:
            self._submitted = self._started = time.perf_counter()
            series.submitted()
        else:
            self._submitted = self._started = submitted_at

    def running(self, context: contextvars.Context | None = None) -> None:
        """Record that the work starts in the current thread."""
        self._started = started = time.perf_counter()
        self._series.started(started - self._submitted)

    def finished(self, outcome: str, error: BaseException | None = None) -> None:
        """Record that the work ended here with ``outcome`` (ok, error or cancelled)."""
        self._series.finished(outcome, time.perf_counter() - self._started)


class StreamProbe(CallProbe):
    """Follows one threaded iterator: its producer thread, items, stalls and end."""

    __slots__ = ("_capacity", "_depth", "_items", "_stream_token")

    def __init__(self, of: FunctionTelemetry, capacity: int, depth: Callable[[], int]) -> None:
        super().__init__(of)
        self._items = 0
        self._capacity = capacity
        self._depth = depth
        self._stream_token: object = None

    def running(self, context: contextvars.Context | None = None) -> None:
        """Record that the generator starts in the current thread: the iterator is active."""
        super().running(context)
        of = self._of
        if of.metrics is not None:
            with contextlib.suppress(Exception):  # a failing backend must not break the call
                self._stream_token = of.metrics.stream_opened(
                    of.kind, of.function, self._capacity, self._depth
                )

    def _stream_closed(self) -> None:
        metrics = self._of.metrics
        if metrics is not None:
            with contextlib.suppress(Exception):  # a failing backend must not break the call
                metrics.stream_closed(self._stream_token)

    def yielded(self, count: int) -> None:
        """Record that the producer handed over ``count`` more items."""
        self._items += count
        series = self._of.series
        if series is not None:
            series.items_yielded(count)

    def blocked(self, seconds: float) -> None:
        """Record that the producer waited ``seconds`` for room in a full channel."""
        series = self._of.series
        if series is not None:
            series.backpressure(seconds)

    def ended(self, outcome: str, error: BaseException | None, reason: str | None) -> None:
        """Record that the generator is done; ``reason`` says why it stopped early, if so."""
        of = self._of
        if reason is not None:
            if of.series is not None:
                of.series.generator_cancelled(reason)
            self._log("debug", "threaded generator cancelled", reason=reason, items=self._items)
            if of.tracing is not None and self._span is not None:
                with contextlib.suppress(Exception):  # a failing backend must not break the call
                    of.tracing.event(self._span, "cancelled", {"reason": reason})
        self._stream_closed()
        self._record_end(outcome, error)
        if self._span is not None:
            self._end_span(outcome, error, {**self._ran_attributes(), ITEMS_ATTRIBUTE: self._items})

    def _unrun_attributes(self) -> Mapping[str, Any]:
        """Return the items handed over (none), which every iterator's span ends with."""
        return {ITEMS_ATTRIBUTE: self._items}
