"""Every use of an asyncio internal, in one place, with the versions it was checked on.

aiothreads reads a few private attributes of asyncio's loops and futures to
save work on every call. Each one is read here only, and each has a fallback
that keeps the library correct (if slower) should a Python release change it.
Checked on CPython 3.10 to 3.15, and uvloop 0.23 (which keeps its
default executor private).

=============================== ================================================
internal                        fallback when missing
=============================== ================================================
``asyncio._get_running_loop``   ``asyncio.get_running_loop`` with the exception
``loop._default_executor``      found among the loop's ``gc.get_referents()``
                                (uvloop's loop, written in Cython, hides it
                                but reports it to the garbage collector),
                                leaving out the loop's own attributes; where
                                neither shows it, or two executors could be
                                it, the loop counts as one that keeps it
                                private (calls go through
                                ``loop.run_in_executor``)
``loop._executor_shutdown_called`` uvloop's ``loop._check_default_executor()``,
                                which raises once it was called; else treated
                                as not shut down (submitting then fails inside
                                the executor, which is reported)
``loop._asyncgens_shutdown_called`` treated as running (the wake-up descriptor
                                is used until the shutdown hook retires it)
``Future._callbacks``           callbacks are left to asyncio, which schedules
                                them one loop turn later
``Future._asyncio_awaited_by``  (Python 3.14 and later) the tasks awaiting a
                                future are found among its callbacks, as on
                                earlier Pythons
``Task.task_wakeup.__self__``   the task a callback belongs to; a callback
                                without it is not counted as a waiting task
=============================== ================================================

``asyncio.future_add_to_awaited_by`` and ``future_discard_from_awaited_by``
are public from Python 3.14 on; before, the call graph they feed does not
exist and linking is skipped.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final, TypeGuard

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "asyncgens_shut_down",
    "awaiting_tasks",
    "default_executor_of",
    "executor_shut_down",
    "future_callbacks",
    "is_task",
    "link_awaiters",
    "remember_default_executor",
    "running_loop_or_none",
    "unlink_awaiters",
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
    remembered: weakref.ref[Executor] | None = getattr(loop, _REMEMBERED, None)
    known = remembered() if remembered is not None else None
    if known is not None and known in referents:
        return True, known
    # Attributes of the loop's own (an application's ``loop.pool = ...``) are
    # no default executor, though Python 3.14+ reports them as referents too.
    attributes = getattr(loop, "__dict__", {}).values()
    found = [
        referent
        for referent in referents
        if isinstance(referent, Executor) and not any(referent is value for value in attributes)
    ]
    if not found:
        return True, None
    if len(found) > 1:  # which one is the default cannot be told: the loop picks it
        return False, None
    return remember_default_executor(loop, found[0]), found[0]


def remember_default_executor(loop: asyncio.AbstractEventLoop, executor: Executor) -> bool:
    """Note ``executor``, just installed or found, as ``loop``'s default executor.

    Returns ``False`` (and gives up on such loops) if it cannot be seen among
    the loop's referents, where ``default_executor_of`` looks for it. Only a
    weak reference is kept on the loop: a strong one would itself be one of
    the loop's referents (Python 3.14+ reports an object's attribute values
    as its referents), and an executor the application replaced would then
    still look installed.
    """
    if type(loop) not in _WITHOUT_ATTRIBUTE:
        return True
    try:
        setattr(loop, _REMEMBERED, weakref.ref(executor))
    except AttributeError:  # a loop without a __dict__
        _OPAQUE.add(type(loop))
        return False
    except TypeError:  # an executor without weak references: looked for each time
        pass
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


def awaiting_tasks(future: asyncio.Future[Any]) -> tuple[asyncio.Task[Any], ...]:
    """Return the tasks that await ``future`` right now (on its loop's thread)."""
    awaited_by: Any = getattr(future, "_asyncio_awaited_by", None)
    owners: list[Any] = (
        list(awaited_by)
        if awaited_by
        else [getattr(callback, "__self__", None) for callback, _ in future_callbacks(future)]
    )
    return tuple(owner for owner in owners if is_task(owner))


def is_task(value: object) -> TypeGuard[asyncio.Task[Any]]:
    """Whether ``value`` is an ``asyncio.Task`` (of any result type)."""
    return isinstance(value, asyncio.Task)


_add_to_awaited_by: Final[Callable[[asyncio.Future[Any], asyncio.Future[Any]], None] | None] = (
    getattr(asyncio, "future_add_to_awaited_by", None)
)
_discard_from_awaited_by: Final[
    Callable[[asyncio.Future[Any], asyncio.Future[Any]], None] | None
] = getattr(asyncio, "future_discard_from_awaited_by", None)


def link_awaiters(
    task: asyncio.Task[Any], call: asyncio.Future[Any]
) -> tuple[asyncio.Future[Any], ...]:
    """Record the tasks awaiting ``call`` as awaiting ``task`` too; return them.

    ``task`` was started by the thread that runs ``call``: asyncio's call graph
    (Python 3.14 and later) then shows it under the tasks that wait for that
    thread. Called on ``task``'s loop; a no-op before 3.14.
    """
    if _add_to_awaited_by is None or call.get_loop() is not task.get_loop():
        return ()
    awaiters = awaiting_tasks(call)
    for awaiter in awaiters:
        _add_to_awaited_by(task, awaiter)
    return awaiters


def unlink_awaiters(task: asyncio.Task[Any], awaiters: tuple[asyncio.Future[Any], ...]) -> None:
    """Undo ``link_awaiters``."""
    if _discard_from_awaited_by is not None:
        for awaiter in awaiters:
            _discard_from_awaited_by(task, awaiter)
