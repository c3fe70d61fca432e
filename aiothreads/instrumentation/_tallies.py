"""Counts of calls, threads and streams, kept per thread so that counting needs no lock.

A call costs a few integer additions: each thread counts into tallies of its
own (one per series), which no other thread writes. An exporter adds the
tallies up when it is read (a Prometheus scrape, an OpenTelemetry collection)
and derives the gauges from the counters (queued = submitted - started -
skipped, in flight = started - finished). Because the counters of later stages
are read first, a derived gauge is never negative and counts are exact.
Tallies of threads that ended are folded into one, so threads that come and
go do not slow reading down.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

from .._outcomes import Outcome, StopReason

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DURATION_BUCKETS",
    "ITERABLE_KINDS",
    "OUTCOMES",
    "REASONS",
    "SEPARATE_KINDS",
    "Exemplar",
    "StreamTotals",
    "Streams",
    "Tallies",
    "Tally",
    "TallySeries",
    "made_once",
]

DURATION_BUCKETS: Final = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""Upper bounds of the duration buckets, in seconds (a last one is +Inf)."""

K = TypeVar("K")
V = TypeVar("V")


def made_once(found: dict[K, V], key: K, lock: threading.Lock, make: Callable[[K], V]) -> V:
    """Return ``found[key]``, made by ``make(key)`` (holding ``lock``) if no thread made it yet.

    The look-up of what exists takes no lock.
    """
    value = found.get(key)
    if value is None:
        with lock:
            value = found.get(key)
            if value is None:
                value = found[key] = make(key)
    return value


OUTCOMES: Final = tuple(Outcome)
REASONS: Final = tuple(StopReason)
# Keyed by the members, which the calls pass: a lookup then matches by identity.
_OUTCOME_INDEX: Final[dict[str, int]] = {o: index for index, o in enumerate(OUTCOMES)}
_REASON_INDEX: Final[dict[str, int]] = {str(r): index for index, r in enumerate(REASONS)}
_BUCKETS: Final = len(DURATION_BUCKETS) + 1
_FIRST_BOUND: Final = DURATION_BUCKETS[0]
"""Most waits, and many calls, end within it: their bucket is found without a search."""
SEPARATE_KINDS: Final = frozenset({"separate", "iterable_separate"})
"""Kinds whose every call or iterator has a thread of its own."""
ITERABLE_KINDS: Final = frozenset({"iterable", "iterable_separate"})
"""Kinds that stream items."""


class Tally:
    """What one thread counted for one series. Only that thread writes it."""

    __slots__ = (
        "blocked",
        "cancellations",
        "duration",
        "duration_sum",
        "exemplars",
        "finished",
        "items",
        "limit_wait",
        "limit_wait_sum",
        "skipped",
        "slow",
        "started",
        "submitted",
        "thread",
        "threads_finished",
        "threads_started",
        "wait",
        "wait_sum",
    )

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = None if thread is None else weakref.ref(thread)
        """The thread that counts into this tally (weakly: it may end and go)."""
        self.submitted = 0
        self.started = 0
        self.finished = [0] * len(OUTCOMES)
        self.skipped = [0] * len(OUTCOMES)
        self.wait = [0] * _BUCKETS
        self.wait_sum = 0.0
        self.duration = [0] * _BUCKETS
        self.duration_sum = 0.0
        self.exemplars: list[Exemplar | None] | None = None  # per duration bucket, if traced
        self.limit_wait = [0] * _BUCKETS
        self.limit_wait_sum = 0.0
        self.threads_started = 0
        self.threads_finished = 0
        self.items = 0
        self.blocked = 0.0
        self.cancellations = [0] * len(REASONS)
        self.slow = 0

    def add_ends(self, other: Tally) -> None:
        """Add what ``other`` counted at the ends of calls (read before their starts)."""
        _add_into(self.finished, other.finished)
        _add_into(self.skipped, other.skipped)
        self.threads_finished += other.threads_finished

    def add_middles(self, other: Tally) -> None:
        """Add what ``other`` counted between submission and end."""
        self.started += other.started
        self.threads_started += other.threads_started
        _add_into(self.wait, other.wait)
        self.wait_sum += other.wait_sum
        _add_into(self.duration, other.duration)
        self.duration_sum += other.duration_sum
        if other.exemplars is not None:
            self.exemplars = _latest(self.exemplars, other.exemplars)
        _add_into(self.limit_wait, other.limit_wait)
        self.limit_wait_sum += other.limit_wait_sum
        self.items += other.items
        self.blocked += other.blocked
        _add_into(self.cancellations, other.cancellations)
        self.slow += other.slow

    def add_starts(self, other: Tally) -> None:
        """Add what ``other`` counted at submission (read last)."""
        self.submitted += other.submitted

    def ended(self, outcome: int) -> int:
        """Count the calls that ended with the outcome at index ``outcome``, run or not."""
        return self.finished[outcome] + self.skipped[outcome]

    def queued(self) -> int:
        """Count the calls submitted, neither started nor skipped."""
        return max(0, self.submitted - self.started - sum(self.skipped))

    def in_flight(self) -> int:
        """Count the calls started and not finished."""
        return max(0, self.started - sum(self.finished))

    def threads_alive(self) -> int:
        """Count the dedicated threads started and not finished."""
        return max(0, self.threads_started - self.threads_finished)


