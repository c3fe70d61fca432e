"""Probes: what the core reports about one call or stream, fanned out to the backends.

Probes are observers: they never change what the core does, and an error
inside a backend is swallowed so that telemetry can never break a call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from .._outcomes import CANCELLED, ERROR

if TYPE_CHECKING:
    import contextvars

    from ._backends import Events, Metrics, Tracing

__all__ = ["CallProbe", "StreamProbe", "Telemetry"]

SEPARATE_KINDS: Final = frozenset({"separate", "iterable_separate"})


class Telemetry:
    """The active backends; hands out one probe per call or stream."""

    __slots__ = ("events", "metrics", "tracing")

    def __init__(
        self,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        events: Events | None = None,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.events = events

    def call(self, kind: str, function: str) -> CallProbe:
        """Start observing one call; called where the call is submitted."""
        return CallProbe(self, kind, function)

    def stream(self, kind: str, function: str, capacity: int, depth: Any) -> StreamProbe:
        """Start observing one iterator; ``depth()`` reports its buffered items."""
        return StreamProbe(self, kind, function, capacity, depth)


def _safely(action: Any, *args: Any) -> Any:
    try:
        return action(*args)
    except Exception:  # telemetry must never break the observed call
        return None


class CallProbe:
    """Follows one call: submitted, started in a thread, finished (or skipped)."""

    __slots__ = ("_function", "_kind", "_span", "_started", "_submitted", "_telemetry")

    def __init__(self, telemetry: Telemetry, kind: str, function: str) -> None:
        self._telemetry = telemetry
        self._kind = kind
        self._function = function
        self._submitted = time.perf_counter()
        self._started = self._submitted
        metrics, tracing = telemetry.metrics, telemetry.tracing
        if metrics is not None:
            _safely(metrics.call_submitted, kind, function)
        self._span = None if tracing is None else _safely(tracing.start, kind, function)

    def bind(self, context: contextvars.Context) -> None:
        """Make the call's span current in ``context``, where the work will run."""
        tracing = self._telemetry.tracing
        if tracing is not None and self._span is not None:
            _safely(context.run, tracing.activate, self._span)

    def activate_here(self) -> object:
        """Make the span current in the running context; returns a token for ``restore``."""
        tracing = self._telemetry.tracing
        if tracing is None or self._span is None:
            return None
        return _safely(tracing.activate, self._span)

    def restore(self, token: object) -> None:
        """Undo :meth:`activate_here`."""
        tracing = self._telemetry.tracing
        if tracing is not None and token is not None:
            _safely(tracing.deactivate, token)

    def limit_waited(self, seconds: float) -> None:
        """Record that the call waited ``seconds`` for a place under its limit."""
        telemetry = self._telemetry
        if telemetry.metrics is not None:
            _safely(telemetry.metrics.limit_waited, self._kind, self._function, seconds)
        if telemetry.tracing is not None and self._span is not None:
            _safely(
                telemetry.tracing.annotate, self._span, {"aiothreads.limit_wait_seconds": seconds}
            )

    def running(self) -> None:
        """Record that the work starts in the current thread."""
        self._started = time.perf_counter()
        telemetry = self._telemetry
        if telemetry.metrics is not None:
            _safely(
                telemetry.metrics.call_started,
                self._kind,
                self._function,
                self._started - self._submitted,
            )
        if telemetry.tracing is not None and self._span is not None:
            _safely(telemetry.tracing.annotate_thread, self._span)
        if self._kind in SEPARATE_KINDS:
            if telemetry.metrics is not None:
                _safely(telemetry.metrics.thread_started, self._kind, self._function)
            self._log("debug", "separate thread started")

    def finished(self, outcome: str, error: BaseException | None = None) -> None:
        """Record that the work ended here with ``outcome`` (ok, error or cancelled)."""
        self._record_end(outcome, error)
        self._end_span(outcome, error, {})

    def _record_end(self, outcome: str, error: BaseException | None) -> None:
        telemetry = self._telemetry
        duration = time.perf_counter() - self._started
        if telemetry.metrics is not None:
            _safely(telemetry.metrics.call_finished, self._kind, self._function, outcome, duration)
        if outcome == ERROR:
            self._log("debug", "threaded call failed", error=error)
        if self._kind in SEPARATE_KINDS:
            if telemetry.metrics is not None:
                _safely(telemetry.metrics.thread_finished, self._kind, self._function)
            self._log("debug", "separate thread finished", outcome=outcome)

    def _end_span(
        self, outcome: str, error: BaseException | None, attributes: dict[str, Any]
    ) -> None:
        tracing = self._telemetry.tracing
        if tracing is not None and self._span is not None:
            _safely(tracing.end, self._span, outcome, error, attributes)

    def skipped(self, outcome: str = CANCELLED, error: BaseException | None = None) -> None:
        """Record that the call ended before any thread ran it.

        ``cancelled`` when its caller gave up; ``error`` (with the reason)
        when the executor refused or dropped it.
        """
        telemetry = self._telemetry
        if telemetry.metrics is not None:
            _safely(telemetry.metrics.call_skipped, self._kind, self._function, outcome)
        if outcome == ERROR:
            self._log("debug", "threaded call refused", error=error)
        if telemetry.tracing is not None and self._span is not None:
            _safely(telemetry.tracing.end, self._span, outcome, error, {})

    def dropped(self) -> None:
        """Record that the outcome could not be delivered: the event loop was closed."""
        self._log("warning", "result dropped: event loop closed")

    def _log(self, level: str, event: str, **fields: Any) -> None:
        events = self._telemetry.events
        if events is None:
            return
        fields.update(function=self._function, kind=self._kind)
        tracing = self._telemetry.tracing
        if tracing is not None and self._span is not None:
            ids = _safely(tracing.ids, self._span)
            if ids:
                fields.update(trace_id=ids[0], span_id=ids[1])
        _safely(events.emit, level, event, fields)


