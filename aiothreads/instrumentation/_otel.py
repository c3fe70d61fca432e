"""OpenTelemetry tracing: one span per threaded call or iterator lifetime.

A span is opened when the work starts in its thread, with the time the call
was submitted as its start and the caller's context as its parent, and is
made current where the work runs, so spans created inside the thread (an
instrumented HTTP or database client) become its children. The global tracer
provider is used unless one is passed; it stays a no-op until the application
installs an SDK, and a span that does not record costs nothing more. Under a
parent its trace left out, with the SDK's parent-based sampler, no span is
opened at all: the SDK would drop it (see ``_dropped_under_unsampled_parent``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any, cast

from .._log import describe_error, error_type
from .._outcomes import CANCELLED, ERROR
from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["OpenTelemetryTracing", "w3c_propagator"]


class OpenTelemetryTracing:
    """Creates and finishes spans with the OpenTelemetry API."""

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import baggage, context, trace  # noqa: PLC0415 - the extra is optional
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

        self._baggage = baggage
        self._context = context
        self._trace = trace
        self._internal = SpanKind.INTERNAL
        self._status = Status
        self._error_code = StatusCode.ERROR
        self._tracer: Any = None
        self._looking_up = threading.Lock()
        self._per_thread = threading.local()
        self._last_carried: tuple[object, Mapping[str, str]] = (None, {})
        self._sampling_known: tuple[object, object] | None = None
        """``(the tracer's sampler if it drops what an unsampled parent has, a running
        context whose current span is such a parent)``, once a span was opened."""
        self._running_context = _running_context_getter(context)
        self._provider_found = _global_provider_finder(trace, tracer_provider)
        if self._provider_found is None:  # a provider was given, or this API is unknown
            self._tracer = trace.get_tracer(
                "aiothreads", __version__, tracer_provider=tracer_provider
            )
        else:
            provider = self._provider_found()
            if provider is not None:  # one installed already fails here, when it is built
                self._tracer = provider.get_tracer("aiothreads", __version__)

    def _current_tracer(self) -> Any:
        """Return the global provider's tracer, or ``None`` while no SDK has installed one."""
        tracer = self._tracer
        if tracer is None:
            assert self._provider_found is not None  # set whenever the tracer is not
            provider = self._provider_found()
            if provider is None:
                return None
            with self._looking_up:  # threads that find the provider at once: one looks, once
                tracer = self._tracer
                if tracer is None:
                    try:
                        tracer = provider.get_tracer("aiothreads", __version__)
                    except Exception as exc:  # installed after aiothreads started, and broken
                        tracer = _NoTracer()
                        warnings.warn(
                            "aiothreads instrumentation: opentelemetry is left out, threaded "
                            "calls run without spans (the tracer provider raised "
                            f"{type(exc).__name__}: {exc}); check the tracer provider's "
                            "configuration",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    self._tracer = tracer
        return None if isinstance(tracer, _NoTracer) else tracer

    def recording_possible(self) -> bool:
        """Whether a span could record: a tracer provider other than the API's proxy is in use."""
        tracer = self._tracer
        if tracer is not None:
            return not isinstance(tracer, _NoTracer)
        found = self._provider_found
        if found is not None and found() is None:
            return False  # no SDK yet, asked per call: the lock and the checks are skipped
        return self._current_tracer() is not None

    def records_nothing_here(self) -> bool:
        """Whether a span opened now, in the running context, would record nothing.

        True while no SDK is installed, once spans are off for good, and under
        a parent whose children the sampler is known to drop (see
        ``_dropped_under_unsampled_parent``). It never raises: if the parent
        cannot be read, a span might record.
        """
        if not self.recording_possible():
            return True
        try:  # the tracer is found by now, and records
            return self._dropped_under_unsampled_parent(self._tracer)
        except Exception:  # telemetry must never break the call: it may get a span then
            return False

    def left_out(self) -> bool:
        """Whether spans are off for good: the tracer provider raised (looked up now)."""
        self._current_tracer()
        return isinstance(self._tracer, _NoTracer)

    def tracer(self) -> Any:
        """Return the tracer spans are opened with; ``None`` while no SDK has installed one."""
        return self._current_tracer()

    def headers(self, span: Any) -> Mapping[str, str]:
        """Return the W3C trace context and baggage that carry ``span`` to another process.

        ``span`` becomes the parent over the running context (whose baggage
        goes along); with ``None``, the running context's current span does.
        The calls of one request that records no span of its own for them
        carry the same headers, so those of the last running context are
        kept, and returned while it is the running one: read them, never
        change them.
        """
        running = self._running_context()
        if span is not None:
            return self._headers_of(span, running)
        last_running, last_headers = self._last_carried
        if running is last_running:  # a context never changes: a new value makes a new one
            return last_headers
        headers = self._headers_of(self._trace.get_current_span(running), running)
        self._last_carried = (running, headers)
        return headers

    def _headers_of(self, span: Any, running: Any) -> dict[str, str]:
        carried = span.get_span_context()
        carrier: dict[str, str] = {}
        if carried.is_valid:  # as TraceContextTextMapPropagator writes it, at a fifth of its cost
            carrier["traceparent"] = (
                f"00-{carried.trace_id:032x}-{carried.span_id:016x}-{carried.trace_flags:02x}"
            )
            if carried.trace_state:
                carrier["tracestate"] = carried.trace_state.to_header()
        if self._baggage.get_all(running):
            _baggage_propagator().inject(carrier, running)
        return carrier

    def begin(
        self,
        name: str,
        attributes: Mapping[str, Any],
        start_ns: int,
        context: contextvars.Context | None,
    ) -> Any:
        """Open a span that started at ``start_ns``; ``None`` if it is not recording.

        With ``context`` the span's parent is the span current there and the
        new span is made current in it; otherwise the running context gives
        the parent and nothing is made current. A recording span gets the
        thread that runs the work.
        """
        tracer = self._current_tracer()
        if tracer is None:
            return None
        if context is None:
            return self._open(tracer, name, attributes, start_ns, False)
        return context.run(self._open, tracer, name, attributes, start_ns, True)

    def _open(
        self,
        tracer: Any,
        name: str,
        attributes: Mapping[str, Any],
        start_ns: int,
        make_current: bool,
    ) -> Any:
        if self._dropped_under_unsampled_parent(tracer):
            return None
        if make_current:
            attributes = self._with_thread(attributes)
        span = tracer.start_span(
            name, kind=self._internal, attributes=attributes, start_time=start_ns
        )
        if not span.is_recording():
            return None
        if make_current:
            self.activate(span)  # never detached: the context is the call's own copy
        return span

    def _dropped_under_unsampled_parent(self, tracer: Any) -> bool:
        """Whether the SDK would drop a span opened now, known without opening it.

        True when the running context's span is valid and not sampled, and
        ``tracer``'s sampler follows such a parent (``ParentBased``, the SDK's
        default, with its unsampled-parent delegates left at ``ALWAYS_OFF``).
        The SDK would then generate an id and ask the sampler, only to make a
        span that records nothing; the headers carry the parent instead,
        whose trace id and unsampled flag are what the worker needs.
        """
        known = self._sampling_known
        if known is None:  # the first span: the tracer, once found, is kept for good
            sampler = _sampler_dropping_unsampled_children(tracer)
            unsampled_in = None
            self._sampling_known = (sampler, None)
        else:
            sampler, unsampled_in = known
        if sampler is None or getattr(tracer, "sampler", None) is not sampler:
            return False
        running = self._running_context()
        if running is unsampled_in:  # a context never changes: a new value makes a new one
            return True
        parent = self._trace.get_current_span(running).get_span_context()
        if not parent.is_valid or parent.trace_flags.sampled:
            return False
        self._sampling_known = (sampler, running)
        return True

    def _with_thread(self, attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        """``attributes`` and the current thread's id and name, remembered per thread."""
        try:
            remembered: dict[int, tuple[Mapping[str, Any], Mapping[str, Any]]]
            remembered = self._per_thread.attributes
        except AttributeError:
            remembered = self._per_thread.attributes = {}
        found = remembered.get(id(attributes))
        if found is None or found[0] is not attributes:
            thread = threading.current_thread()
            merged = {**attributes, "thread.id": threading.get_ident(), "thread.name": thread.name}
            found = remembered[id(attributes)] = (attributes, merged)
        return found[1]

    def activate(self, span: Any) -> object:
        """Make ``span`` current in the running context; returns the detach token."""
        return self._context.attach(self._trace.set_span_in_context(span))

    def deactivate(self, token: object) -> None:
        """Restore the context that ``activate`` replaced."""
        self._context.detach(token)  # type: ignore[arg-type]

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
            span.set_attributes({"aiothreads.outcome": outcome, **attributes})
            if outcome == ERROR and error is not None:
                span.set_attribute("error.type", error_type(error))
                span.set_status(self._status(self._error_code, describe_error(error)))
                with contextlib.suppress(Exception):  # an error that cannot be printed
                    span.record_exception(error)
            elif outcome == CANCELLED:
                span.add_event("cancelled")
        finally:
            span.end()

    def trace_of(self, span: Any) -> tuple[int, int]:
        """Return the trace id and span id of a recording span."""
        context = span.get_span_context()
        return context.trace_id, context.span_id

    def ids(self, span: Any) -> tuple[str, str] | None:
        """Return the span's trace and span ids as hex, or ``None`` if not recording."""
        context = span.get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")


class _NoTracer:
    """Marks a global tracer provider that failed: no spans are opened any more."""


@functools.cache
def w3c_propagator() -> Any:
    """Return a propagator of W3C trace context (``traceparent``, ``tracestate``) and baggage.

    Always these two, whatever ``OTEL_PROPAGATORS`` says: both sides of a
    call that leaves the process must speak the same format.
    """
    from opentelemetry.baggage.propagation import W3CBaggagePropagator  # noqa: PLC0415
    from opentelemetry.propagators.composite import CompositePropagator  # noqa: PLC0415
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def _sampler_dropping_unsampled_children(tracer: Any) -> Any:
    """Return ``tracer``'s sampler if it drops every child of an unsampled parent, else ``None``.

    Only the SDK's own tracer and ``ParentBased`` samplers (the kinds
    ``OTEL_TRACES_SAMPLER`` names) are known, with both unsampled-parent
    delegates the SDK's ``ALWAYS_OFF``, and no SDK metrics of its own (which
    count the spans it drops). Anything else is asked for every span.
    """
    sdk_trace = sys.modules.get("opentelemetry.sdk.trace")
    sampling = sys.modules.get("opentelemetry.sdk.trace.sampling")
    if sdk_trace is None or sampling is None or type(tracer) is not sdk_trace.Tracer:
        return None
    if type(getattr(tracer, "_tracer_metrics", None)).__name__ not in {
        "NoneType",
        "NoOpTracerMetrics",
    }:
        return None
    sampler = getattr(tracer, "sampler", None)
    parent_based = {
        getattr(sampling, name, None)
        for name in (
            "ParentBased",
            "ParentBasedTraceIdRatio",
            "_ParentBasedAlwaysOff",
            "_ParentBasedAlwaysOn",
        )
    }
    if type(sampler) not in parent_based - {None}:
        return None
    always_off = {getattr(sampling, "StaticSampler", None), getattr(sampling, "_AlwaysOff", None)}
    for delegate in ("_remote_parent_not_sampled", "_local_parent_not_sampled"):
        dropping: Any = getattr(sampler, delegate, None)
        if type(dropping) not in always_off - {None}:
            return None
        if dropping.get_description() != "AlwaysOffSampler":
            return None
    return sampler


@functools.cache
def _baggage_propagator() -> Any:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator  # noqa: PLC0415

    return W3CBaggagePropagator()


def _running_context_getter(context: Any) -> Callable[[], Any]:
    """Return what reads the running OpenTelemetry context: ``context.get_current``, or faster.

    The API's default runtime context keeps it in a ``ContextVar``, whose
    ``get`` returns the same value without the API's two Python calls around
    it; a call leaving the process asks twice. Any other runtime context
    (``OTEL_PYTHON_CONTEXT``) is asked through the API.
    """
    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    variable: object = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(
        variable, contextvars.ContextVar
    ):
        return cast("contextvars.ContextVar[Any]", variable).get  # type: ignore[redundant-cast]
    return context.get_current  # type: ignore[no-any-return]


def _global_provider_finder(trace: Any, tracer_provider: Any) -> Callable[[], Any] | None:
    """Return a cheap look-up of the global tracer provider, ``None`` when it cannot be had.

    Until an application installs a tracer provider, the API's global one is
    a proxy whose spans never record; asking the API for the provider costs
    more than the no-op span itself (it reads the environment every time).
    So while none is installed this reads the API module's own global, which
    ``set_tracer_provider`` sets once (checked on opentelemetry-api 1.20 to
    1.45). Where that global is missing, or a provider was passed, or the
    environment names a provider class to load, the proxy is used as is.
    """
    import os  # noqa: PLC0415

    if tracer_provider is not None or not hasattr(trace, "_TRACER_PROVIDER"):
        return None
    if os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"):
        return None

    return functools.partial(getattr, trace, "_TRACER_PROVIDER", None)
