"""Prometheus metrics for threaded calls, separate threads and threaded iterators.

Every series carries ``function`` (the module-qualified name of the decorated
function) and ``kind`` (threaded, separate, iterable, iterable_separate,
sync_await); never an argument value. Channel depth and capacity are read when
Prometheus scrapes, so streaming items costs nothing for them.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["METRICS", "PrometheusMetrics"]

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


def _name(full: str) -> str:
    """prometheus-client adds ``_total`` to counters itself."""
    return full.removesuffix("_total")


class PrometheusMetrics:
    """Owns aiothreads' metrics on one registry (prometheus-client's default if ``None``)."""

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client  # noqa: PLC0415 - the extra is optional

        if registry is None:
            registry = prometheus_client.REGISTRY
        counter, gauge, histogram = (
            prometheus_client.Counter,
            prometheus_client.Gauge,
            prometheus_client.Histogram,
        )

        def make(kind: Any, full: str, *extra: str, **options: Any) -> Any:
            return kind(_name(full), METRICS[full], [*LABELS, *extra], registry=registry, **options)

        self._started = make(counter, "aiothreads_calls_started_total")
        self._finished = make(counter, "aiothreads_calls_finished_total", "outcome")
        self._duration = make(
            histogram, "aiothreads_call_duration_seconds", buckets=DURATION_BUCKETS
        )
        self._wait = make(histogram, "aiothreads_call_wait_seconds", buckets=DURATION_BUCKETS)
        self._limit_wait = make(
            histogram, "aiothreads_limit_wait_seconds", buckets=DURATION_BUCKETS
        )
        self._in_flight = make(gauge, "aiothreads_calls_in_flight")
        self._queued = make(gauge, "aiothreads_calls_queued")
        self._threads_alive = make(gauge, "aiothreads_separate_threads_alive")
        self._threads_started = make(counter, "aiothreads_separate_threads_started_total")
        self._items = make(counter, "aiothreads_items_yielded_total")
        self._blocked = make(counter, "aiothreads_producer_blocked_seconds_total")
        self._cancellations = make(counter, "aiothreads_generator_cancellations_total", "reason")
        self._per_series_families = (
            self._started,
            self._duration,
            self._wait,
            self._in_flight,
            self._queued,
            self._threads_alive,
            self._threads_started,
            self._items,
            self._blocked,
        )
        self._streams = _StreamCollector()
        registry.register(self._streams)
        self._series: dict[tuple[str, str], _Series] = {}
        self._series_lock = threading.Lock()

    def _for(self, kind: str, function: str) -> _Series:
        series = self._series.get((kind, function))
        if series is None:
            with self._series_lock:
                series = self._series.get((kind, function))
                if series is None:
                    series = self._series[(kind, function)] = _Series(
                        *(family.labels(function, kind) for family in self._per_series_families)
                    )
        return series

    def call_submitted(self, kind: str, function: str) -> None:
        """Record that a call was submitted and waits for a thread."""
        series = self._for(kind, function)
        series.started.inc()
        series.queued.inc()

    def call_started(self, kind: str, function: str, waited: float) -> None:
        """Record that a thread picked the call up after ``waited`` seconds."""
        series = self._for(kind, function)
        series.queued.dec()
        series.in_flight.inc()
        series.wait.observe(waited)

    def call_finished(self, kind: str, function: str, outcome: str, duration: float) -> None:
        """Record that a call that ran for ``duration`` seconds ended with ``outcome``."""
        series = self._for(kind, function)
        series.in_flight.dec()
        series.duration.observe(duration)
        self._finished.labels(function, kind, outcome).inc()

    def call_skipped(self, kind: str, function: str, outcome: str) -> None:
        """Record that a call ended (``outcome``) before a thread picked it up."""
        series = self._for(kind, function)
        series.queued.dec()
        self._finished.labels(function, kind, outcome).inc()

    def limit_waited(self, kind: str, function: str, seconds: float) -> None:
        """Record that a call waited ``seconds`` for a place under its limit."""
        self._limit_wait.labels(function, kind).observe(seconds)

    def thread_started(self, kind: str, function: str) -> None:
        """Record that a dedicated thread started."""
        series = self._for(kind, function)
        series.threads_started.inc()
        series.threads_alive.inc()

    def thread_finished(self, kind: str, function: str) -> None:
        """Record that a dedicated thread is about to end."""
        self._for(kind, function).threads_alive.dec()

    def stream_opened(
        self, kind: str, function: str, capacity: int, depth: Callable[[], int]
    ) -> object:
        """Record that an iterator's generator started; return a token for ``stream_closed``."""
        return self._streams.add(function, kind, capacity, depth)

    def stream_closed(self, token: object) -> None:
        """Record that the iterator's generator ended."""
        self._streams.remove(token)

    def items_yielded(self, kind: str, function: str, count: int) -> None:
        """``count`` more items were handed to the consumer."""
        self._for(kind, function).items.inc(count)

    def backpressure(self, kind: str, function: str, seconds: float) -> None:
        """Record that a producer waited ``seconds`` on a full channel."""
        self._for(kind, function).blocked.inc(seconds)

    def generator_cancelled(self, kind: str, function: str, reason: str) -> None:
        """Record that a generator was stopped before its end for ``reason``."""
        self._cancellations.labels(function, kind, reason).inc()


