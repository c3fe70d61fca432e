"""Start the task behind ``sync_await``: the user's own coroutine, named after where it came from.

``sync_await`` hands a coroutine to the loop and blocks a thread until it
ends. The task that runs it holds the user's coroutine itself (no wrapper of
aiothreads'), so ``repr(task)``, ``task.get_coro()``, ``asyncio.all_tasks()``
and Python 3.14's ``python -m asyncio ps`` / ``pstree`` show the user's code.

* Python 3.12 and later: the task starts eagerly
  (``asyncio.Task(..., eager_start=True)``): a coroutine that finishes without
  suspending is done in the loop turn that received it.
* Python 3.10 and 3.11 have no eager tasks: the task starts one loop turn
  later, as ``loop.create_task()`` does, and runs in its own copy of the
  context from its first step on, as every task does.

A task factory the application set on the loop is always honoured, and the
task then starts the usual way.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ["start_task"]

T = TypeVar("T")

_EAGER_TASKS: Final = sys.version_info >= (3, 12)


def start_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], name: str
) -> asyncio.Task[T]:
    """Create a task named ``name`` for ``coro`` on ``loop`` (from its own thread).

    On Python 3.12 and later (without a task factory) its first step runs now:
    a coroutine that never suspends has run to its end when this returns.
    """
    if _EAGER_TASKS and loop.get_task_factory() is None:
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return loop.create_task(coro, name=name)