Exemplar = tuple[int, int, float, float]
"""(trace id, span id, observed value, Unix time) of the latest call in a bucket."""


def _latest(
    mine: list[Exemplar | None] | None, theirs: list[Exemplar | None]
) -> list[Exemplar | None]:
    """Per bucket, the newer of two exemplars."""
    if mine is None:
        return list(theirs)
    return [
        b if a is None or (b is not None and b[3] > a[3]) else a
        for a, b in zip(mine, theirs, strict=True)
    ]


def _no_exemplars() -> list[Exemplar | None]:
    return [None] * _BUCKETS


def _add_into(total: list[Any], part: list[Any]) -> None:
    for index, value in enumerate(part):
        total[index] += value


class TallySeries:
    """The counts of one (function, kind): a tally per thread that counted."""

    __slots__ = (
        "_fold_at",
        "_local",
        "_lock",
        "_retired",
        "_tallies",
        "function",
        "kind",
        "labels",
        "on_finished",
        "on_started",
    )

    def __init__(self, function: str, kind: str) -> None:
        self.function = function
        self.kind = kind
        self.labels = [function, kind]
        self.on_started: Callable[[float], None] | None = None
        """Also told of each wait for a thread (a histogram another exporter keeps)."""
        self.on_finished: Callable[[str, float], None] | None = None
        """Also told of each call's outcome and duration."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tallies: list[Tally] = []
        self._retired = Tally(None)
        self._fold_at = 16

    def _tally(self) -> Tally:
        try:
            tally: Tally = self._local.tally
        except AttributeError:
            tally = self._local.tally = Tally(threading.current_thread())
            with self._lock:
                self._tallies.append(tally)
                if len(self._tallies) >= self._fold_at:
                    self._fold_finished_threads()
                    self._fold_at = max(16, 2 * len(self._tallies))
        return tally

    def _fold_finished_threads(self) -> None:
        """Add the tallies of threads that ended into one (called holding the lock)."""
        live: list[Tally] = []
        for tally in self._tallies:
            thread = None if tally.thread is None else tally.thread()
            if tally.thread is not None and (thread is None or not thread.is_alive()):
                self._retired.add_ends(tally)
                self._retired.add_middles(tally)
                self._retired.add_starts(tally)
            else:
                live.append(tally)
        self._tallies = live

    def totals(self) -> Tally:
        """Add every thread's tally up; later stages are read first (see the module)."""
        total = Tally(None)
        with self._lock:  # no tally is folded into the retired one meanwhile
            self._fold_finished_threads()
            tallies = [self._retired, *self._tallies]
            for tally in tallies:
                total.add_ends(tally)
            for tally in tallies:
                total.add_middles(tally)
            for tally in tallies:
                total.add_starts(tally)
        return total

    def submitted(self) -> None:
        """Count a call submitted, now waiting for a thread."""
        try:
            tally: Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally.submitted += 1

    def started(self, waited: float) -> None:
        """Count a call a thread picked up after ``waited`` seconds."""
        try:
            tally: Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally.started += 1
        tally.wait[0 if waited <= _FIRST_BOUND else bisect_left(DURATION_BUCKETS, waited)] += 1
        tally.wait_sum += waited
        on_started = self.on_started  # read once: detach() may clear it meanwhile
        if on_started is not None:
            on_started(waited)

    def finished(self, outcome: str, duration: float, trace: tuple[int, int] | None = None) -> None:
        """Count a call that ran for ``duration`` seconds and ended with ``outcome``.

        ``trace`` (trace and span id of the call's span) becomes the exemplar
        of the duration bucket the call falls in.
        """
        try:
            tally: Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally.finished[_OUTCOME_INDEX[outcome]] += 1
        bucket = 0 if duration <= _FIRST_BOUND else bisect_left(DURATION_BUCKETS, duration)
        tally.duration[bucket] += 1
        tally.duration_sum += duration
        if trace is not None:
            exemplars = tally.exemplars
            if exemplars is None:
                exemplars = tally.exemplars = _no_exemplars()
            exemplars[bucket] = (trace[0], trace[1], duration, time.time())
        on_finished = self.on_finished  # read once: detach() may clear it meanwhile
        if on_finished is not None:
            on_finished(outcome, duration)

    def skipped(self, outcome: str) -> None:
        """Count a call that ended with ``outcome`` before a thread picked it up."""
        self._tally().skipped[_OUTCOME_INDEX[outcome]] += 1

    def limit_waited(self, seconds: float) -> None:
        """Count ``seconds`` a call waited for a place under its limit."""
        tally = self._tally()
        tally.limit_wait[bisect_left(DURATION_BUCKETS, seconds)] += 1
        tally.limit_wait_sum += seconds

    def thread_started(self) -> None:
        """Count a dedicated thread started."""
        self._tally().threads_started += 1

    def thread_finished(self) -> None:
        """Count a dedicated thread about to end."""
        self._tally().threads_finished += 1

    def items_yielded(self, count: int) -> None:
        """Count ``count`` more items handed to the consumer."""
        self._tally().items += count

    def backpressure(self, seconds: float) -> None:
        """Count ``seconds`` a producer waited on a full channel."""
        self._tally().blocked += seconds

    def generator_cancelled(self, reason: str) -> None:
        """Count a generator stopped before its end for ``reason``."""
        self._tally().cancellations[_REASON_INDEX[reason]] += 1

    def slow(self) -> None:
        """Count a call (or a generator's stall) the watchdog found running too long."""
        self._tally().slow += 1


