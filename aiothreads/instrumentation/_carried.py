"""A call's trace context in the worker process that runs it, for executors whose work leaves.

Semantics (in the worker, reached through ``aiothreads._remote.call_carried``):

* Without the OpenTelemetry API installed there, the function is just called.
* With the API, the carried context (W3C ``traceparent``, ``tracestate`` and
  ``baggage``) is current while the function runs, so the spans it opens and
  the log events that read the current span (a structlog processor, the
  OpenTelemetry logging instrumentation) carry the caller's trace id.
* With an SDK's tracer provider installed there too (and
  ``AIOTHREADS_INSTRUMENTATION`` not leaving OpenTelemetry out), the run gets
  a span of its own, ``worker <function>``: a child of the call's span in the
  caller, with the worker's process and thread, and the outcome,
  ``error.type`` and exception event as on the caller's side.
* Telemetry never changes the call: the function runs once, with exactly its
  arguments, and its result or exception is passed on unchanged; a failure
  inside the telemetry is swallowed.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from .._outcomes import outcome_of

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._otel import OpenTelemetryTracing

__all__ = ["run_in_carried_context"]

T = TypeVar("T")


class _Worker:
    """The OpenTelemetry pieces a worker needs, looked up once per process."""

    __slots__ = ("context", "last_extracted", "propagator", "spans", "trace")

    def __init__(self) -> None:
        from opentelemetry import context, trace  # noqa: PLC0415 - the extra is optional

        from ._config import selection_from_environment  # noqa: PLC0415
        from ._otel import OpenTelemetryTracing, w3c_propagator  # noqa: PLC0415

        self.context = context
        self.trace = trace
        self.propagator = w3c_propagator()
        self.spans: OpenTelemetryTracing | None = None
        if selection_from_environment()["opentelemetry"] is not False:
            self.spans = OpenTelemetryTracing()
        self.last_extracted: tuple[Mapping[str, str], Any] = ({}, None)
        """The last headers extracted, and their context: the calls of one unsampled
        request carry the same, and a context is immutable, so it is reused."""

    def extract(self, headers: Mapping[str, str]) -> Any:
        """Return the context ``headers`` carry (the caller's trace, and its baggage)."""
        last_headers, last_context = self.last_extracted
        if headers == last_headers:
            return last_context
        extracted = self.propagator.extract(headers)
        self.last_extracted = (headers, extracted)
        return extracted

    def enter(self, kind: str, function: str, headers: Mapping[str, str]) -> tuple[object, Any]:
        """Make the carried context current, with a span for the run if one records.

        Returns what ``leave`` needs: the token of the context and the span.
        """
        parent = self.extract(headers)
        span = None
        spans = self.spans
        if spans is not None:
            tracer = spans.tracer()
            if tracer is not None:
                span = tracer.start_span(
                    f"worker {function}",
                    context=parent,
                    attributes={
                        "code.function.name": function,
                        "aiothreads.kind": kind,
                        "process.pid": os.getpid(),
                        "thread.id": threading.get_ident(),
                        "thread.name": threading.current_thread().name,
                    },
                )
                parent = self.trace.set_span_in_context(span, parent)
        return self.context.attach(parent), span

    def leave(self, entered: tuple[object, Any], error: BaseException | None) -> None:
        """End the run's span with its outcome and restore the context ``enter`` replaced."""
        token, span = entered
        try:
            if span is not None and self.spans is not None:
                self.spans.end(span, outcome_of(error), error, {})
        finally:
            self.context.detach(token)  # type: ignore[arg-type]


@functools.cache
def _find_worker() -> _Worker | None:
    """Look the OpenTelemetry pieces up, once per process; ``None`` without OpenTelemetry."""
    try:
        return _Worker()
    except Exception:  # no OpenTelemetry here (or a broken one): just run the calls
        return None


def run_in_carried_context(
    carried: tuple[str, str, Mapping[str, str]], func: Callable[..., T], args: tuple[Any, ...]
) -> T:
    """Run ``func(*args)`` inside the trace context ``carried`` from the caller; see the module."""
    worker = _find_worker()
    if worker is None:
        return func(*args)
    kind, function, headers = carried
    try:
        entered = worker.enter(kind, function, headers)
    except Exception:  # telemetry must never break the call
        entered = None
    if entered is None:
        return func(*args)  # outside the handler: its exception must not chain to telemetry's
    try:
        result = func(*args)
    except BaseException as exc:
        _leave_quietly(worker, entered, exc)
        raise
    _leave_quietly(worker, entered, None)
    return result


def _leave_quietly(
    worker: _Worker, entered: tuple[object, Any], error: BaseException | None
) -> None:
    try:
        worker.leave(entered, error)
    except Exception:  # telemetry must never break the call
        return
