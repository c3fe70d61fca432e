"""Event-loop helpers: who is running, and telling threads that a loop shuts down.

Threads that wait on an event loop must not outlive it. Two mechanisms end
such waits:

* ``asyncio.run()`` (and ``asyncio.Runner``, uvloop's ``run`` and
  pytest-asyncio) call ``loop.shutdown_asyncgens()`` before they wait for the
  default executor. :func:`on_loop_shutdown` hooks into that step with a
  sentinel async generator, so producers blocked on a full channel are released
  before the loop waits for their threads.
* A loop closed by hand skips that step, so blocking waits also wake every
  :data:`LOOP_WATCHDOG_INTERVAL` seconds to check ``loop.is_closed()``. This is a
  liveness backstop, not the wake-up path: items and results wake waiters at
  once.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

__all__ = ["LOOP_WATCHDOG_INTERVAL", "on_loop_shutdown", "running_loop_or_none"]

LOOP_WATCHDOG_INTERVAL: Final = 0.5
"""Seconds between checks that the loop a thread waits on is still open."""


# asyncio exports this for loop implementations; unlike get_running_loop()
# it does not raise in threads without a loop, which costs more per call.
running_loop_or_none: Final[Callable[[], asyncio.AbstractEventLoop | None]] = (
    asyncio._get_running_loop  # pyright: ignore[reportPrivateUsage]
)
"""Return the event loop running in this thread, or ``None``."""


class Closable(Protocol):
    """Anything that must be released when its event loop shuts down."""

    def _abandon(self, reason: str = ...) -> None: ...


class _ShutdownWatch:
    """Holds a started sentinel async generator and the objects it releases.

    The sentinel keeps its loop alive (the loop's finalizer hook is bound to
    it), so the watch must go once the loop is done: the sentinel removes it at
    ``shutdown_asyncgens()``, and loops closed without that step are swept the
    next time any loop registers.
    """

    __slots__ = ("loop", "members", "sentinel")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.members: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.sentinel = _release_on_shutdown(self)
        _drive(self.sentinel.__anext__())

    def close(self) -> None:
        """Finish the sentinel without its loop (which is closed) and release members."""
        with contextlib.suppress(RuntimeError):
            _drive(self.sentinel.aclose())


_watches: dict[asyncio.AbstractEventLoop, _ShutdownWatch] = {}


def on_loop_shutdown(loop: asyncio.AbstractEventLoop, member: Closable) -> None:
    """Call ``member._abandon()`` when ``loop`` shuts its async generators down.

    Must be called on ``loop``'s own thread while it runs. ``member`` is held
    weakly.
    """
    watch = _watches.get(loop)
    if watch is None:
        _sweep_closed_loops()
        watch = _watches[loop] = _ShutdownWatch(loop)
    watch.members.add(member)


def _sweep_closed_loops() -> None:
    for stale in [watch for watch in _watches.values() if watch.loop.is_closed()]:
        _watches.pop(stale.loop, None)
        stale.close()


async def _release_on_shutdown(watch: _ShutdownWatch) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        _watches.pop(watch.loop, None)
        for member in list(watch.members):
            member._abandon("loop_closed")


def _drive(step: Awaitable[None]) -> None:
    """Run one step of the sentinel, which never suspends, to completion."""
    with contextlib.suppress(StopIteration):
        step.__await__().send(None)