class _Series:
    """The labelled children of one (function, kind), looked up once."""

    __slots__ = (
        "blocked",
        "duration",
        "in_flight",
        "items",
        "queued",
        "started",
        "threads_alive",
        "threads_started",
        "wait",
    )

    def __init__(  # noqa: PLR0917 - one child per family, in _per_series_families' order
        self,
        started: Any,
        duration: Any,
        wait: Any,
        in_flight: Any,
        queued: Any,
        threads_alive: Any,
        threads_started: Any,
        items: Any,
        blocked: Any,
    ) -> None:
        self.started = started
        self.duration = duration
        self.wait = wait
        self.in_flight = in_flight
        self.queued = queued
        self.threads_alive = threads_alive
        self.threads_started = threads_started
        self.items = items
        self.blocked = blocked


class _StreamCollector:
    """Reports depth and capacity of live channels when Prometheus scrapes."""

    def __init__(self) -> None:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - optional extra

        self._family = GaugeMetricFamily
        self._lock = threading.Lock()
        self._tokens = itertools.count()
        self._streams: dict[int, tuple[tuple[str, str], int, Callable[[], int]]] = {}
        self._seen: set[tuple[str, str]] = set()

    def add(self, function: str, kind: str, capacity: int, depth: Callable[[], int]) -> int:
        token = next(self._tokens)
        with self._lock:
            self._streams[token] = ((function, kind), capacity, depth)
            self._seen.add((function, kind))
        return token

    def remove(self, token: object) -> None:
        with self._lock:
            self._streams.pop(token, None)  # type: ignore[call-overload]

    def describe(self) -> Iterator[Any]:
        for full in (
            "aiothreads_channel_depth",
            "aiothreads_channel_capacity",
            "aiothreads_iterators_active",
        ):
            yield self._family(full, METRICS[full], labels=LABELS)

    def collect(self) -> Iterator[Any]:
        with self._lock:
            streams = list(self._streams.values())
            seen = sorted(self._seen)
        depth: defaultdict[tuple[str, str], float] = defaultdict(float)
        capacity: defaultdict[tuple[str, str], float] = defaultdict(float)
        active: defaultdict[tuple[str, str], float] = defaultdict(float)
        for labels, size, read_depth in streams:
            depth[labels] += read_depth()
            capacity[labels] += size if size else math.inf
            active[labels] += 1
        families: list[Any] = []
        for full, values in (
            ("aiothreads_channel_depth", depth),
            ("aiothreads_channel_capacity", capacity),
            ("aiothreads_iterators_active", active),
        ):
            family = self._family(full, METRICS[full], labels=LABELS)
            for labels in seen:
                family.add_metric(list(labels), values.get(labels, 0.0))
            families.append(family)
        yield from families
