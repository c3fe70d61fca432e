"""Start a task whose first step runs at once, on every supported Python.

``sync_await`` hands a coroutine to the loop and blocks a thread until it
ends. Most such coroutines finish without suspending, and a task that runs its
first step where it is created spares the loop a turn (and the waiting thread
the latency of that turn).

* Python 3.12 and later: ``asyncio.Task(..., eager_start=True)``.
* Python 3.10 and 3.11 have no eager tasks. The task is created as usual, then
  its coroutine's first step runs at once with the task entered as the
  current one, so ``asyncio.current_task()``, ``asyncio.timeout()`` and
  cancellation see the task that goes on to drive the rest. The task's own
  first step, one loop turn later, picks up where that step stopped: the
  future it waits on, its end, or its exception.

A task factory the application set on the loop is always honoured, and the
task then starts the usual way.
"""

from __future__ import annotations

import asyncio
import collections.abc
import sys
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._asyncio_internals import enter_task, leave_task

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator

__all__ = ["start_task"]

T = TypeVar("T")

_EAGER_TASKS: Final = sys.version_info >= (3, 12)
_NOTHING: Final = object()


def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Create a task for ``coro`` on ``loop`` (from its own thread), running its first step now.

    A coroutine that never suspends has run to its end when this returns
    (though on Python 3.10 and 3.11 the task itself reports done one loop
    turn later).
    """
    if loop.get_task_factory() is None:
        if _EAGER_TASKS:
            return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        if enter_task is not None and leave_task is not None:
            return _start_emulated(loop, coro, enter_task, leave_task)
    return loop.create_task(coro)


def _start_emulated(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    enter: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None],
    leave: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None],
) -> asyncio.Task[T]:
    first_step_taken: _FirstStepTaken[T] = _FirstStepTaken(coro)
    task = loop.create_task(first_step_taken)
    enter(loop, task)
    try:
        first_step_taken.take_first_step()
    finally:
        leave(loop, task)
    return task


class _FirstStepTaken(collections.abc.Coroutine[Any, Any, T]):
    """A coroutine whose first step was taken before its task's first step.

    The task drives this object; its first ``send`` hands the task what the
    first step produced (the future to wait on, the end, the exception), and
    from then on everything goes straight to the coroutine.
    """

    __slots__ = ("_coro", "_error", "_result", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._yielded: Any = _NOTHING
        self._result: Any = _NOTHING
        self._error: BaseException | None = None

    def take_first_step(self) -> None:
        """Run the coroutine until it first suspends or ends (with the task current)."""
        try:
            self._yielded = self._coro.send(None)
        except StopIteration as stop:
            self._result = stop.value
        except BaseException as exc:  # replayed in the task's own step, which reports it
            self._error = exc

    def send(self, value: Any) -> Any:
        """Hand the task the first step's outcome once, then drive the coroutine."""
        if self._yielded is not _NOTHING:
            yielded, self._yielded = self._yielded, _NOTHING
            return yielded
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._result is not _NOTHING:
            result, self._result = self._result, _NOTHING
            raise StopIteration(result)
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Throw into the coroutine where its first step (or a later one) left it."""
        self._yielded = _NOTHING
        if self._result is not _NOTHING or self._error is not None:
            # It ended already: the task ends as the coroutine did, whatever arrives now.
            return self.send(None)
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # type: ignore[arg-type,unused-ignore]

    def close(self) -> None:
        """Close the coroutine."""
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("a started task's coroutine cannot be awaited again")

    def __repr__(self) -> str:
        return repr(self._coro)
