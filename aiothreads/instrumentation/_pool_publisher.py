"""Writes what the pools hold to prometheus-client's multiprocess files, as calls come and go.

In multiprocess mode no scrape reaches a worker process, so busy and idle
threads and queued calls must be written to files for the collector to add
up. Writing them on every call would put locked file writes on each call's
path; instead each call only pokes this writer (a flag read, and an event set
when it is not set yet), and the writer, a daemon thread of its own:

* writes as soon as it is poked, reading every pool as it is then, and again
  ``interval`` seconds later (the poke may precede its call in the pool);
* goes on writing every ``interval`` seconds while any pool has a busy worker
  or a queued call, so that the files follow a burst and its end;
* once a write after the last poke saw nothing busy or queued, waits for the
  next poke without waking (no timer, no poll).

Calls that no aiothreads call accompanies (``asyncio.to_thread`` alone on the
default executor) do not poke it. A forked child starts its own writer on its
first poke; the parent's does not survive the fork.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PUBLISH_INTERVAL", "PoolPublisher"]

PUBLISH_INTERVAL: Final = 1.0
"""Seconds between writes while a pool has work: a fraction of any scrape interval."""


class PoolPublisher:
    """Calls ``write`` when poked, and every ``interval`` seconds while it reports activity.

    ``write`` writes the pools' numbers and returns whether any pool had a
    busy worker or a queued call.
    """

    def __init__(self, write: Callable[[], bool], interval: float = PUBLISH_INTERVAL) -> None:
        self._write = write
        self._interval = interval
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._writes = 0
        self._quiet = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        os.register_at_fork(after_in_child=self._forked)

    def poke(self) -> None:
        """Say that a call came or went: the pools are written soon."""
        if self._thread is None:
            self._start()
        if not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(target=self._run, name="aiothreads-pool-metrics", daemon=True)
            thread.start()
            self._thread = thread

    def _forked(self) -> None:
        """In a forked child: no writer runs yet, and the parent's locks may be held."""
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def _run(self) -> None:
        wake, stop = self._wake, self._stop
        while not stop.is_set():
            wake.wait()
            # A poke may come just before its call reaches the pool: the write
            # after the next interval is made whatever this one sees.
            follow_up = True
            while not stop.is_set():
                wake.clear()
                active = self._write_once()
                if stop.wait(self._interval):
                    return
                if wake.is_set():
                    follow_up = True
                elif active or follow_up:
                    follow_up = False
                else:
                    break  # two writes in a row saw nothing to do: sleep until poked

    def _write_once(self) -> bool:
        try:
            active = self._write()
        except Exception:  # a full disk must not stop the writer
            active = True
        with self._written:
            self._writes += 1
            self._quiet = not active
            self._written.notify_all()
        return active

    def wait_for(self, *, after: int, quiet: bool = False, timeout: float) -> bool:
        """Wait for a write later than the ``after``-th; with ``quiet``, one that saw no work.

        Returns whether one was made within ``timeout`` seconds. For tests and
        tools that must see the files follow a change.
        """

        def written() -> bool:
            return self._writes > after and (self._quiet or not quiet)

        with self._written:
            return self._written.wait_for(written, timeout)

    @property
    def writes(self) -> int:
        """How many times the pools were written so far."""
        with self._written:
            return self._writes

    def stop(self) -> None:
        """Stop the writer thread and wait for it (its last write, if any, completes)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
