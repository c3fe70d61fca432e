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
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._channel import FromThreadChannel

__all__ = ["CallScope", "StreamScope", "check_cancelled", "current_scope", "is_cancelled"]

P = ParamSpec("P")
T = TypeVar("T")


class CallScope:
    """What a threaded call knows of its caller: the future the caller awaits."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None

    def cancelled(self) -> bool:
        """Whether the caller cancelled the call."""
        future = self.future
        return future is not None and future.cancelled()

    def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``func`` with this scope current (inside the call's own context)."""
        _SCOPE.set(self)
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


_SCOPE: contextvars.ContextVar[CallScope | StreamScope | None] = contextvars.ContextVar(
    "aiothreads_cancel_scope", default=None
)


def current_scope() -> CallScope | StreamScope | None:
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
