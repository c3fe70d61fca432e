"""The ``aiothreads`` stdlib logger: silent unless the application configures logging."""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

__all__ = ["LEVELS", "describe_error", "emit", "error_type", "logger"]

logger: Final = logging.getLogger("aiothreads")
logger.addHandler(logging.NullHandler())

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def emit(level: str, event: str, fields: dict[str, Any]) -> None:
    """Log ``event`` with ``fields`` as ``key=value`` pairs, if the level is enabled.

    The fields are also attached to the record as ``record.aiothreads``.
    """
    number = LEVELS[level]
    if not logger.isEnabledFor(number):
        return
    fields.setdefault("thread", threading.current_thread().name)
    error = fields.pop("error", None)
    if error is not None:
        fields["error"] = f"{type(error).__name__}: {describe_error(error)}"
    pairs = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(number, "%s %s", event, pairs, extra={"aiothreads": fields})


def describe_error(error: BaseException) -> str:
    """Return the error's message, or a placeholder if printing it raises."""
    try:
        return str(error)
    except Exception:
        return f"<unprintable {type(error).__name__}>"


def error_type(error: BaseException) -> str:
    """Return the error's class name, qualified by its module unless it is a builtin."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
