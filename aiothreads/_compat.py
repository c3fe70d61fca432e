"""The 1.x helper functions, with their 1.x signatures, on top of the current core."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._executor import ThreadCall
from ._executor import run_in_executor as _run_in_executor
from ._executor import run_in_new_thread as _run_in_new_thread
from ._loops import running_loop_or_none
from ._names import qualified_name
from .types import EVENT_LOOP

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from concurrent.futures import Executor

__all__ = ["run_in_executor", "run_in_new_thread"]

T = TypeVar("T")

_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


def _in_context(
    loop: asyncio.AbstractEventLoop,
    func: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Callable[[], T]:
    context = contextvars.copy_context()
    context.run(EVENT_LOOP.set, loop)
    return cast("Callable[[], T]", functools.partial(context.run, func, *args, **kwargs))


def run_in_executor(
    func: Callable[..., T],
    executor: Executor | None = None,
    args: Any = (),
    kwargs: Mapping[str, Any] = _NO_KWARGS,
) -> Awaitable[T]:
    """Run ``func(*args, **kwargs)`` on ``executor`` (the loop's default if ``None``).

    The aiothreads 1.x helper behind ``@threaded``. The call sees the caller's
    context variables and ``EVENT_LOOP``. Outside a running loop it returns a
    coroutine that starts the call when awaited, as in 1.x.
    """
    loop = running_loop_or_none()
    if loop is None:
        return _run_when_awaited(func, executor, tuple(args), kwargs)
    return _run_in_executor(
        executor, ThreadCall(loop, _in_context(loop, func, tuple(args), kwargs))
    )


async def _run_when_awaited(
    func: Callable[..., T],
    executor: Executor | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> T:
    loop = asyncio.get_running_loop()
    return await _run_in_executor(executor, ThreadCall(loop, _in_context(loop, func, args, kwargs)))


def run_in_new_thread(
    func: Callable[..., T],
    args: Any = (),
    kwargs: Mapping[str, Any] = _NO_KWARGS,
    detach: bool = True,
    no_return: bool = False,
) -> asyncio.Future[T]:
    """Run ``func(*args, **kwargs)`` on a new thread; the 1.x helper behind ``@threaded_separate``.

    Args:
        func: What to run.
        args: Its positional arguments.
        kwargs: Its keyword arguments.
        detach: Make the thread a daemon.
        no_return: Nobody will look at the outcome: do not log an exception
            that nobody retrieves.
    """
    loop = asyncio.get_running_loop()
    future = _run_in_new_thread(
        ThreadCall(loop, _in_context(loop, func, tuple(args), kwargs)),
        name=f"aiothreads-{qualified_name(func)}",
        detach=detach,
    )
    if no_return:
        future.add_done_callback(_retrieve)
    return future


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
