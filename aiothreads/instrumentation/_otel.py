"""OpenTelemetry tracing: one span per threaded call or iterator lifetime.

Spans start in the caller's context and are made current where the work runs,
so spans created inside the thread (an instrumented HTTP or database client)
become their children. The global tracer provider is used unless one is
passed; it stays a no-op until the application installs an SDK.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from .._log import describe_error, error_type
from .._outcomes import CANCELLED, ERROR
from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["OpenTelemetryTracing"]


class OpenTelemetryTracing:
    """Creates and finishes spans with the OpenTelemetry API."""

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import context, trace  # noqa: PLC0415 - the extra is optional
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

        self._context = context
        self._trace = trace
        self._internal = SpanKind.INTERNAL
        self._status = Status
        self._error_code = StatusCode.ERROR
        self._tracer = trace.get_tracer("aiothreads", __version__, tracer_provider=tracer_provider)

    def start(self, kind: str, function: str) -> Any:
        """Start a span in the current context, named ``"<kind> <function>"``."""
        return self._tracer.start_span(
            f"{kind} {function}",
            kind=self._internal,
            attributes={"code.function.name": function, "aiothreads.kind": kind},
        )

    def activate(self, span: Any) -> object:
        """Make ``span`` current in the running context; returns the detach token."""
        return self._context.attach(self._trace.set_span_in_context(span))

    def deactivate(self, token: object) -> None:
        """Restore the context that :meth:`activate` replaced."""
        self._context.detach(token)  # type: ignore[arg-type]

    def annotate_thread(self, span: Any) -> None:
        """Record the thread the work runs in."""
        thread = threading.current_thread()
        span.set_attributes({"thread.id": threading.get_ident(), "thread.name": thread.name})

    def annotate(self, span: Any, attributes: Mapping[str, Any]) -> None:
        """Set ``attributes`` on ``span``."""
        span.set_attributes(dict(attributes))

    def event(self, span: Any, name: str, attributes: Mapping[str, Any]) -> None:
        """Add an event to ``span``."""
        span.add_event(name, dict(attributes))

    def end(
        self,
        span: Any,
        outcome: str,
        error: BaseException | None,
        attributes: Mapping[str, Any],
    ) -> None:
        """Set the outcome on ``span`` and end it; the span ends whatever else fails.

        A failed call's span carries ``error.type`` and an exception event, and
        its status description is the error's message (the type is in
        ``error.type``), as the semantic conventions ask.
        """
        try:
            span.set_attribute("aiothreads.outcome", outcome)
            if attributes:
                span.set_attributes(dict(attributes))
            if outcome == ERROR and error is not None:
                span.set_attribute("error.type", error_type(error))
                span.set_status(self._status(self._error_code, describe_error(error)))
                with contextlib.suppress(Exception):  # an error that cannot be printed
                    span.record_exception(error)
            elif outcome == CANCELLED:
                span.add_event("cancelled")
        finally:
            span.end()

    def ids(self, span: Any) -> tuple[str, str] | None:
        """Return the span's trace and span ids as hex, or ``None`` if not recording."""
        context = span.get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")
