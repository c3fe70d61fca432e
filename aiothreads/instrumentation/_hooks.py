"""The one interface the core calls: probes for calls and streams, or ``None`` when off.

The core asks ``current`` once per call or stream. With no backend active
it gets ``None`` and does nothing else, so instrumentation that is off costs a
function call and a comparison. With backends active it gets a
``Telemetry``, whose probes fan each event out to the metrics, tracing and
log backends that are on. Probes are observers: they never change what the
core does, and an error inside a backend is swallowed so that telemetry can
never break a call.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar

from .._log import logger
from .._outcomes import CANCELLED, ERROR, OK
from ._config import resolve_from_environment
from ._logs import StdlibEvents
from ._probes import CallProbe, StreamProbe, Telemetry

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CANCELLED",
    "ERROR",
    "OK",
    "CallProbe",
    "StreamProbe",
    "Telemetry",
    "current",
    "exclusive",
    "install",
    "reset",
]

P = ParamSpec("P")
R = TypeVar("R")


class _Unresolved:
    """Marker: the backends have not been looked up yet."""


_UNRESOLVED: Final = _Unresolved()
_active: Telemetry | _Unresolved | None = _UNRESOLVED
_debug_logs_allowed = True
# Held while backends are chosen, built and installed. Reentrant: application
# code run meanwhile (a registry, a warning filter) may make a threaded call.
_resolve_lock = threading.RLock()


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
    with _resolve_lock:
        if isinstance(_active, _Unresolved):
            install(resolve_from_environment())  # never raises: resolved once


def exclusive(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` holding the lock the first call's resolution holds.

    For ``configure()`` and ``reset()``: a configuration never interleaves
    with another, nor with the environment's, which would otherwise overwrite
    it or register the same metrics twice.
    """

    @functools.wraps(function)
    def holding_the_lock(*args: P.args, **kwargs: P.kwargs) -> R:
        with _resolve_lock:
            return function(*args, **kwargs)

    return holding_the_lock


def install(telemetry: Telemetry | None, *, debug_logs: bool = True) -> None:
    """Make ``telemetry`` (or nothing, for ``None``) what ``current`` returns.

    ``debug_logs=False`` also silences the stdlib log events that otherwise
    flow without backends while the ``aiothreads`` logger is at DEBUG.
    """
    global _active, _debug_logs_allowed  # noqa: PLW0603 - the single switch the core reads
    _active = telemetry
    _debug_logs_allowed = debug_logs


def reset() -> None:
    """Forget the resolved backends; the next ``current`` looks them up again.

    Looking them up installs what it finds, which allows debug log events again.
    """
    global _active  # noqa: PLW0603
    _active = _UNRESOLVED


_LOGS_ONLY: Final = Telemetry(events=StdlibEvents())
