"""Prometheus metrics for threaded calls, separate threads and threaded iterators.

Every series carries ``function`` (the module-qualified name of the decorated
function) and ``kind`` (threaded, separate, iterable, iterable_separate,
sync_await); never an argument value.

A call costs a few integer additions: each thread counts into tallies of its
own (one per series), which no other thread writes, so counting needs no
lock. A scrape adds the tallies up and derives the gauges from the counters
(queued = submitted - started - skipped, in flight = started - finished).
Because a scrape reads the counters of later stages first, a derived gauge is
never negative and counts are exact. Channel depth and capacity are read at
scrape time too, so streaming items costs nothing for them.

With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus-client's multiprocess mode),
see :mod:`._prometheus_multiprocess` instead.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final

from .._outcomes import Outcome, StopReason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["DURATION_BUCKETS", "LABELS", "METRICS", "PrometheusMetrics"]

LABELS: Final = ("function", "kind")

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

METRICS: Final = {
    "aiothreads_calls_started_total": "Calls submitted to a thread, by function and kind.",
    "aiothreads_calls_finished_total": "Calls that ended, by function, kind and outcome.",
    "aiothreads_call_duration_seconds": "Time a call ran in its thread.",
    "aiothreads_call_wait_seconds": "Time a call waited for a worker thread to pick it up.",
    "aiothreads_limit_wait_seconds": (
        "Time calls and iterators waited for a place under their limit= before starting."
    ),
    "aiothreads_calls_in_flight": "Calls running in a thread now.",
    "aiothreads_calls_queued": "Calls submitted and waiting for a worker thread.",
    "aiothreads_separate_threads_alive": "Dedicated threads running now.",
    "aiothreads_separate_threads_started_total": "Dedicated threads started.",
    "aiothreads_items_yielded_total": "Items threaded generators handed to consumers.",
    "aiothreads_producer_blocked_seconds_total": (
        "Time generator threads spent blocked on a full channel (backpressure)."
    ),
    "aiothreads_generator_cancellations_total": (
        "Generators stopped before their end, by reason "
        "(closed, break, cancelled, collected, loop_closed, error)."
    ),
    "aiothreads_channel_depth": "Items buffered between generator threads and consumers.",
    "aiothreads_channel_capacity": "Capacity of the live channels (+Inf when unbounded).",
    "aiothreads_iterators_active": "Threaded iterators whose generator has started and not ended.",
}

OUTCOMES: Final = tuple(Outcome)
REASONS: Final = tuple(StopReason)
_OUTCOME_INDEX: Final[dict[str, int]] = {str(o): index for index, o in enumerate(OUTCOMES)}
_REASON_INDEX: Final[dict[str, int]] = {str(r): index for index, r in enumerate(REASONS)}
_BUCKETS: Final = len(DURATION_BUCKETS) + 1


class _Tally:
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
        "started",
        "submitted",
        "thread",
        "threads_finished",
        "threads_started",
        "wait",
        "wait_sum",
    )

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = thread
        self.submitted = 0
        self.started = 0
        self.finished = [0] * len(OUTCOMES)
        self.skipped = [0] * len(OUTCOMES)
        self.wait = [0] * _BUCKETS
        self.wait_sum = 0.0
        self.duration = [0] * _BUCKETS
        self.duration_sum = 0.0
        self.exemplars: list[_Exemplar | None] | None = None  # per duration bucket, if traced
        self.limit_wait = [0] * _BUCKETS
        self.limit_wait_sum = 0.0
        self.threads_started = 0
        self.threads_finished = 0
        self.items = 0
        self.blocked = 0.0
        self.cancellations = [0] * len(REASONS)

    def add_ends(self, other: _Tally) -> None:
        """Add what ``other`` counted at the ends of calls (read before their starts)."""
        _add_into(self.finished, other.finished)
        _add_into(self.skipped, other.skipped)
        self.threads_finished += other.threads_finished

    def add_middles(self, other: _Tally) -> None:
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

    def add_starts(self, other: _Tally) -> None:
        """Add what ``other`` counted at submission (read last)."""
        self.submitted += other.submitted


_Exemplar = tuple[int, int, float, float]
"""(trace id, span id, observed value, Unix time) of the latest call in a bucket."""


def _latest(
    mine: list[_Exemplar | None] | None, theirs: list[_Exemplar | None]
) -> list[_Exemplar | None]:
    """Per bucket, the newer of two exemplars."""
    if mine is None:
        return list(theirs)
    return [
        b if a is None or (b is not None and b[3] > a[3]) else a
        for a, b in zip(mine, theirs, strict=True)
    ]


def _no_exemplars() -> list[_Exemplar | None]:
    return [None] * _BUCKETS


def _add_into(total: list[Any], part: list[Any]) -> None:
    for index, value in enumerate(part):
        total[index] += value


class _Series:
    """The counts of one (function, kind): a tally per thread that counted."""

    __slots__ = ("_fold_at", "_local", "_lock", "_retired", "_tallies", "labels")

    def __init__(self, function: str, kind: str) -> None:
        self.labels = [function, kind]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tallies: list[_Tally] = []
        self._retired = _Tally(None)
        self._fold_at = 16

    def _tally(self) -> _Tally:
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._local.tally = _Tally(threading.current_thread())
            with self._lock:
                self._tallies.append(tally)
                if len(self._tallies) >= self._fold_at:
                    self._fold_finished_threads()
                    self._fold_at = max(16, 2 * len(self._tallies))
        return tally

    def _fold_finished_threads(self) -> None:
        """Add the tallies of threads that ended into one (called holding the lock)."""
        live: list[_Tally] = []
        for tally in self._tallies:
            thread = tally.thread
            if thread is not None and not thread.is_alive():
                self._retired.add_ends(tally)
                self._retired.add_middles(tally)
                self._retired.add_starts(tally)
            else:
                live.append(tally)
        self._tallies = live

    def totals(self) -> _Tally:
        """Add every thread's tally up; later stages are read first (see the module)."""
        total = _Tally(None)
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
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally.submitted += 1

    def started(self, waited: float) -> None:
        """Count a call a thread picked up after ``waited`` seconds."""
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally.started += 1
        tally.wait[bisect_left(DURATION_BUCKETS, waited)] += 1
        tally.wait_sum += waited

    def finished(self, outcome: str, duration: float, trace: tuple[int, int] | None = None) -> None:
        """Count a call that ran for ``duration`` seconds and ended with ``outcome``.

        ``trace`` (trace and span id of the call's span) becomes the exemplar
        of the duration bucket the call falls in.
        """
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally.finished[_OUTCOME_INDEX[outcome]] += 1
        bucket = bisect_left(DURATION_BUCKETS, duration)
        tally.duration[bucket] += 1
        tally.duration_sum += duration
        if trace is not None:
            exemplars = tally.exemplars
            if exemplars is None:
                exemplars = tally.exemplars = _no_exemplars()
            exemplars[bucket] = (trace[0], trace[1], duration, time.time())

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


