"""``@threaded_separate``: run each call on a new, dedicated thread.

Semantics are those of ``@threaded`` (see ``aiothreads._threaded``), except
that every call starts its own thread instead of borrowing a pool worker, so a
call that blocks for a long time or forever never starves the pool. With
``detach=True`` (the default) the thread is a daemon and never blocks
interpreter exit; with ``detach=False`` the interpreter waits for it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, overload

from ._decorating import decorate
from ._executor import run_in_new_thread
from ._threaded import Threaded
from ._validate import check_flag
from .types import P, R, T

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ._executor import ThreadCall
    from ._limits import CapacityLimiter

__all__ = ["ThreadedSeparate", "threaded_separate"]


class _NewThreadDispatch:
    """Starts every call on a fresh thread, named after the function."""

    __slots__ = ("detach", "thread_name")
    kind: ClassVar[str] = "separate"

    def __init__(self, detach: bool, function_name: str) -> None:
        self.detach = detach
        self.thread_name = f"aiothreads-{function_name}"

    def __call__(self, call: ThreadCall[R], /) -> asyncio.Future[R]:
        return run_in_new_thread(call, name=self.thread_name, detach=self.detach)


class ThreadedSeparate(Threaded[P, T]):
    """A function decorated with ``@threaded_separate``.

    Args:
        func: The blocking function.
        detach: Run it on daemon threads that never block interpreter exit.
        limit: At most this many calls (so threads) at once; see ``threaded``.
        name: The name in metrics, spans, reprs and thread names.
        instrument: ``False`` keeps the calls out of metrics, spans and events.
    """

    def __init__(
        self,
        func: Callable[P, T],
        detach: bool = True,
        *,
        limit: int | CapacityLimiter | None = None,
        name: str | None = None,
        instrument: bool = True,
    ) -> None:
        super().__init__(func, limit=limit, name=name, instrument=instrument)
        if inspect.isgeneratorfunction(self.func):
            raise TypeError(
                f"@threaded_separate cannot run the generator function {self._name}; "
                "use @threaded_iterable_separate"
            )
        self._new_thread = _NewThreadDispatch(detach, self._name)
        self._dispatch = self._new_thread

    @property
    def detach(self) -> bool:
        """Whether calls run on daemon threads."""
        return self._new_thread.detach


@overload
def threaded_separate(
    func: Callable[P, T],
    detach: bool = True,
    *,
    limit: int | CapacityLimiter | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> ThreadedSeparate[P, T]: ...
@overload
def threaded_separate(
    *,
    detach: bool = True,
    limit: int | CapacityLimiter | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Callable[[Callable[P, T]], ThreadedSeparate[P, T]]: ...
@overload
def threaded_separate(
    detach: bool,
    /,
    *,
    limit: int | CapacityLimiter | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Callable[[Callable[P, T]], ThreadedSeparate[P, T]]: ...
def threaded_separate(
    func: Any = None,
    detach: bool = True,
    *,
    limit: int | CapacityLimiter | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Any:
    """Run each call of the decorated blocking function on a new thread.

    Use it for calls that may block for long or forever (pipes, sockets,
    monitoring loops), so they never hold a pool worker. Usable bare or as
    ``@threaded_separate(detach=False)`` (or ``@threaded_separate(False)``, as
    in 1.x); put it above ``@staticmethod`` or ``@classmethod``.

    ```python
    import asyncio
    import threading

    from aiothreads import threaded_separate


    @threaded_separate
    def where() -> str:
        return threading.current_thread().name


    assert asyncio.run(where()).startswith("aiothreads-")
    ```

    Args:
        func: The blocking function.
        detach: Run calls on daemon threads, which never block interpreter
            exit. ``False`` makes the interpreter wait for running calls.
        limit: At most this many calls, so dedicated threads, at once (an int
            or a shared [`CapacityLimiter`][aiothreads.CapacityLimiter]).
        name: The name in metric labels, span names, reprs and thread names,
            instead of the function's qualified name.
        instrument: ``False`` keeps this function out of metrics, spans and
            log events.

    Raises:
        TypeError: ``func`` is not callable, is a coroutine or async generator
            function; ``detach`` is not a bool or ``limit`` has the wrong type.
        ValueError: ``limit`` is less than 1.
    """
    if isinstance(func, bool):  # aiothreads 1.x: @threaded_separate(False)
        func, detach = None, func
    return decorate(
        ThreadedSeparate,
        func,
        limit=limit,
        name=name,
        instrument=instrument,
        detach=check_flag("detach", detach),
    )