class StreamTotals(NamedTuple):
    """The live channels of one (function, kind), added up."""

    depth: float
    """Items buffered."""
    capacity: float
    """Capacity of the bounded channels."""
    unbounded: int
    """How many channels have no bound."""
    active: int
    """How many iterators are running."""


class Streams:
    """The live channels, whose depth and capacity are read at scrape time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._tokens = itertools.count()
        self.live: dict[int, tuple[tuple[str, str], int, Callable[[], int]]] = {}
        self.seen: set[tuple[str, str]] = set()

    def add(self, function: str, kind: str, capacity: int, depth: Callable[[], int]) -> int:
        token = next(self._tokens)
        with self.lock:
            self.live[token] = ((function, kind), capacity, depth)
            self.seen.add((function, kind))
        return token

    def remove(self, token: object) -> None:
        with self.lock:
            self.live.pop(token, None)  # type: ignore[call-overload]

    def totals(self) -> dict[tuple[str, str], StreamTotals]:
        """Per (function, kind) seen so far, its live channels added up (zeros if none)."""
        with self.lock:
            live = list(self.live.values())
            seen = sorted(self.seen)
        sums = {labels: [0.0, 0.0, 0, 0] for labels in seen}
        for labels, capacity, read_depth in live:
            counted = sums[labels]
            counted[0] += read_depth()
            if capacity:
                counted[1] += capacity
            else:
                counted[2] += 1
            counted[3] += 1
        return {
            labels: StreamTotals(float(depth), float(bounded), int(unbounded), int(active))
            for labels, (depth, bounded, unbounded, active) in sums.items()
        }


class Tallies:
    """Every series and live stream of one metrics backend; implements ``Metrics``."""

    def __init__(self) -> None:
        self.all_series: dict[tuple[str, str], TallySeries] = {}
        self.lock = threading.Lock()
        self.streams = Streams()
        self.exporters: set[str] = set()
        """The backends that report these tallies."""
        self._on_new_series: list[Callable[[TallySeries], None]] = []

    def series(self, kind: str, function: str) -> TallySeries:
        """Return the series of ``function`` of ``kind``, created on first use."""
        return made_once(self.all_series, (kind, function), self.lock, self._new)

    def _new(self, key: tuple[str, str]) -> TallySeries:
        kind, function = key
        series = TallySeries(function, kind)
        for attach in self._on_new_series:
            attach(series)
        return series

    def attach(self, exporter: Callable[[TallySeries], None]) -> None:
        """Call ``exporter`` with every series, now and as each is created."""
        with self.lock:
            self._on_new_series.append(exporter)
            for series in self.all_series.values():
                exporter(series)

    def detach(self) -> None:
        """Forget the exporters ``attach`` was given, and their hooks."""
        with self.lock:
            self.exporters.discard("opentelemetry_metrics")
            self._on_new_series.clear()
            for series in self.all_series.values():
                series.on_started = series.on_finished = None

    def snapshot(self) -> list[TallySeries]:
        """Every series so far."""
        with self.lock:
            return list(self.all_series.values())

    def stream_opened(
        self, kind: str, function: str, capacity: int, depth: Callable[[], int]
    ) -> object:
        """Record that an iterator's generator started; return a token for ``stream_closed``."""
        return self.streams.add(function, kind, capacity, depth)

    def stream_closed(self, token: object) -> None:
        """Record that the iterator's generator ended."""
        self.streams.remove(token)
