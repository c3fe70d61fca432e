"""The demo's traces, configured the standard way: OpenTelemetry's environment variables.

With ``OTEL_TRACES_EXPORTER`` unset (or ``none``) nothing is set up and the
demo runs as before. Otherwise it needs ``opentelemetry-sdk`` and installs a
global tracer provider, which aiothreads' instrumentation then uses:

* ``OTEL_TRACES_EXPORTER``: a comma-separated list of ``otlp`` (OTLP over
  HTTP/protobuf, from ``opentelemetry-exporter-otlp-proto-http``), ``console``
  and ``none``;
* ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_HEADERS`` and the other exporter variables, read by the
  exporter itself;
* ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` for the resource
  (the service name is ``aiothreads-demo`` unless they name one);
* ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``, read by the SDK;
* ``OTEL_BSP_*`` for the batch span processor. Unless they say otherwise, its
  queue holds 65,536 spans and it exports every second, so a busy demo drops
  none; stopping the demo (Ctrl-C, SIGTERM, ``--duration``) exports the rest.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SERVICE_NAME", "set_up_tracing"]

SERVICE_NAME: Final = "aiothreads-demo"
_QUEUE: Final = 65_536
_BATCH: Final = 4_096
_DELAY_MS: Final = 1_000


def set_up_tracing() -> Callable[[], None] | None:
    """Install the tracer provider the environment asks for; return what flushes and stops it.

    Returns ``None`` when the environment asks for no traces.

    Raises:
        SystemExit: an exporter is named that is unknown or not installed.
    """
    names = [
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    ]
    names = [name for name in names if name != "none"]
    if not names:
        return None
    try:
        from opentelemetry import trace  # noqa: PLC0415 - only with traces asked for
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError as missing:
        raise SystemExit(
            "OTEL_TRACES_EXPORTER asks for traces: pip install opentelemetry-sdk"
        ) from missing
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    queue, batch, delay = _batch_options()
    for name in names:
        provider.add_span_processor(
            BatchSpanProcessor(
                _exporter(name),
                max_queue_size=queue,
                max_export_batch_size=batch,
                schedule_delay_millis=delay,
            )
        )
    trace.set_tracer_provider(provider)
    return provider.shutdown


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        )
        if protocol != "http/protobuf":
            raise SystemExit(f"the demo exports OTLP over http/protobuf, not {protocol}")
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )
        except ImportError as missing:
            raise SystemExit(
                "OTEL_TRACES_EXPORTER=otlp: pip install opentelemetry-exporter-otlp-proto-http"
            ) from missing
        return OTLPSpanExporter()
    raise SystemExit(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console, none)")


def _batch_options() -> tuple[int | None, int | None, int | None]:
    """Return the batch processor's queue, batch and delay (``None``: what the environment says)."""
    sizes = ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    if any(size in os.environ for size in sizes):
        queue = batch = None
    else:
        queue, batch = _QUEUE, _BATCH
    delay = None if "OTEL_BSP_SCHEDULE_DELAY" in os.environ else _DELAY_MS
    return queue, batch, delay
