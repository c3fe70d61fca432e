"""Every use of an asyncio internal, in one place, with the versions it was checked on.

aiothreads reads a few private attributes of asyncio's loops and futures to
save work on every call. Each one is read here only, and each has a fallback
that keeps the library correct (if slower) should a Python release change it.
Checked on CPython 3.10, 3.11, 3.12 and 3.13, and uvloop 0.23 (which keeps its
default executor private).

=============================== ================================================
internal                        fallback when missing
=============================== ================================================
``asyncio._get_running_loop``   ``asyncio.get_running_loop`` with the exception
``loop._default_executor``      the loop counts as one that keeps it private
                                (calls go through ``loop.run_in_executor``)
``loop._executor_shutdown_called`` treated as not shut down (submitting then
                                fails inside the executor, which is reported)
``loop._asyncgens_shutdown_called`` treated as running (the wake-up descriptor
                                is used until the shutdown hook retires it)
``Future._callbacks``           callbacks are left to asyncio, which schedules
                                them one loop turn later
=============================== ================================================
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

__all__ = [
    "asyncgens_shut_down",
    "default_executor_of",
    "executor_shut_down",
    "future_callbacks",
    "running_loop_or_none",
]


def _running_loop_or_none_fallback() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# Exported by asyncio for loop implementations; unlike get_running_loop() it
# does not raise in threads without a loop, which costs more per call.
running_loop_or_none: Final[Callable[[], asyncio.AbstractEventLoop | None]] = getattr(
    asyncio, "_get_running_loop", _running_loop_or_none_fallback
)
"""Return the event loop running in this thread, or ``None``."""


def default_executor_of(loop: asyncio.AbstractEventLoop) -> tuple[bool, Executor | None]:
    """Return whether the loop exposes its default executor, and that executor (or ``None``)."""
    executor: Any = getattr(loop, "_default_executor", _PRIVATE)
    if executor is _PRIVATE:
        return False, None
    return True, executor


_PRIVATE: Final = object()


def executor_shut_down(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.shutdown_default_executor()`` was called."""
    return bool(getattr(loop, "_executor_shutdown_called", False))


def asyncgens_shut_down(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.shutdown_asyncgens()`` was called."""
    return bool(getattr(loop, "_asyncgens_shutdown_called", False))


def future_callbacks(future: asyncio.Future[Any]) -> list[tuple[Callable[[Any], object], Any]]:
    """Return the (callback, context) pairs waiting on ``future``; empty if unknown.

    Both the C and the pure-Python future keep them in ``_callbacks``; the C
    one may hand out its own list, so callers copy it before changing it.
    """
    callbacks: Any = getattr(future, "_callbacks", None)
    return callbacks or []
