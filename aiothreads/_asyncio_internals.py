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
``loop._default_executor``      found among the loop's ``gc.get_referents()``
                                (uvloop's loop, written in Cython, hides it
                                but reports it to the garbage collector);
                                where neither shows it, the loop counts as
                                one that keeps it private (calls go through
                                ``loop.run_in_executor``)
``loop._executor_shutdown_called`` uvloop's ``loop._check_default_executor()``,
                                which raises once it was called; else treated
                                as not shut down (submitting then fails inside
                                the executor, which is reported)
``loop._asyncgens_shutdown_called`` treated as running (the wake-up descriptor
                                is used until the shutdown hook retires it)
``Future._callbacks``           callbacks are left to asyncio, which schedules
                                them one loop turn later
``asyncio.tasks._enter_task``,  (Python 3.10 and 3.11 only) tasks for
``asyncio.tasks._leave_task``   ``sync_await`` start the usual way, one loop
                                turn later
=============================== ================================================
"""

from __future__ import annotations

import asyncio
import gc
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "asyncgens_shut_down",
    "default_executor_of",
    "enter_task",
    "executor_shut_down",
    "future_callbacks",
    "leave_task",
    "remember_default_executor",
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
    """Return whether the loop's default executor can be known, and that executor (or ``None``).

    ``(True, None)``: the loop has none yet. ``(False, None)``: the loop keeps
    it out of sight; only ``loop.run_in_executor(None, ...)`` can reach it.
    """
    if type(loop) not in _WITHOUT_ATTRIBUTE:
        executor: Any = getattr(loop, "_default_executor", _PRIVATE)
        if executor is not _PRIVATE:
            return True, executor
        _WITHOUT_ATTRIBUTE.add(type(loop))  # spares later calls a failing look-up
    if type(loop) in _OPAQUE:
        return False, None
    referents = gc.get_referents(loop)
    known = getattr(loop, _REMEMBERED, None)
    if known is not None and known in referents:
        return True, known
    for referent in referents:
        if isinstance(referent, Executor):
            return remember_default_executor(loop, referent), referent
    return True, None


def remember_default_executor(loop: asyncio.AbstractEventLoop, executor: Executor) -> bool:
    """Note ``executor``, just installed or found, as ``loop``'s default executor.

    Returns ``False`` (and gives up on such loops) if it cannot be seen among
    the loop's referents, where ``default_executor_of`` looks for it.
    """
    if type(loop) not in _WITHOUT_ATTRIBUTE:
        return True
    try:
        setattr(loop, _REMEMBERED, executor)
    except AttributeError:  # a loop without a __dict__
        _OPAQUE.add(type(loop))
        return False
    if executor not in gc.get_referents(loop):
        _OPAQUE.add(type(loop))
        return False
    return True


_PRIVATE: Final = object()
_REMEMBERED: Final = "_aiothreads_default_executor"
_WITHOUT_ATTRIBUTE: set[type[asyncio.AbstractEventLoop]] = set()
_OPAQUE: set[type[asyncio.AbstractEventLoop]] = set()


def executor_shut_down(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.shutdown_default_executor()`` was called."""
    called: Any = getattr(loop, "_executor_shutdown_called", None)
    if called is not None:
        return bool(called)
    check: Any = getattr(loop, "_check_default_executor", None)  # uvloop
    if check is None:
        return False
    try:
        check()
    except RuntimeError:
        return True
    return False


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


enter_task: Final[Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None] = getattr(
    asyncio.tasks, "_enter_task", None
)
"""Make a task the loop's current one, as asyncio does around each of its steps."""

leave_task: Final[Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None] = getattr(
    asyncio.tasks, "_leave_task", None
)
"""Undo ``enter_task``."""
