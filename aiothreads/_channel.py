"""A bounded channel that carries items from threads to one event loop.

Semantics:

* ``put()`` is called from threads. It appends at once while there is room and
  blocks the calling thread while the channel is full (backpressure). It raises
  [`ChannelClosed`][aiothreads.ChannelClosed] once the channel is closed, also when the close
  happens while the thread is blocked.
* ``get()`` is awaited on the event loop. Items come out in the order they were
  put. Once the channel is closed, the remaining items are still delivered and
  then every ``get()`` raises [`ChannelClosed`][aiothreads.ChannelClosed].
* The loop is woken only when a getter is waiting, and a blocked producer only
  once the channel has drained to half its size, so a fast producer refills it
  in a batch instead of waking up for every item: no polling on either side.
* If the event loop closes while a producer is blocked, ``put()`` raises
  [`ChannelClosed`][aiothreads.ChannelClosed] instead of blocking forever.

Beyond ``put()``/``get()``, a threaded iterator drives the channel through a
small interface: ``take_nowait()`` (an item, or ``EMPTY``, without waiting),
``abandon(reason)`` (the consumer left: close and drop the items), ``fail(error)``
(the producer raised), ``close_reason``, ``on_blocked`` (told how long each
wait for room took) and ``call_when_abandoned()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from . import _loops
from ._future import CallFuture
from ._inbox import inbox_for
from ._loops import on_loop_shutdown, running_loop_or_none
from ._outcomes import StopReason
from ._validate import check_size, check_timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from typing_extensions import Self

__all__ = ["ChannelClosed", "ChannelTimeout", "FromThreadChannel"]

T = TypeVar("T")


class ChannelClosed(RuntimeError):
    """Raised by ``get()`` on a closed, drained channel and by ``put()`` after close.

    A ``RuntimeError``, as in aiothreads 1.x.
    """


class ChannelTimeout(asyncio.TimeoutError):
    """Raised by ``get()`` when no item arrived within the timeout."""


class _Empty(enum.Enum):
    """Marker for "nothing buffered" on the non-blocking fast path (compared with ``is``)."""

    EMPTY = "empty"


EMPTY: Final = _Empty.EMPTY


class FromThreadChannel(Generic[T]):
    """A thread-safe channel for passing items from threads to async code.

    Args:
        maxsize: How many items may wait in the channel; ``put()`` blocks the
            producing thread while it is full. ``0`` means unbounded.
        timeout: Default timeout in seconds for ``get()``; ``0`` waits forever.

    Raises:
        TypeError: ``maxsize`` is not an int or ``timeout`` not a number.
        ValueError: ``maxsize`` or ``timeout`` is negative.

    The channel binds to the running event loop when it is created inside one,
    otherwise to the loop of the first ``get()``. Use it as a context manager
    in the producing thread to close it when the producer is done, and await
    the channel itself as a shorthand for ``get()``.

    ```python
    import asyncio
    import threading

    from aiothreads import ChannelClosed, FromThreadChannel


    async def main() -> list[int]:
        channel: FromThreadChannel[int] = FromThreadChannel(maxsize=2)

        def produce() -> None:
            with channel:  # closes the channel once the producer is done
                for number in range(5):
                    channel.put(number)  # blocks while two items wait

        producer = threading.Thread(target=produce)
        producer.start()
        received = []
        try:
            while True:
                received.append(await channel.get())
        except ChannelClosed:
            producer.join()
        return received


    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    ```

    """

    __slots__ = (
        "__weakref__",
        "_abandon_callbacks",
        "_close_reason",
        "_closed",
        "_error",
        "_getters",
        "_items",
        "_lock",
        "_loop",
        "_low_water",
        "_maxsize",
        "_not_full",
        "_put_count",
        "_room_wanted",
        "_timeout",
        "_waiting_for_room",
        "on_blocked",
    )

    def __init__(self, maxsize: int = 0, timeout: float = 0) -> None:
        self._maxsize = check_size("maxsize", maxsize)
        self._low_water = self._maxsize // 2
        self._timeout = check_timeout("timeout", timeout)
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._items: deque[T] = deque()
        self._getters: deque[CallFuture[None]] = deque()
        self._room_wanted = False
        self._waiting_for_room = False
        self._put_count = 0
        self._closed = False
        self._close_reason: StopReason | None = None
        self._error: BaseException | None = None
        self.on_blocked: Callable[[float], None] | None = None
        self._abandon_callbacks: list[Callable[[], object]] = []
        self._loop: asyncio.AbstractEventLoop | None = running_loop_or_none()
        if self._loop is not None:
            on_loop_shutdown(self._loop, self)

    @property
    def maxsize(self) -> int:
        """The capacity given at construction; ``0`` means unbounded."""
        return self._maxsize

    @property
    def timeout(self) -> float:
        """The default ``get()`` timeout in seconds; ``0`` means none."""
        return self._timeout

    @property
    def close_reason(self) -> StopReason | None:
        """Why the consuming side closed the channel, if it did."""
        return self._close_reason

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` was called (items may still be waiting)."""
        return self._closed

    @property
    def items_put(self) -> int:
        """How many items producers have put so far."""
        return self._put_count

    @property
    def waiting_for_room(self) -> bool:
        """Whether a producer is blocked in ``put()`` because the channel is full."""
        return self._waiting_for_room

    def qsize(self) -> int:
        """Return how many items are waiting in the channel."""
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<FromThreadChannel {state} size={len(self._items)} maxsize={self._maxsize}>"

    # -- producer side ------------------------------------------------------

    def put(self, item: T) -> None:
        """Append ``item``, blocking the calling thread while the channel is full.

        Raises:
            ChannelClosed: the channel is closed, or was closed (or its event
                loop closed) while this thread waited for room.
            RuntimeError: the channel is full and this is the event loop's own
                thread, where blocking would deadlock.
        """
        lock = self._lock
        lock.acquire()  # not ``with``: this runs for every item, and ``with`` costs more
        try:
            if self._closed or (self._maxsize and len(self._items) >= self._maxsize):
                self._wait_until_open_with_room()
            self._items.append(item)
            self._put_count += 1
            getter = self._getters.popleft() if self._getters else None
        finally:
            lock.release()
        if getter is not None:
            self._wake(getter)

    def _wait_until_open_with_room(self) -> None:
        """With the lock held: return once there is room, raise once closed."""
        while True:
            if self._closed:
                if self._close_reason is StopReason.LOOP_CLOSED:
                    raise ChannelClosed("the event loop closed: put() on a closed channel")
                raise ChannelClosed("put() on a closed channel")
            if not self._maxsize or len(self._items) < self._maxsize:
                return
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        loop = self._loop
        if loop is not None and running_loop_or_none() is loop:
            raise RuntimeError(
                "FromThreadChannel.put() would block the event loop's own thread: "
                "the channel is full; call put() from a worker thread"
            )
        # The consumer notifies once per request, not for every item it takes.
        self._room_wanted = True
        self._waiting_for_room = True
        started = time.perf_counter()
        try:
            woken = self._not_full.wait(_loops.LOOP_WATCHDOG_INTERVAL)
        finally:
            self._waiting_for_room = False
            if self.on_blocked is not None:
                self.on_blocked(time.perf_counter() - started)
        if not woken and loop is not None and loop.is_closed():
            self._close_locked(None, StopReason.LOOP_CLOSED)
            raise ChannelClosed("the event loop closed while put() waited for room")

    def close(self) -> None:
        """Close the channel; idempotent and safe to call from any thread.

        Blocked producers raise [`ChannelClosed`][aiothreads.ChannelClosed]; waiting getters receive
        the remaining items and then [`ChannelClosed`][aiothreads.ChannelClosed].
        """
        with self._lock:
            getters = self._close_locked(None)
        self._wake_all(getters)

    def fail(self, error: BaseException) -> None:
        """Close the channel from the producing side; drained, ``get()`` raises ``error`` once."""
        with self._lock:
            getters = self._close_locked(error)
        self._wake_all(getters)

    def abandon(self, reason: StopReason = StopReason.LOOP_CLOSED) -> None:
        """Close the channel from the consuming side, for ``reason``, dropping its items.

        An error the producer closed it with is dropped too: nobody is left to
        receive it (a closed iterator ends, as an async generator does after
        ``aclose()``). The first close still decides the reason.
        """
        with self._lock:
            self._items.clear()
            getters = self._close_locked(None, reason)
            self._error = None
            callbacks, self._abandon_callbacks = self._abandon_callbacks, []
        self._wake_all(getters)
        for callback in callbacks:
            callback()

    def loop_closed(self) -> None:
        """Abandon the channel: the loop it delivers to shut down or was closed."""
        self.abandon(StopReason.LOOP_CLOSED)

    def call_when_abandoned(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once the consuming side abandons the channel (now, if it has).

        It runs in the thread that abandons it; see ``forget_abandon_callback``.
        """
        with self._lock:
            if self._close_reason is None:
                self._abandon_callbacks.append(callback)
                return
        callback()

    def forget_abandon_callback(self, callback: Callable[[], object]) -> None:
        """Undo ``call_when_abandoned`` (nothing happens if it already ran)."""
        with self._lock, contextlib.suppress(ValueError):
            self._abandon_callbacks.remove(callback)

    def _close_locked(
        self, error: BaseException | None, reason: StopReason | None = None
    ) -> list[CallFuture[None]]:
        if not self._closed:
            self._closed = True
            self._error = error
            self._close_reason = reason
        self._not_full.notify_all()
        getters = list(self._getters)
        self._getters.clear()
        return getters

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- consumer side ------------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        bound = self._loop
        if bound is None:
            with self._lock:  # two loops' first get() at once: one binds, the other fails
                bound = self._loop
                if bound is None:
                    bound = self._loop = loop
            if bound is loop:
                on_loop_shutdown(loop, self)
        if bound is not loop:
            raise RuntimeError("this FromThreadChannel is bound to another event loop")
        return loop

    def take_nowait(self) -> T | _Empty:
        """Pop the next item, or return ``EMPTY``; raise once closed and drained.

        Only the consuming side pops, so an item is taken without the lock
        (``deque.popleft`` is atomic); the lock is needed to wake a producer
        or to find the channel empty.
        """
        items = self._items
        try:
            item = items.popleft()
        except IndexError:
            return self._take_when_empty()
        if self._room_wanted and len(items) <= self._low_water:
            self._make_room()
        return item

    def _make_room(self) -> None:
        with self._lock:
            self._grant_room()

    def _grant_room(self) -> None:
        """With the lock held: answer the producers' request for room, once."""
        self._room_wanted = False
        self._not_full.notify_all()

    def _take_when_empty(self) -> T | _Empty:
        with self._lock:
            if self._items:
                return self._items.popleft()
            if self._room_wanted:  # a producer that raced the last pop
                self._grant_room()
            if not self._closed:
                return EMPTY
            error, self._error = self._error, None
        if error is not None:
            raise error
        raise ChannelClosed("the channel is closed and drained")

    def _register_getter(self, loop: asyncio.AbstractEventLoop) -> CallFuture[None] | None:
        """Queue a getter future, or return ``None`` if an item or close raced in."""
        with self._lock:
            if self._items or self._closed:
                return None
            getter: CallFuture[None] = CallFuture(loop=loop)
            self._getters.append(getter)
            return getter

    async def get(self, timeout: float | None = None) -> T:
        """Wait for the next item.

        Args:
            timeout: Seconds to wait; ``None`` uses the channel's default and
                ``0`` waits forever.

        Raises:
            ChannelClosed: the channel is closed and every item was delivered.
            ChannelTimeout: no item arrived within the timeout.
            RuntimeError: the channel belongs to another event loop.

        Cancelling the waiting task leaves the channel and its items intact.
        """
        limit = self._timeout if timeout is None else check_timeout("timeout", timeout)
        loop = self._bind()
        deadline = loop.time() + limit if limit else None
        while True:
            item = self.take_nowait()
            if item is not EMPTY:
                return item
            getter = self._register_getter(loop)
            if getter is None:
                continue
            await self._wait(loop, getter, deadline)

    async def _wait(
        self,
        loop: asyncio.AbstractEventLoop,
        getter: CallFuture[None],
        deadline: float | None,
    ) -> None:
        timer = None if deadline is None else loop.call_at(deadline, _expire, getter)
        try:
            await getter
        except BaseException:
            self._forget(getter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _forget(self, getter: CallFuture[None]) -> None:
        """Drop a getter that stopped waiting, passing a wake-up it got to the next."""
        with self._lock:
            if getter in self._getters:
                self._getters.remove(getter)
                return
            handoff = self._getters.popleft() if self._items and self._getters else None
        if handoff is not None:
            self._wake(handoff)

    def _wake(self, getter: CallFuture[None]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to wake
            inbox_for(getter.get_loop()).post(self._settle, getter)

    def _wake_all(self, getters: list[CallFuture[None]]) -> None:
        for getter in getters:
            self._wake(getter)

    def _settle(self, getter: CallFuture[None]) -> None:
        if not getter.done():
            getter.resolve(None)
        elif getter.cancelled():
            self._forget(getter)

    def __await__(self) -> Generator[Any, None, T]:
        return self.get().__await__()


def _expire(getter: CallFuture[None]) -> None:
    if not getter.done():
        getter.set_exception(ChannelTimeout("no item arrived within the timeout"))
