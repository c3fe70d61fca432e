"""Hand callbacks from threads to an event loop, with one wake-up per batch.

Every thread-to-loop hand-off in aiothreads (a call's outcome, a channel item
for a waiting consumer, a coroutine for ``sync_await``) goes through the
loop's ``LoopInbox``:

* ``LoopInbox.post`` may be called from any thread. The loop runs posted
  callbacks in the order they were posted, each as ``callback(*args)``.
* The first post after the loop emptied the inbox wakes the loop; posts that
  arrive before it gets round to it ride along.
* On asyncio's selector loops on Linux the wake-up is an ``eventfd`` the loop
  watches with ``add_reader``: one write from the thread, one read on the loop.
  Elsewhere (uvloop, whose ``call_soon_threadsafe`` is already that; Windows;
  macOS), and once the loop began shutting down, it is
  ``loop.call_soon_threadsafe``.
* ``LoopInbox.post`` raises ``RuntimeError`` if the loop is closed, like
  ``call_soon_threadsafe``.
* A callback's exception is reported to the loop's exception handler, like
  any loop callback's; ``KeyboardInterrupt`` and ``SystemExit`` propagate out
  of the loop after the callbacks behind them were handed on.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from asyncio.selector_events import BaseSelectorEventLoop
from typing import TYPE_CHECKING, Any, Final

from ._asyncio_internals import asyncgens_shut_down
from ._loops import loop_state, on_loop_shutdown, running_loop_or_none

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = ["LoopInbox", "inbox_for"]

_Posted = tuple["Callable[..., object]", tuple[Any, ...]]

_EVENTFD: Final = hasattr(os, "eventfd")


class LoopInbox:
    """Callbacks posted by threads, run on one event loop; see the module docstring."""

    __slots__ = ("__weakref__", "_fd", "_lock", "_loop", "_pending", "_signalled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the inbox registry must not keep loops alive
        self._lock = threading.Lock()
        self._pending: list[_Posted] = []
        self._signalled = False
        self._fd: int | None = None

    def post(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop, soon; callable from any thread.

        Raises:
            RuntimeError: the loop is closed (or gone).
        """
        loop = self._loop()
        if loop is None or loop.is_closed():
            raise RuntimeError("Event loop is closed")
        lock = self._lock
        lock.acquire()  # not ``with``: this runs for every hand-off, and ``with`` costs more
        try:
            self._pending.append((callback, args))
            if self._signalled:
                return
            self._signalled = True
            fd = self._fd
        finally:
            lock.release()
        if fd is not None:
            # Outside the lock, so the woken loop never waits for it. The
            # descriptor stays open as long as this inbox exists, so a write
            # racing a shutdown lands in a retired eventfd, never elsewhere.
            os.eventfd_write(fd, 1)
            return
        try:
            loop.call_soon_threadsafe(self._run_posted)
        except RuntimeError:
            with self._lock:
                self._pending.clear()
                self._signalled = False
            raise

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Switch to the ``eventfd`` wake-up where possible (on ``loop``'s thread, running)."""
        if not _EVENTFD or not isinstance(loop, BaseSelectorEventLoop) or asyncgens_shut_down(loop):
            return
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        weakref.finalize(self, _close_quietly, fd)
        loop.add_reader(fd, self._on_wake_up, fd)
        on_loop_shutdown(loop, self)
        with self._lock:
            self._fd = fd

    def loop_closed(self) -> None:
        """Stop using the ``eventfd``: the loop is shutting down or closed.

        The descriptor is closed when the inbox is collected, once no thread
        can hold it any more.
        """
        with self._lock:
            fd, self._fd = self._fd, None
            pending = self._signalled
        if fd is None:
            return
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(fd)
            if pending:  # a wake-up may have gone to the descriptor: hand it on
                loop.call_soon(self._run_posted)

    def _on_wake_up(self, fd: int) -> None:
        try:  # noqa: SIM105 - on every wake-up; contextlib.suppress costs more
            os.eventfd_read(fd)
        except BlockingIOError:  # a wake-up that a shutdown handed on already consumed
            pass
        self._run_posted()

    def _run_posted(self) -> None:
        lock = self._lock
        lock.acquire()
        posted, self._pending = self._pending, []
        self._signalled = False
        lock.release()  # nothing above can raise
        self.run(posted)

    def run(self, posted: list[_Posted]) -> None:
        """Run ``posted`` callbacks in order, reporting errors as the loop would."""
        for index, (callback, args) in enumerate(posted):
            try:
                callback(*args)
            except (SystemExit, KeyboardInterrupt):
                loop = self._loop()
                rest = posted[index + 1 :]
                if loop is not None and rest:
                    loop.call_soon(self.run, rest)
                raise
            except BaseException as exc:
                loop = self._loop()
                if loop is not None:
                    loop.call_exception_handler(
                        {"message": f"Exception in callback {callback!r}", "exception": exc}
                    )


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


_created_lock = threading.Lock()
_last: tuple[Callable[[], object], Callable[[], LoopInbox | None]] = (
    lambda: None,
    lambda: None,
)


def inbox_for(loop: asyncio.AbstractEventLoop) -> LoopInbox:
    """Return ``loop``'s inbox, creating it on first use (from any thread)."""
    global _last  # noqa: PLW0603 - a one-entry cache in front of the loop's state
    last_loop, last_inbox = _last
    if last_loop() is loop:
        inbox = last_inbox()
        if inbox is not None:
            return inbox
    state = loop_state(loop)
    with _created_lock:
        known = state.inbox
        inbox = known if isinstance(known, LoopInbox) else LoopInbox(loop)
        created = inbox is not known
        state.inbox = inbox
    _last = (weakref.ref(loop), weakref.ref(inbox))  # weak: they close the descriptor
    if created and not loop.is_closed():
        _start_watching(loop, inbox)
    return inbox


def _start_watching(loop: asyncio.AbstractEventLoop, inbox: LoopInbox) -> None:
    if running_loop_or_none() is loop:
        inbox.watch(loop)
    elif loop.is_running():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(inbox.watch, loop)
