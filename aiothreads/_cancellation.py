"""Cooperative cancellation: threaded code can notice that its caller gave up.

Threads cannot be interrupted, but a threaded function can poll. Inside a call
made by an aiothreads decorator, :func:`is_cancelled` turns true once the
awaiting task was cancelled (the call's future is cancelled), and inside a
threaded generator once its consumer went away (break, close, cancellation,
garbage collection, loop shutdown). :func:`check_cancelled` raises
``asyncio.CancelledError`` then, which cancels the call's future in turn.
``sync_await`` and friends called from such a call raise ``CancelledError``
as soon as the call is cancelled, cancelling the coroutine they wait for.
Outside any aiothreads call both report "not cancelled".
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from .types import EVENT_LOOP

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._channel import FromThreadChannel

__all__ = [
    "CallScope",
    "Scope",
    "StreamScope",
    "check_cancelled",
    "current_scope",
    "enter_call",
    "is_cancelled",
    "run_as_call",
]

P = ParamSpec("P")
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


class CallScope:
    """What a threaded call knows of its caller: the future the caller awaits.

    The executor's own call objects are scopes themselves; this one serves
    calls that go through an executor aiothreads does not drive, where the
    future only exists once the call was submitted.
    """

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None

    def cancelled(self) -> bool:
        """Whether the caller cancelled the call."""
        future = self.future
        return future is not None and future.cancelled()


def enter_call(scope: Scope, loop: asyncio.AbstractEventLoop) -> None:
    """Inside a threaded call's own context: make ``scope`` and ``loop`` current."""
    _SCOPE.set(scope)
    EVENT_LOOP.set(loop)


def run_as_call(
    scope: Scope,
    loop: asyncio.AbstractEventLoop,
    func: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Call ``func`` with ``scope`` and ``loop`` current (inside the call's own context)."""
    enter_call(scope, loop)
    return func(*args, **kwargs)


class StreamScope:
    """What a threaded generator knows of its consumer: whether it went away."""

    __slots__ = ("_channel",)

    def __init__(self, channel: FromThreadChannel[Any]) -> None:
        self._channel = channel

    @property
    def future(self) -> None:
        """Streams have no future to watch; waits re-check :meth:`cancelled`."""
        return None

    def cancelled(self) -> bool:
        """Whether the consumer closed or dropped the iterator."""
        return self._channel._close_reason is not None


_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "aiothreads_cancel_scope", default=None
)


def current_scope() -> Scope | None:
    """Return the scope of the aiothreads call running in this context, if any."""
    return _SCOPE.get()


def enter_stream_scope(channel: FromThreadChannel[Any]) -> None:
    """Make ``channel``'s consumer the one :func:`is_cancelled` watches here."""
    _SCOPE.set(StreamScope(channel))


def is_cancelled() -> bool:
    """Return whether the caller of the running threaded call or generator gave up.

    ``False`` outside aiothreads calls.
    """
    scope = _SCOPE.get()
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
