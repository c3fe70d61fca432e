"""Optional OpenTelemetry spans, Prometheus metrics and structlog events.

Instrumentation turns itself on for every backend whose library is installed
(``pip install 'aiothreads[all]'``) the first time aiothreads runs a call;
with none installed it is a no-op and imports none of them. Use
``configure`` or the ``AIOTHREADS_INSTRUMENTATION`` environment variable
(``off``, ``auto``, or a list such as ``prometheus,structlog``) to choose.

The core reports to one narrow interface (``._hooks``); each backend lives
in its own module and imports its library only when it is switched on.
"""

from __future__ import annotations

from typing import Any

from .._watchdog import WATCHDOG
from . import _hooks
from ._config import (
    BACKENDS,
    ENVIRONMENT_VARIABLE,
    SLOW_CALL_VARIABLE,
    build,
    selection_from_environment,
    threshold_from_environment,
)
from ._logs import StructlogEvents
from ._prometheus import METRICS
from ._snapshot_signal import install_snapshot_signal

__all__ = [
    "BACKENDS",
    "ENVIRONMENT_VARIABLE",
    "METRICS",
    "SLOW_CALL_VARIABLE",
    "configure",
    "enabled_backends",
    "install_snapshot_signal",
    "reset",
]


@_hooks.exclusive
def reset() -> None:
    """Forget the configuration: the next call chooses again from the environment.

    Also stops the slow-call watchdog until then.
    """
    WATCHDOG.configure(None)
    _hooks.reset()


@_hooks.exclusive
def configure(
    *,
    enabled: bool = True,
    opentelemetry: bool | None = None,
    prometheus: bool | None = None,
    structlog: bool | None = None,
    opentelemetry_metrics: bool | None = None,
    tracer_provider: Any = None,
    registry: Any = None,
    logger: Any = None,
    meter_provider: Any = None,
    slow_call_threshold: float | None = None,
) -> None:
    """Choose the instrumentation backends (and the slow-call watchdog) for the whole process.

    Each backend flag is ``True`` (on), ``False`` (off) or ``None``: on if its
    object (``tracer_provider``, ``registry``, ``logger``) is passed, else
    what ``AIOTHREADS_INSTRUMENTATION`` says, else on when its library is
    installed (structlog: when the application has configured structlog;
    OpenTelemetry metrics: when the application has installed a global meter
    provider). Arguments given here win over the environment variable.

    Args:
        enabled: ``False`` switches every backend off.
        opentelemetry: Emit spans.
        prometheus: Record metrics.
        structlog: Emit structlog events instead of stdlib log records.
        opentelemetry_metrics: Record metrics through OpenTelemetry's metrics
            API too (or instead, with ``prometheus=False``).
        tracer_provider: The OpenTelemetry tracer provider; the global one if
            ``None``. Passing one switches spans on unless ``opentelemetry=False``.
        registry: The prometheus-client registry; the default one if ``None``.
            Passing one switches metrics on unless ``prometheus=False``.
        logger: The structlog logger to use. Passing one switches structlog
            events on unless ``structlog=False``.
        meter_provider: The OpenTelemetry meter provider; the global one if
            ``None``. Passing one switches OpenTelemetry metrics on unless
            ``opentelemetry_metrics=False``.
        slow_call_threshold: Seconds after which a running call (or a
            generator that has not handed over an item) is reported slow,
            once: a warning event with its thread's stack, a span event and
            ``aiothreads_calls_slow_total``. ``None``: what
            ``AIOTHREADS_SLOW_CALL_THRESHOLD`` says, else off.

    Raises:
        ImportError: a backend was switched on but its library is missing.
        Exception: building a backend that was asked for explicitly failed
            (for example, its metric names are taken in ``registry``).
            Backends chosen by the environment or auto-detection are left
            out with a ``RuntimeWarning`` instead, as are unknown names in
            ``AIOTHREADS_INSTRUMENTATION``.
        TypeError: ``slow_call_threshold`` is not a number.
        ValueError: ``slow_call_threshold`` is not positive and finite.
    """
    if not enabled:
        _hooks.install(None, debug_logs=False)
        WATCHDOG.configure(None)
        return
    if slow_call_threshold is None:
        slow_call_threshold = threshold_from_environment()
    WATCHDOG.configure(slow_call_threshold)
    asked = {  # per backend: its flag, and the object passed for it
        "opentelemetry": (opentelemetry, tracer_provider),
        "prometheus": (prometheus, registry),
        "structlog": (structlog, logger),
        "opentelemetry_metrics": (opentelemetry_metrics, meter_provider),
    }
    environment = selection_from_environment()
    chosen: dict[str, bool | None] = {}
    given: dict[str, Any] = {}
    for backend, (flag, passed) in asked.items():
        given[backend] = passed
        if flag is not None:
            chosen[backend] = flag
        else:
            chosen[backend] = True if passed is not None else environment[backend]
    explicit = any(flag is not None or passed is not None for flag, passed in asked.values())
    _hooks.install(build(chosen, given, tolerant=not explicit))


def enabled_backends() -> list[str]:
    """Name the backends that are on now (resolving them if not done yet).

    A global tracer provider installed since is looked up here: one that
    raises is left out, with its one warning, and not named.
    """
    telemetry = _hooks.current()
    if telemetry is None:
        return []
    names: list[str] = []
    if telemetry.tracing is not None and not telemetry.tracing.left_out():
        names.append("opentelemetry")
    metrics = telemetry.metrics
    if metrics is not None:
        exporters = getattr(metrics, "exporters", {"prometheus"})
        names.extend(name for name in ("opentelemetry_metrics", "prometheus") if name in exporters)
    if isinstance(telemetry.events, StructlogEvents):
        names.append("structlog")
    return names
