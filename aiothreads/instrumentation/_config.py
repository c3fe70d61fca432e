"""Choosing backends: the environment, what is installed, and ``configure()``.

``AIOTHREADS_INSTRUMENTATION`` selects backends for the whole process:

* unset, empty or ``auto``: every backend whose library is installed
  (structlog only once the application has configured structlog);
* ``off`` (or ``none``, ``0``, ``false``): none;
* a comma-separated list such as ``prometheus,opentelemetry``: only those.

Without any backend the core runs with no probes at all. Log events then go to
the stdlib ``aiothreads`` logger, which is silent unless logging is configured.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import TYPE_CHECKING, Any, Final

from .._watchdog import WATCHDOG, check_threshold
from ._logs import StdlibEvents, StructlogEvents, structlog_is_configured
from ._probes import Telemetry
from ._tallies import Tallies

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "BACKENDS",
    "ENVIRONMENT_VARIABLE",
    "SLOW_CALL_VARIABLE",
    "build",
    "resolve_from_environment",
    "threshold_from_environment",
]

ENVIRONMENT_VARIABLE: Final = "AIOTHREADS_INSTRUMENTATION"
SLOW_CALL_VARIABLE: Final = "AIOTHREADS_SLOW_CALL_THRESHOLD"
"""Seconds after which the watchdog reports a call slow; unset or empty: off."""
BACKENDS: Final = ("opentelemetry", "opentelemetry_metrics", "prometheus", "structlog")
_MODULES: Final = {
    "opentelemetry": "opentelemetry.trace",
    "opentelemetry_metrics": "opentelemetry.metrics",
    "prometheus": "prometheus_client",
    "structlog": "structlog",
}
_OFF: Final = frozenset({"off", "none", "0", "false", "no"})

_Remembered = dict[tuple[int, ...], tuple[tuple[Any, ...], Any]]
"""Objects made once for their owners: (ids of the owners) -> (the owners, the object)."""

_metrics_by_registry: _Remembered = {}
_otel_metrics_by_key: _Remembered = {}
_tallies_by_meter_provider: _Remembered = {}
"""The counts reported through a meter provider while Prometheus is off."""


def _made_for(store: _Remembered, owners: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """Return the object made for ``owners`` (by identity), making it with ``make()`` once.

    Metric names and instruments can be registered only once per registry or
    meter, so configuring again must find what the first time made.
    """
    key = tuple(id(owner) for owner in owners)
    found = store.get(key)
    if found is None or any(a is not b for a, b in zip(found[0], owners, strict=True)):
        found = store[key] = (owners, make())
    return found[1]


def installed(backend: str) -> bool:
    """Whether the library behind ``backend`` can be imported (without importing it)."""
    module = _MODULES[backend]
    try:
        return importlib.util.find_spec(module.partition(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def selection_from_environment() -> dict[str, bool | None]:
    """Read ``AIOTHREADS_INSTRUMENTATION``: per backend, on, off or ``None`` (auto).

    Unknown backend names are left out with one ``RuntimeWarning`` that names
    the valid values: a typo in the environment never breaks a call.
    """
    raw = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if raw in ("", "auto", "all", "on"):
        return dict.fromkeys(BACKENDS)
    if raw in _OFF:
        return dict.fromkeys(BACKENDS, False)
    chosen = {name.strip() for name in raw.split(",") if name.strip()}
    unknown = chosen - set(BACKENDS)
    if unknown:
        warnings.warn(
            f"{ENVIRONMENT_VARIABLE} names unknown backends {sorted(unknown)}, which are "
            f"left out; use 'off', 'auto' or a comma-separated list of {', '.join(BACKENDS)}",
            RuntimeWarning,
            stacklevel=2,
        )
    return {name: name in chosen for name in BACKENDS}


def threshold_from_environment() -> float | None:
    """Read ``AIOTHREADS_SLOW_CALL_THRESHOLD``: seconds, or ``None`` (off).

    A value that is not positive seconds gives one ``RuntimeWarning`` and
    leaves the watchdog off: a typo in the environment never breaks a call.
    """
    raw = os.environ.get(SLOW_CALL_VARIABLE, "").strip()
    if raw.lower() in ("", *_OFF):
        return None
    try:
        return check_threshold(float(raw))
    except ValueError:
        warnings.warn(
            f"{SLOW_CALL_VARIABLE}={raw!r} is not positive seconds: the slow-call watchdog "
            "stays off",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def resolve_from_environment() -> Telemetry | None:
    """Build the telemetry the environment asks for, and start the watchdog; never raises.

    A backend that cannot be built (a broken install, a tracer provider that
    raises, a metric name already taken) is left out with one warning.
    """
    try:
        WATCHDOG.configure(threshold_from_environment())
    except Exception as exc:  # telemetry must never break a call
        _left_out("the slow-call watchdog", exc)
    try:
        return build(selection_from_environment(), {}, tolerant=True)
    except Exception as exc:  # telemetry must never break a call
        _left_out("every backend", exc)
        return None


def build(
    chosen: Mapping[str, bool | None], given: Mapping[str, Any], *, tolerant: bool = False
) -> Telemetry | None:
    """Build telemetry from the backends ``chosen`` (on, off, or ``None``: auto-detect).

    ``given`` holds, per backend name, the object the application passed for
    it (tracer provider, registry, logger, meter provider). With
    ``tolerant``, a backend that fails to build is left out with one
    ``RuntimeWarning`` naming the fix, and the others stay on. Without it (an
    explicit ``configure()``), the failure propagates.

    Raises:
        ImportError: a backend was switched on but its library is missing.
        Exception: whatever building a backend raised, unless ``tolerant``.
    """
    opentelemetry_metrics = chosen.get("opentelemetry_metrics")
    tracer_provider, meter_provider = given.get("opentelemetry"), given.get("opentelemetry_metrics")
    registry, logger = given.get("prometheus"), given.get("structlog")
    tracing = None
    if _wanted(chosen.get("opentelemetry"), "opentelemetry", tracer_provider is not None, tolerant):
        tracing = _built(tolerant, "opentelemetry", _tracing_for, tracer_provider)
    metrics = None
    if _wanted(chosen.get("prometheus"), "prometheus", registry is not None, tolerant):
        metrics = _built(tolerant, "prometheus", _metrics_for, registry)
    _detach_every_reporter()  # an earlier configuration's, if any; attached again if wanted
    if opentelemetry_metrics is None:
        opentelemetry_metrics = meter_provider is not None or _meter_provider_installed()
    if _wanted(opentelemetry_metrics, "opentelemetry_metrics", True, tolerant):
        reported = _built(
            tolerant, "opentelemetry_metrics", _otel_metrics_for, (metrics, meter_provider)
        )
        if reported is not None:
            metrics = reported
    use_structlog = chosen.get("structlog")
    if use_structlog is None:
        use_structlog = logger is not None or (installed("structlog") and structlog_is_configured())
    if tracing is None and metrics is None and not use_structlog:
        return None
    events = StructlogEvents(logger) if use_structlog else StdlibEvents()
    return Telemetry(metrics=metrics, tracing=tracing, events=events)


def _meter_provider_installed() -> bool:
    """Whether OpenTelemetry metrics are wanted by default: an SDK meter provider is global."""
    if not installed("opentelemetry_metrics"):
        return False
    try:
        from ._otel_metrics import global_meter_provider_installed  # noqa: PLC0415

        return global_meter_provider_installed()
    except Exception:  # a broken install: the tracing backend reports it
        return False


def _wanted(choice: bool | None, backend: str, given: bool, tolerant: bool = False) -> bool:
    if choice is None:
        return given or installed(backend)
    if choice and not installed(backend):
        error = ImportError(
            f"the {backend} backend needs its library: pip install 'aiothreads[{backend}]'"
        )
        if not tolerant:
            raise error
        _left_out(backend, error)
        return False
    return choice


def _built(tolerant: bool, backend: str, make: Callable[[Any], Any], argument: Any) -> Any:
    """``make(argument)``, or ``None`` with one warning if it fails and ``tolerant``."""
    try:
        return make(argument)
    except Exception as exc:
        if not tolerant:
            raise
        _left_out(backend, exc)
        return None


_FIXES: Final = {
    "opentelemetry": "check the opentelemetry-api install and the tracer provider",
    "opentelemetry_metrics": (
        "check the opentelemetry-api install and the meter provider; in prometheus-client's "
        "multiprocess mode only Prometheus metrics are available"
    ),
    "prometheus": (
        "an aiothreads_* metric is probably registered already: pass "
        "configure(registry=...) or unregister it"
    ),
    "every backend": f"set {ENVIRONMENT_VARIABLE}=off to silence this",
    "the slow-call watchdog": f"set {SLOW_CALL_VARIABLE} to positive seconds, or unset it",
}


def _left_out(backend: str, error: BaseException) -> None:
    fix = _FIXES.get(backend, f"pip install 'aiothreads[{backend}]'")
    warnings.warn(
        f"aiothreads instrumentation: {backend} is left out, threaded calls run without it "
        f"({type(error).__name__}: {error}); {fix}",
        RuntimeWarning,
        stacklevel=3,
    )


def _tracing_for(tracer_provider: Any) -> Any:
    from ._otel import OpenTelemetryTracing  # noqa: PLC0415 - imports opentelemetry

    return OpenTelemetryTracing(tracer_provider)


def _metrics_for(registry: Any) -> Any:
    """One metrics object per registry: metric names can be registered only once."""
    from ._prometheus import PrometheusMetrics  # noqa: PLC0415 - imports prometheus_client
    from ._prometheus_multiprocess import (  # noqa: PLC0415
        MultiprocessMetrics,
        multiprocess_mode,
    )

    if registry is None:
        import prometheus_client  # noqa: PLC0415

        registry = prometheus_client.REGISTRY
    make = MultiprocessMetrics if multiprocess_mode() else PrometheusMetrics
    return _made_for(_metrics_by_registry, (registry,), lambda: make(registry))


def _detach_every_reporter() -> None:
    """Stop reporting through OpenTelemetry any counts an earlier configuration set up."""
    for _, metrics in _metrics_by_registry.values():
        if isinstance(metrics, Tallies):
            metrics.detach()
    for _, tallies in _tallies_by_meter_provider.values():
        tallies.detach()


def _otel_metrics_for(arguments: tuple[Any, Any]) -> Any:
    """Report the tallies of ``metrics`` (the provider's own if ``None``) through a meter provider.

    One reporter per (tallies, provider): its instruments can be created only once.
    """
    from ._otel_metrics import OpenTelemetryMetrics  # noqa: PLC0415 - imports opentelemetry

    metrics, meter_provider = arguments
    if metrics is None:
        metrics = _made_for(_tallies_by_meter_provider, (meter_provider,), Tallies)
    if not isinstance(metrics, Tallies):
        raise RuntimeError("prometheus-client's multiprocess mode is on")
    reporter = _made_for(
        _otel_metrics_by_key,
        (metrics, meter_provider),
        lambda: OpenTelemetryMetrics(metrics, meter_provider),
    )
    reporter.attach()  # every configuration detached all reporters first
    return metrics
