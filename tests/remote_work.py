"""What the engine tests run in worker processes: module level, and free of aiothreads.

Workers import this module by name. It never imports aiothreads, so it also
runs in a worker that has none (``hide_aiothreads``). Workers tell the test
where they are over sockets on 127.0.0.1, never by timing.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

HANG_GUARD = 30.0
"""Seconds a worker waits for the test's word; only a safety net."""


def multiply(a: int, b: int = 1) -> int:
    return a * b


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return exactly what the function was called with."""
    return args, kwargs


class Scale:
    """A callable object: multiplies by its ``factor``, which may be changed between calls."""

    def __init__(self, factor: object) -> None:
        self.factor = factor

    def __call__(self, number: int) -> Any:
        return number * self.factor  # type: ignore[operator]


class RemoteFailure(Exception):
    """Raised in a worker by ``fail``."""


def fail(message: str) -> None:
    raise RemoteFailure(message)


def report(port: int, word: bytes) -> None:
    """Tell the test on ``port`` that this call ran, by ``word``."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as connection:
        connection.sendall(word)


def report_then_wait(port: int) -> int:
    """Tell the test on ``port`` this worker's pid (8 bytes), wait for its word; return the pid.

    The word is one byte, or the test closing the connection.
    """
    pid = os.getpid()
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as connection:
        connection.sendall(str(pid).encode().ljust(8))
        connection.recv(1)
    return pid


def trace_seen() -> tuple[str, str, dict[str, object]]:
    """Return the trace id, the caller's span id and the baggage current in this worker.

    Where this worker records a span of its own for the run, the caller's span
    is that span's parent.
    """
    from opentelemetry import baggage, trace

    span = trace.get_current_span()
    context = span.get_span_context()
    parent = getattr(span, "parent", None)
    caller = context if parent is None else parent
    return (
        format(context.trace_id, "032x"),
        format(caller.span_id, "016x"),
        dict(baggage.get_all()),
    )


def trace_context_seen() -> tuple[str, str, bool, str]:
    """Return the trace id, span id, sampled flag and trace state current in this worker."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        context.trace_flags.sampled,
        context.trace_state.to_header(),
    )


def current_span_id() -> str:
    """Return the id of the span current in this worker while the function runs."""
    from opentelemetry import trace

    return format(trace.get_current_span().get_span_context().span_id, "016x")


def structlog_events() -> list[dict[str, Any]]:
    """Log one structlog event here, with the current span's ids; return what was logged."""
    import structlog
    from opentelemetry import trace

    logged: list[dict[str, Any]] = []

    def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event["trace_id"] = format(context.trace_id, "032x")
        return event

    def keep(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        logged.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(processors=[add_trace_ids, keep])
    structlog.get_logger().info("crunched", rows=3)
    return logged


def hide_aiothreads() -> None:
    """Process-pool initializer: make this worker one where aiothreads cannot be imported."""
    sys.modules["aiothreads"] = None  # type: ignore[assignment]


def aiothreads_hidden() -> bool:
    """Whether aiothreads is hidden in this worker and was never imported."""
    return "aiothreads" in sys.modules and sys.modules["aiothreads"] is None


class _Exporting:
    """The span processor a worker's tracer provider exports through, while the test wants it."""

    lock = threading.Lock()
    processor: Any = None


def export_spans_to(endpoint: str) -> None:
    """In a dask worker: install an SDK that exports every span to ``endpoint`` as it ends.

    The first call installs the global tracer provider (once per process: the
    API allows no other); ``stop_exporting_spans`` detaches the exporter again.
    """
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    class Switch(SpanProcessor):
        def on_end(self, span: Any) -> None:
            with _Exporting.lock:
                processor = _Exporting.processor
            if processor is not None:
                processor.on_end(span)

    if not getattr(trace.get_tracer_provider(), "_aiothreads_test", False):
        provider = TracerProvider(resource=Resource.create({"service.name": "dask-worker"}))
        provider.add_span_processor(Switch())
        provider._aiothreads_test = True  # type: ignore[attr-defined]
        trace.set_tracer_provider(provider)
    with _Exporting.lock:
        _Exporting.processor = SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint))


def stop_exporting_spans() -> None:
    """Undo ``export_spans_to`` (the tracer provider stays, exporting nowhere)."""
    with _Exporting.lock:
        processor, _Exporting.processor = _Exporting.processor, None
    if processor is not None:
        processor.shutdown()
