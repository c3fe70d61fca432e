"""``@threaded_separate``: run each call on a new, dedicated thread.

Semantics are those of ``@threaded`` (see :mod:`aiothreads._threaded`), except
that every call starts its own thread instead of borrowing a pool worker, so a
call that blocks for a long time or forever never starves the pool. With
``detach=True`` (the default) the thread is a daemon and never blocks
interpreter exit; with ``detach=False`` the interpreter waits for it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, overload

from ._binding import ThreadedClassMethod, ThreadedStaticMethod, unwrap_method
from ._executor import run_in_new_thread
from ._threaded import BoundThreaded, Threaded
from .types import P, T

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ._threaded import R

__all__ = ["ThreadedSeparate", "threaded_separate"]


class _NewThreadDispatch:
    """Starts every call on a fresh thread named after the function."""

    __slots__ = ("detach",)

    def __init__(self, detach: bool) -> None:
        self.detach = detach

    def __call__(
        self, loop: asyncio.AbstractEventLoop, func: Callable[[], R], name: str
    ) -> asyncio.Future[R]:
        return run_in_new_thread(loop, func, name=f"aiothreads-{name}", detach=self.detach)


class ThreadedSeparate(Threaded[P, T]):
    """A function decorated with ``@threaded_separate``.

    Args:
        func: The blocking function.
        detach: Run it on daemon threads that never block interpreter exit.
    """

    def __init__(self, func: Callable[P, T], detach: bool = True) -> None:
        super().__init__(func)
        self._dispatch = _NewThreadDispatch(detach)

    @property
    def detach(self) -> bool:
        """Whether calls run on daemon threads."""
        return self._dispatch.detach  # type: ignore[attr-defined,no-any-return]


class _SeparateDecorator:
    """The ``threaded_separate(detach=...)`` form, waiting for its function."""

    __slots__ = ("detach",)

    def __init__(self, detach: bool) -> None:
        self.detach = detach

    @overload
    def __call__(self, func: staticmethod[P, T]) -> ThreadedStaticMethod[ThreadedSeparate[P, T]]: ...
    @overload
    def __call__(
        self, func: classmethod[Any, P, T]
    ) -> ThreadedClassMethod[BoundThreaded[P, T]]: ...
    @overload
    def __call__(self, func: Callable[P, T]) -> ThreadedSeparate[P, T]: ...
    def __call__(self, func: Any) -> Any:
        return threaded_separate(func, detach=self.detach)


@overload
def threaded_separate(
    func: staticmethod[P, T], detach: bool = True
) -> ThreadedStaticMethod[ThreadedSeparate[P, T]]: ...
@overload
def threaded_separate(
    func: classmethod[Any, P, T], detach: bool = True
) -> ThreadedClassMethod[BoundThreaded[P, T]]: ...
@overload
def threaded_separate(func: Callable[P, T], detach: bool = True) -> ThreadedSeparate[P, T]: ...
@overload
def threaded_separate(*, detach: bool = True) -> _SeparateDecorator: ...
def threaded_separate(func: Any = None, detach: bool = True) -> Any:
    """Run each call of the decorated blocking function on a new thread.

    Use it for calls that may block for long or forever (pipes, sockets,
    monitoring loops), so they never hold a pool worker. Usable bare or as
    ``@threaded_separate(detach=False)``.

    Args:
        func: The blocking function (or ``staticmethod``/``classmethod``).
        detach: Run calls on daemon threads, which never block interpreter
            exit. ``False`` makes the interpreter wait for running calls.

    Raises:
        TypeError: ``func`` is not callable, is a coroutine or async generator
            function, or ``detach`` is not a bool.
    """
    if not isinstance(detach, bool):
        raise TypeError(f"detach must be a bool, got {type(detach).__name__}")
    if func is None:
        return _SeparateDecorator(detach)
    kind, function = unwrap_method(func)
    if kind == "static":
        return ThreadedStaticMethod(ThreadedSeparate(function, detach=detach))
    if kind == "class":
        dispatch = _NewThreadDispatch(detach)
        return ThreadedClassMethod(functools.partial(BoundThreaded, function, dispatch=dispatch))
    return ThreadedSeparate(function, detach=detach)
