"""The slow-call watchdog: one warning for each call or generator that runs too long.

Off by default. Switched on with a threshold in seconds
(``instrumentation.configure(slow_call_threshold=...)`` or the
``AIOTHREADS_SLOW_CALL_THRESHOLD`` environment variable), it runs one daemon
thread that sleeps while no watched work runs, and otherwise wakes when the
oldest unreported work crosses the threshold. A call is slow once it has run
longer than the threshold; a generator once it has gone that long without
handing over an item, not counting time it waits for room in a full channel
(a new item is noticed when the watchdog looks, so a stall is reported
between one and two thresholds after the last item).
Each slow call, and each stall of a generator, is reported exactly once:
counted, noted on its span, and logged with its thread's stack.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from ._inflight import running, stack_of, thread_frames, thread_names
from ._log import emit

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from ._inflight import Running

__all__ = ["SLOW_EVENT", "THREAD_NAME", "WATCHDOG", "Watchdog", "check_threshold"]

THREAD_NAME: Final = "aiothreads-watchdog"
SLOW_EVENT: Final = "slow threaded call"


def check_threshold(threshold: object) -> float | None:
    """Return ``threshold`` as seconds (``None``: off), or raise for anything else.

    Raises:
        TypeError: not a number (or a bool).
        ValueError: not a positive, finite number.
    """
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"slow_call_threshold must be seconds or None, not {threshold!r}")
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"slow_call_threshold must be positive seconds, not {threshold!r}")
    return float(threshold)


class Watchdog:
    """Reports work that runs longer than a threshold; see the module docstring.

    ``check(now)`` does one round and is what tests drive with their own clock;
    the watchdog thread calls it with ``time.monotonic()``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.on = False
        """Read by each call as its thread starts it: whether to wake the watchdog."""
        self._clock = clock
        self._threshold: float | None = None
        self._seen: dict[int, tuple[tuple[int, int], float, bool]] = {}
        """Per thread: (its work and item count, busy since, reported)."""
        self._lock = threading.Lock()
        self._work_arrived = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def threshold(self) -> float | None:
        """Seconds after which work counts as slow; ``None`` when off."""
        return self._threshold

    def configure(self, threshold: float | None, *, start_thread: bool = True) -> None:
        """Watch with ``threshold`` seconds (``None`` switches the watchdog off).

        ``start_thread=False`` watches without the thread: ``check`` must be
        called by hand (tests drive the clock this way).
        """
        threshold = check_threshold(threshold)
        with self._lock:
            self._stop_thread()
            self._threshold = threshold
            self._seen = {}
            self.on = threshold is not None
            if threshold is not None and start_thread:
                self._stop = threading.Event()
                self._work_arrived = threading.Event()
                self._thread = threading.Thread(
                    target=self._watch,
                    args=(self._stop, self._work_arrived),
                    name=THREAD_NAME,
                    daemon=True,
                )
                self._thread.start()

    def work_started(self) -> None:
        """Wake the watchdog if it sleeps for want of work; called as a thread starts work."""
        if not self._work_arrived.is_set():
            self._work_arrived.set()

    def check(self, now: float | None = None) -> float | None:
        """Report what became slow by ``now``; return the seconds until the next check is due.

        ``None``: nothing runs, so nothing is due until work starts.
        """
        threshold = self._threshold
        if threshold is None:
            return None
        if now is None:
            now = self._clock()
        frames = thread_frames()
        now_running = running(frames)
        seen: dict[int, tuple[tuple[int, int], float, bool]] = {}
        next_due = now + threshold
        for thread, (work, started) in now_running.items():
            channel = work.about[3]
            earlier = self._seen.get(thread)
            if channel is None:
                key, since = (id(work), -1), started
            elif channel.waiting_for_room:
                continue  # the consumer is slow, not the generator: any stall ends here
            else:
                key = (id(work), channel.items_put)
                if earlier is not None and earlier[0] == key:
                    since = earlier[1]
                else:  # a new item since the last look (or the first look at it)
                    since = started if key[1] == 0 else now
            reported = earlier is not None and earlier[0] == key and earlier[2]
            due = since + threshold
            if not reported and now >= due:
                self._report(thread, work, now - since, frames.get(thread))
                reported = True
            seen[thread] = (key, since, reported)
            if not reported:
                next_due = min(next_due, due)
        self._seen = seen
        return next_due - now if now_running else None

    def _report(self, thread: int, work: Running, elapsed: float, frame: FrameType | None) -> None:
        details: dict[str, Any] = {
            "elapsed": round(elapsed, 3),
            "thread": thread_names().get(thread, "?"),
            "thread_id": thread,
            "stack": [str(location) for location in stack_of(frame)] if frame else [],
        }
        probe = work.probe
        if probe is not None:
            probe.slow(elapsed, details)
        else:
            kind, function = work.about[:2]
            emit("warning", SLOW_EVENT, {"function": function, "kind": kind, **details})

    def _watch(self, stop: threading.Event, work_arrived: threading.Event) -> None:
        while not stop.is_set():
            delay = self.check()
            if delay is None:
                work_arrived.clear()
                # Asked to stop, or work started, between the check and the clear:
                # either one set the event this clear took back.
                if not stop.is_set() and not running():
                    work_arrived.wait()
            else:
                stop.wait(delay)

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self.on = False
            self._stop.set()
            self._work_arrived.set()
            thread.join()


WATCHDOG: Final = Watchdog()
"""The process's watchdog, off until configured."""
