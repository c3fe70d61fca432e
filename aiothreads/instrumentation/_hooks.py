"""The one interface the core calls: probes for calls and streams, or ``None`` when off.

The core asks :func:`current` once per call or stream. With no backend active
it gets ``None`` and does nothing else, so instrumentation that is off costs a
function call and a comparison. With backends active it gets a
:class:`Telemetry`, whose probes fan each event out to the metrics, tracing and
log backends that are on. Probes are observers: they never change what the
core does, and an error inside a backend is swallowed so that telemetry can
never break a call.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from .._log import logger
from ._logs import StdlibEvents

if TYPE_CHECKING:
    import contextvars

    from ._backends import Events, Metrics, Tracing

__all__ = ["CallProbe", "StreamProbe", "Telemetry", "current", "install", "reset"]

OK: Final = "ok"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"

SEPARATE_KINDS: Final = frozenset({"separate", "iterable_separate"})


class _Unresolved:
    """Marker: the backends have not been looked up yet."""


_UNRESOLVED: Final = _Unresolved()
_active: Telemetry | _Unresolved | None = _UNRESOLVED
_debug_logs_allowed = True
_resolve_lock = threading.Lock()


def current() -> Telemetry | None:
    """Return the active telemetry, resolving the backends on first use.

    With no backend on, stdlib log events still flow while the ``aiothreads``
    logger is enabled for DEBUG (all of them are DEBUG but for dropped results).
    """
    active = _active
    if active is None:
        if _debug_logs_allowed and logger.isEnabledFor(logging.DEBUG):
            return _LOGS_ONLY
        return None
    if isinstance(active, _Unresolved):
        _resolve()
        return current()
    return active


def _resolve() -> None:
    from ._config import resolve_from_environment  # noqa: PLC0415 - deferred on purpose

    with _resolve_lock:
        if isinstance(_active, _Unresolved):
            install(resolve_from_environment())  # never raises: resolved once


def install(telemetry: Telemetry | None, *, debug_logs: bool = True) -> None:
    """Make ``telemetry`` (or nothing, for ``None``) what :func:`current` returns.

    ``debug_logs=False`` also silences the stdlib log events that otherwise
    flow without backends while the ``aiothreads`` logger is at DEBUG.
    """
    global _active, _debug_logs_allowed  # noqa: PLW0603 - the single switch the core reads
    _active = telemetry
    _debug_logs_allowed = debug_logs


def reset() -> None:
    """Forget the resolved backends; the next :func:`current` looks them up again."""
    global _active, _debug_logs_allowed  # noqa: PLW0603
    _active = _UNRESOLVED
    _debug_logs_allowed = True


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


_LOGS_ONLY: Final = Telemetry(events=StdlibEvents())


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
