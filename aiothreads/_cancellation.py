"""Cooperative cancellation: threaded code can notice that its caller gave up.

Threads cannot be interrupted, but a threaded function can poll. Inside a call
made by an aiothreads decorator, [`is_cancelled`][aiothreads.is_cancelled] turns true once the
awaiting task was cancelled (the call's future is cancelled), and inside a
threaded generator once its consumer went away (break, close, cancellation,
garbage collection, loop shutdown). [`check_cancelled`][aiothreads.check_cancelled] raises
``asyncio.CancelledError`` then, which cancels the call's future in turn.
``sync_await`` and friends called from such a call raise ``CancelledError``
as soon as the call is cancelled, cancelling the coroutine they wait for.
Outside any aiothreads call both report "not cancelled".

The scope belongs to the thread running the call, not to its context: a
thread-local costs a fraction of a context variable per call. Code the call
runs elsewhere (a coroutine it awaits through ``sync_await``, a thread it
starts) is outside the call.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .types import EVENT_LOOP

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._channel import FromThreadChannel

__all__ = [
    "Scope",
    "StreamScope",
    "check_cancelled",
    "current_scope",
    "is_cancelled",
    "run_as_call",
    "run_in_stream_scope",
]

T = TypeVar("T")


class Scope(Protocol):
    """What threaded code can learn of whoever waits for it."""

    @property
    def future(self) -> asyncio.Future[Any] | None:
        """The future the caller awaits, if there is one to watch."""
        ...

    def cancelled(self) -> bool:
        """Whether the caller gave up."""
        ...


def run_as_call(
    scope: Scope,
    loop: asyncio.AbstractEventLoop,
    func: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> T:
    """Call ``func(*args, **kwargs)`` as a threaded call: ``scope`` current, ``EVENT_LOOP`` set.

    Run it inside the call's own context (``EVENT_LOOP`` is set there).
    """
    EVENT_LOOP.set(loop)
    local = _current
    previous = local.scope
    local.scope = scope
    try:
        return func(*args, **kwargs)
    finally:
        local.scope = previous


class StreamScope:
    """What a threaded generator knows of its consumer: whether it went away."""

    __slots__ = ("channel",)

    def __init__(self, channel: FromThreadChannel[Any]) -> None:
        self.channel = channel

    @property
    def future(self) -> None:
        """Streams have no future to watch; waits re-check ``cancelled``."""
        return None

    def cancelled(self) -> bool:
        """Whether the consumer closed or dropped the iterator."""
        return self.channel.close_reason is not None


class _CurrentScope(threading.local):
    scope: Scope | None = None


_current = _CurrentScope()


def current_scope() -> Scope | None:
    """Return the scope of the aiothreads call running in this thread, if any."""
    return _current.scope


def run_in_stream_scope(channel: FromThreadChannel[Any], func: Callable[..., T], *args: Any) -> T:
    """Call ``func(*args)`` with ``channel``'s consumer the one ``is_cancelled`` watches."""
    local = _current
    previous = local.scope
    local.scope = StreamScope(channel)
    try:
        return func(*args)
    finally:
        local.scope = previous


def is_cancelled() -> bool:
    """Return whether the caller of the running threaded call or generator gave up.

    ``False`` outside aiothreads calls.
    """
    scope = _current.scope
    return scope is not None and scope.cancelled()


def check_cancelled() -> None:
    """Raise ``asyncio.CancelledError`` if the caller of this threaded call gave up.

    Call it between steps of long blocking work to stop early.

    Raises:
        asyncio.CancelledError: the awaiting task was cancelled, or the
            generator's consumer went away.
    """
    if is_cancelled():
        raise asyncio.CancelledError("the caller of this threaded call was cancelled")