class PrometheusMetrics:
    """Owns aiothreads' metrics on one registry (prometheus-client's default if ``None``)."""

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client  # noqa: PLC0415 - the extra is optional

        if registry is None:
            registry = prometheus_client.REGISTRY
        self._series: dict[tuple[str, str], _Series] = {}
        self._series_lock = threading.Lock()
        self._streams = _Streams()
        registry.register(_Collector(self._series, self._series_lock, self._streams))

    def series(self, kind: str, function: str) -> _Series:
        """Return the series of ``function`` of ``kind``, created on first use."""
        series = self._series.get((kind, function))
        if series is None:
            with self._series_lock:
                series = self._series.get((kind, function))
                if series is None:
                    series = self._series[kind, function] = _Series(function, kind)
        return series

    def stream_opened(
        self, kind: str, function: str, capacity: int, depth: Callable[[], int]
    ) -> object:
        """Record that an iterator's generator started; return a token for ``stream_closed``."""
        return self._streams.add(function, kind, capacity, depth)

    def stream_closed(self, token: object) -> None:
        """Record that the iterator's generator ended."""
        self._streams.remove(token)


class _Streams:
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


class _Collector:
    """Turns the tallies and live channels into metric families when Prometheus scrapes."""

    def __init__(
        self, series: dict[tuple[str, str], _Series], lock: threading.Lock, streams: _Streams
    ) -> None:
        from prometheus_client import core  # noqa: PLC0415 - the extra is optional

        self._core = core
        self._exemplar = core.Exemplar
        self._bounds = [
            str(bound) for bound in DURATION_BUCKETS
        ]  # as prometheus-client writes them
        self._series = series
        self._lock = lock
        self._streams = streams

    def _family(self, kind: str, full: str, *extra: str) -> Any:
        make = {
            "counter": self._core.CounterMetricFamily,
            "gauge": self._core.GaugeMetricFamily,
            "histogram": self._core.HistogramMetricFamily,
        }[kind]
        return make(full.removesuffix("_total"), METRICS[full], labels=[*LABELS, *extra])

    def describe(self) -> Iterator[Any]:
        """Name the families, so the registry refuses a second owner of their names."""
        return iter(self._empty_families().values())

    def _empty_families(self) -> dict[str, Any]:
        counters = (
            "aiothreads_calls_started_total",
            "aiothreads_separate_threads_started_total",
            "aiothreads_items_yielded_total",
            "aiothreads_producer_blocked_seconds_total",
        )
        gauges = (
            "aiothreads_calls_in_flight",
            "aiothreads_calls_queued",
            "aiothreads_separate_threads_alive",
            "aiothreads_channel_depth",
            "aiothreads_channel_capacity",
            "aiothreads_iterators_active",
        )
        histograms = (
            "aiothreads_call_duration_seconds",
            "aiothreads_call_wait_seconds",
            "aiothreads_limit_wait_seconds",
        )
        families = {full: self._family("counter", full) for full in counters}
        families["aiothreads_calls_finished_total"] = self._family(
            "counter", "aiothreads_calls_finished_total", "outcome"
        )
        families["aiothreads_generator_cancellations_total"] = self._family(
            "counter", "aiothreads_generator_cancellations_total", "reason"
        )
        families.update((full, self._family("gauge", full)) for full in gauges)
        families.update((full, self._family("histogram", full)) for full in histograms)
        return families

    def collect(self) -> Iterator[Any]:
        """Add every series up and report it, with the live channels."""
        families = self._empty_families()
        with self._lock:
            all_series = list(self._series.values())
        for series in all_series:
            self._report(families, series.labels, series.totals())
        self._report_streams(families)
        return iter(families.values())

    def _report(self, families: dict[str, Any], labels: list[str], total: _Tally) -> None:
        families["aiothreads_calls_started_total"].add_metric(labels, total.submitted)
        for index, outcome in enumerate(OUTCOMES):
            families["aiothreads_calls_finished_total"].add_metric(
                [*labels, outcome.value], total.finished[index] + total.skipped[index]
            )
        families["aiothreads_calls_queued"].add_metric(
            labels, max(0, total.submitted - total.started - sum(total.skipped))
        )
        families["aiothreads_calls_in_flight"].add_metric(
            labels, max(0, total.started - sum(total.finished))
        )
        self._histogram(
            families, "aiothreads_call_wait_seconds", labels, total.wait, total.wait_sum
        )
        self._histogram(
            families,
            "aiothreads_call_duration_seconds",
            labels,
            total.duration,
            total.duration_sum,
            total.exemplars,
        )
        if any(total.limit_wait):
            self._histogram(
                families,
                "aiothreads_limit_wait_seconds",
                labels,
                total.limit_wait,
                total.limit_wait_sum,
            )
        kind = labels[1]
        if kind in ("separate", "iterable_separate"):
            families["aiothreads_separate_threads_started_total"].add_metric(
                labels, total.threads_started
            )
            families["aiothreads_separate_threads_alive"].add_metric(
                labels, max(0, total.threads_started - total.threads_finished)
            )
        if kind in ("iterable", "iterable_separate"):
            families["aiothreads_items_yielded_total"].add_metric(labels, total.items)
            families["aiothreads_producer_blocked_seconds_total"].add_metric(labels, total.blocked)
        for index, reason in enumerate(REASONS):
            if total.cancellations[index]:
                families["aiothreads_generator_cancellations_total"].add_metric(
                    [*labels, reason.value], total.cancellations[index]
                )

    def _histogram(  # noqa: PLR0917 - one histogram: its family, series and values
        self,
        families: dict[str, Any],
        full: str,
        labels: list[str],
        counts: list[int],
        sum_: float,
        exemplars: list[_Exemplar | None] | None = None,
    ) -> None:
        cumulative = list(itertools.accumulate(counts))
        bounds = [*self._bounds, "+Inf"]
        buckets: list[Any] = []
        for index, (bound, count) in enumerate(zip(bounds, cumulative, strict=True)):
            exemplar = None if exemplars is None else exemplars[index]
            if exemplar is None:
                buckets.append((bound, count))
                continue
            trace_id, span_id, value, timestamp = exemplar
            ids = {"trace_id": format(trace_id, "032x"), "span_id": format(span_id, "016x")}
            buckets.append((bound, count, self._exemplar(ids, value, timestamp)))
        families[full].add_metric(labels, buckets, sum_)

    def _report_streams(self, families: dict[str, Any]) -> None:
        streams = self._streams
        with streams.lock:
            live = list(streams.live.values())
            seen = sorted(streams.seen)
        depth: defaultdict[tuple[str, str], float] = defaultdict(float)
        capacity: defaultdict[tuple[str, str], float] = defaultdict(float)
        active: defaultdict[tuple[str, str], float] = defaultdict(float)
        for labels, size, read_depth in live:
            depth[labels] += read_depth()
            capacity[labels] += size if size else math.inf
            active[labels] += 1
        for full, values in (
            ("aiothreads_channel_depth", depth),
            ("aiothreads_channel_capacity", capacity),
            ("aiothreads_iterators_active", active),
        ):
            for labels in seen:
                families[full].add_metric(list(labels), values.get(labels, 0.0))
