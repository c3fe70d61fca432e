"""Capacity limits: at most N concurrent executions of the functions sharing a limiter.

Semantics:

* ``await limiter.acquire()`` takes a place, waiting asynchronously (first come,
  first served) while all ``total_tokens`` places are taken; ``release()``
  gives it back and wakes the next waiter.
* A waiter cancelled while waiting never takes a place; one cancelled just
  after being granted a place passes it on to the next waiter.
* A limiter may be shared by functions and used from several event loops: its
  state is guarded by a lock and waiters are woken on their own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from ._validate import check_size

__all__ = ["CapacityLimiter", "as_limiter"]


class CapacityLimiter:
    """Limits how many calls run at once.

    Args:
        total_tokens: How many holders at most; at least 1.

    Raises:
        TypeError: ``total_tokens`` is not an int.
        ValueError: ``total_tokens`` is less than 1.

    Pass it as ``@threaded(limit=limiter)`` to several functions to share the
    places, or pass ``limit=N`` for a limiter of one function's own. It is
    also an async context manager.
    """

    __slots__ = ("_borrowed", "_granted", "_lock", "_total", "_waiters")

    def __init__(self, total_tokens: int) -> None:
        if check_size("total_tokens", total_tokens) < 1:
            raise ValueError(f"total_tokens must be >= 1, got {total_tokens}")
        self._total = total_tokens
        self._borrowed = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._granted: set[asyncio.Future[None]] = set()
        self._lock = threading.Lock()

    @property
    def total_tokens(self) -> int:
        """How many holders the limiter allows at once."""
        return self._total

    @property
    def borrowed_tokens(self) -> int:
        """How many places are taken now."""
        return self._borrowed

    @property
    def waiting(self) -> int:
        """How many callers wait for a place now."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a place if one is free and nobody waits; never blocks."""
        with self._lock:
            if self._borrowed < self._total and not self._waiters:
                self._borrowed += 1
                return True
            return False

    async def acquire(self) -> None:
        """Take a place, waiting while all are taken.

        Raises:
            asyncio.CancelledError: cancelled while waiting; no place was taken.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._borrowed < self._total and not self._waiters:
                self._borrowed += 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                granted = waiter in self._granted
                self._granted.discard(waiter)
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if granted:  # granted and cancelled at once: hand the place on
                self.release()
            raise
        with self._lock:
            self._granted.discard(waiter)

    def release(self) -> None:
        """Give a place back and wake the next waiter; safe from any thread.

        Raises:
            RuntimeError: more releases than acquisitions.
        """
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if _grant(waiter):
                    self._granted.add(waiter)
                    return  # the place passes to the waiter: borrowed stays the same
            if self._borrowed == 0:
                raise RuntimeError("release() without a matching acquire()")
            self._borrowed -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"<CapacityLimiter {self._borrowed}/{self._total} taken, {len(self._waiters)} waiting>"
        )


def _grant(waiter: asyncio.Future[None]) -> bool:
    """Wake ``waiter`` on its loop; False if it is already gone."""
    if waiter.done():
        return False
    loop = waiter.get_loop()
    if loop.is_closed():
        return False
    try:
        loop.call_soon_threadsafe(_settle, waiter)
    except RuntimeError:
        return False
    return True


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def as_limiter(limit: int | CapacityLimiter | None) -> CapacityLimiter | None:
    """Turn a ``limit=`` argument into a limiter (``None`` stays unlimited).

    Raises:
        TypeError: ``limit`` is neither an int nor a
            [`CapacityLimiter`][aiothreads.CapacityLimiter].
        ValueError: ``limit`` is less than 1.
    """
    if limit is None or isinstance(limit, CapacityLimiter):
        return limit
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or a CapacityLimiter, got {type(limit).__name__}")
    return CapacityLimiter(limit)