class StreamProbe(CallProbe):
    """Follows one threaded iterator: its producer thread, items, stalls and end."""

    __slots__ = ("_capacity", "_items", "_stream_token")

    def __init__(
        self, telemetry: Telemetry, kind: str, function: str, capacity: int, depth: Any
    ) -> None:
        super().__init__(telemetry, kind, function)
        self._capacity = capacity
        self._items = 0
        self._stream_token: object = None
        if telemetry.metrics is not None:
            self._stream_token = _safely(
                telemetry.metrics.stream_opened, kind, function, capacity, depth
            )

    def skipped(self, outcome: str = CANCELLED, error: BaseException | None = None) -> None:
        """Record that the generator ended before any thread ran it."""
        super().skipped(outcome, error)
        if self._telemetry.metrics is not None:
            _safely(self._telemetry.metrics.stream_closed, self._stream_token)

    def yielded(self, count: int) -> None:
        """Record that the producer handed over ``count`` more items."""
        self._items += count
        if self._telemetry.metrics is not None:
            _safely(self._telemetry.metrics.items_yielded, self._kind, self._function, count)

    def blocked(self, seconds: float) -> None:
        """Record that the producer waited ``seconds`` for room in a full channel."""
        if self._telemetry.metrics is not None:
            _safely(self._telemetry.metrics.backpressure, self._kind, self._function, seconds)

    def ended(self, outcome: str, error: BaseException | None, reason: str | None) -> None:
        """Record that the generator is done; ``reason`` says why it stopped early, if so."""
        telemetry = self._telemetry
        if telemetry.metrics is not None:
            if reason is not None:
                _safely(telemetry.metrics.generator_cancelled, self._kind, self._function, reason)
            _safely(telemetry.metrics.stream_closed, self._stream_token)
        if reason is not None:
            self._log("debug", "threaded generator cancelled", reason=reason, items=self._items)
            if telemetry.tracing is not None and self._span is not None:
                _safely(telemetry.tracing.event, self._span, "cancelled", {"reason": reason})
        self._record_end(outcome, error)
        self._end_span(outcome, error, {"aiothreads.items": self._items})
