"""Log events through structlog when the application configured it, else stdlib logging."""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from .._log import describe_error, emit, logger

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["StdlibEvents", "StructlogEvents", "structlog_is_configured"]


class StdlibEvents:
    """Events on the ``aiothreads`` stdlib logger (which has a ``NullHandler``)."""

    def __init__(self) -> None:
        self.enabled: Callable[[], bool] = functools.partial(logger.isEnabledFor, logging.DEBUG)
        """Whether a call's events would be logged (they are DEBUG records); asked per call."""

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """Log ``event`` at ``level`` with ``fields``."""
        emit(level, event, fields)


class StructlogEvents:
    """Events on a structlog logger, by default ``structlog.get_logger("aiothreads")``."""

    def __init__(self, logger: Any = None) -> None:
        if logger is None:
            import structlog  # noqa: PLC0415 - the extra is optional

            logger = structlog.get_logger("aiothreads")
        self._logger = logger

    def enabled(self) -> bool:
        """Structlog filters by level itself: events always go to it."""
        return True

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """Log ``event`` at ``level`` with ``fields`` as key-value pairs."""
        fields.setdefault("thread", threading.current_thread().name)
        error = fields.pop("error", None)
        if error is not None:
            fields["error"] = f"{type(error).__name__}: {describe_error(error)}"
        getattr(self._logger, level)(event, **fields)


def structlog_is_configured() -> bool:
    """Whether structlog is installed and the application has configured it."""
    try:
        import structlog  # noqa: PLC0415 - the extra is optional
    except ImportError:
        return False
    return bool(structlog.is_configured())
