"""Event-loop helpers: who is running, and telling threads that a loop shuts down.

Threads that wait on an event loop must not outlive it. Two mechanisms end
such waits:

* ``asyncio.run()`` (and ``asyncio.Runner``, uvloop's ``run`` and
  pytest-asyncio) call ``loop.shutdown_asyncgens()`` before they wait for the
  default executor. ``on_loop_shutdown`` hooks into that step with a
  sentinel async generator, so producers blocked on a full channel are released
  before the loop waits for their threads. The pool aiothreads installs as a
  loop's default executor also releases them when the loop is closed by hand
  (``loop.close()`` shuts the default executor down).
* A loop closed by hand skips that step. Where aiothreads' pool is the loop's
  default executor (asyncio's loops, unless the application set its own),
  ``loop.close()`` shuts it down, and that releases blocked producers and
  ``sync_await`` waiters at once. Elsewhere (uvloop, an application's
  executor) nothing announces the close, so blocking waits also wake every
  ``LOOP_WATCHDOG_INTERVAL`` seconds to check ``loop.is_closed()``: a
  liveness backstop for that one case, never the wake-up path.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import TYPE_CHECKING, Final, Protocol

from ._asyncio_internals import running_loop_or_none

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncGenerator, Awaitable

__all__ = [
    "LOOP_WATCHDOG_INTERVAL",
    "LoopState",
    "loop_state",
    "on_loop_shutdown",
    "release_if_closed",
    "running_loop_or_none",
]

LOOP_WATCHDOG_INTERVAL = 0.5
"""Seconds between checks that the loop a thread waits on is still open.

Read at each wait, so the tests can raise it far above their timeout: then a
missing wake-up fails a test instead of slowing it down.
"""


class Closable(Protocol):
    """Anything that must be released when its event loop shuts down or is closed."""

    def loop_closed(self) -> None:
        """Stop waiting on the loop and release what is held: it shut down or was closed."""
        ...


class _ShutdownWatch:
    """Holds a started sentinel async generator and the objects it releases.

    It lives in its loop's ``LoopState``, so a loop closed by hand, and
    everything the watch holds, is collected with the loop.
    """

    __slots__ = ("__weakref__", "members", "sentinel")

    def __init__(self) -> None:
        self.members: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.sentinel = _release_on_shutdown(self)
        _drive(self.sentinel.__anext__())

    def release(self) -> None:
        """Release every member now (once)."""
        members, self.members = list(self.members), weakref.WeakSet()
        for member in members:
            member.loop_closed()


class LoopState:
    """What aiothreads keeps for one event loop: its inbox, its shutdown watch, its waiters.

    ``waiters`` are threads blocked on the loop (``sync_await``); they may come
    and go from any thread, under ``lock``.
    """

    __slots__ = ("__weakref__", "inbox", "lock", "waiters", "watch")

    def __init__(self) -> None:
        self.inbox: object = None
        self.watch: _ShutdownWatch | None = None
        self.lock = threading.Lock()
        self.waiters: set[Closable] = set()

    def add_waiter(self, waiter: Closable) -> None:
        """Release ``waiter`` (``waiter.loop_closed()``) if the loop is closed by hand."""
        with self.lock:
            self.waiters.add(waiter)

    def remove_waiter(self, waiter: Closable) -> None:
        """Forget ``waiter``: it is done waiting."""
        with self.lock:
            self.waiters.discard(waiter)


_STATE_ATTRIBUTE: Final = "_aiothreads_state"
_states_lock = threading.Lock()
# Loops that accept no attribute: a weak mapping (their state then lives as
# long as they do, which is as long as nothing posted to them is pending).
_fallback_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = (
    weakref.WeakKeyDictionary()
)


def loop_state(loop: asyncio.AbstractEventLoop) -> LoopState:
    """Return ``loop``'s state, creating it on first use; safe from any thread.

    The state is stored on the loop itself, so nothing module-level keeps a
    loop alive: a loop and everything aiothreads holds for it are collected
    together, even with results still pending for it when it closed.
    """
    state: LoopState | None = getattr(loop, _STATE_ATTRIBUTE, None)
    if state is not None:
        return state
    with _states_lock:
        state = getattr(loop, _STATE_ATTRIBUTE, None) or _fallback_states.get(loop)
        if state is None:
            state = LoopState()
            try:
                setattr(loop, _STATE_ATTRIBUTE, state)
            except AttributeError:
                _fallback_states[loop] = state
    return state


def release_if_closed(loop_reference: weakref.ref[asyncio.AbstractEventLoop]) -> None:
    """Release what waits on the loop if it was closed by hand (skipping its shutdown steps).

    Called when the loop's default executor is shut down, which ``loop.close()`` does.
    """
    loop = loop_reference()
    if loop is None or not loop.is_closed():
        return
    state = loop_state(loop)
    if state.watch is not None:
        state.watch.release()
    with state.lock:
        waiters, state.waiters = state.waiters, set()
    for waiter in waiters:
        waiter.loop_closed()


def on_loop_shutdown(loop: asyncio.AbstractEventLoop, member: Closable) -> None:
    """Call ``member.loop_closed()`` when ``loop`` shuts its async generators down.

    Must be called on ``loop``'s own thread while it runs. ``member`` is held
    weakly.
    """
    state = loop_state(loop)
    watch = state.watch
    if watch is None:
        watch = state.watch = _ShutdownWatch()
    watch.members.add(member)


async def _release_on_shutdown(watch: _ShutdownWatch) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        watch.release()


def _drive(step: Awaitable[None]) -> None:
    """Run one step of the sentinel, which never suspends, to completion."""
    with contextlib.suppress(StopIteration):
        step.__await__().send(None)
