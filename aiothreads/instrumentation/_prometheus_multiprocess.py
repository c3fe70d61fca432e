"""Prometheus metrics for pre-forking servers (prometheus-client's multiprocess mode).

With ``PROMETHEUS_MULTIPROC_DIR`` set, every worker process writes its values
to files there and a ``MultiProcessCollector`` adds them up at scrape time.
Only prometheus-client's own metric objects take part in that, so this backend
counts through them (slower per call than ``._prometheus``), and its gauges
use the ``livesum`` mode: a worker that exited stops counting. Channel depth is
written when producers report items (every 256) or block, since no scrape
reaches a worker; capacity counts bounded channels only.

Of the pools' metrics, refusals are written as they are counted, and every
pool's numbers when a pool is first watched or shut down
(``_pool_state.observe``). Busy and idle threads and calls waiting for a
worker change with every call: a call only pokes a writer thread
(``._pool_publisher``), which writes them at once and then every second while
a pool has work, so a call pays no file write for them.
"""

from __future__ import annotations

import functools
import itertools
import threading
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .._outcomes import Refusal
from .._pool_state import observe, pool_states
from ._pool_publisher import PoolPublisher
from ._prometheus import DURATION_BUCKETS, LABELS, METRICS
from ._tallies import made_once

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MultiprocessMetrics", "multiprocess_mode"]

P = ParamSpec("P")
R = TypeVar("R")


def _never_raises(method: Callable[P, R]) -> Callable[P, R | None]:
    """Swallow what ``method`` raises: probes call series methods unguarded.

    In this mode a value is written to a file; a full disk must not break a call.
    """

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return method(*args, **kwargs)
        except Exception:  # telemetry must never break the observed call
            return None

    return guarded


def multiprocess_mode() -> bool:
    """Whether prometheus-client runs in multiprocess mode in this process."""
    import os  # noqa: PLC0415 - read when the backend is built

    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class MultiprocessMetrics:
    """aiothreads' metrics as prometheus-client metric objects on ``registry``."""

    def __init__(self, registry: Any) -> None:
        import prometheus_client  # noqa: PLC0415 - the extra is optional

        def make(kind: Any, full: str, *extra: str, **options: Any) -> Any:
            name = full.removesuffix("_total")
            return kind(name, METRICS[full], [*LABELS, *extra], registry=registry, **options)

        counter, gauge, histogram = (
            prometheus_client.Counter,
            prometheus_client.Gauge,
            prometheus_client.Histogram,
        )
        live = {"multiprocess_mode": "livesum"}
        self._families = (
            make(counter, "aiothreads_calls_started_total"),
            make(counter, "aiothreads_calls_finished_total", "outcome"),
            make(histogram, "aiothreads_call_duration_seconds", buckets=DURATION_BUCKETS),
            make(histogram, "aiothreads_call_wait_seconds", buckets=DURATION_BUCKETS),
            make(histogram, "aiothreads_limit_wait_seconds", buckets=DURATION_BUCKETS),
            make(gauge, "aiothreads_calls_in_flight", **live),
            make(gauge, "aiothreads_calls_queued", **live),
            make(gauge, "aiothreads_separate_threads_alive", **live),
            make(counter, "aiothreads_separate_threads_started_total"),
            make(counter, "aiothreads_items_yielded_total"),
            make(counter, "aiothreads_producer_blocked_seconds_total"),
            make(counter, "aiothreads_generator_cancellations_total", "reason"),
            make(counter, "aiothreads_calls_slow_total"),
        )
        self._depth = make(gauge, "aiothreads_channel_depth", **live)
        self._capacity = make(gauge, "aiothreads_channel_capacity", **live)
        self._active = make(gauge, "aiothreads_iterators_active", **live)
        self._series: dict[tuple[str, str], _ClientSeries] = {}
        self._lock = threading.Lock()
        self._tokens = itertools.count()
        self._streams: dict[int, tuple[tuple[str, str], int, Callable[[], int]]] = {}
        self._refusals = counter(
            "aiothreads_pool_refused",
            METRICS["aiothreads_pool_refused_total"],
            ["pool", "reason"],
            registry=registry,
        )
        self._maximum = gauge(
            "aiothreads_pool_threads_max",
            METRICS["aiothreads_pool_threads_max"],
            ["pool"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._threads = gauge(
            "aiothreads_pool_threads",
            METRICS["aiothreads_pool_threads"],
            ["pool", "state"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._queued = gauge(
            "aiothreads_pool_queued",
            METRICS["aiothreads_pool_queued"],
            ["pool"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._pools_lock = threading.Lock()
        self._written_pools: set[str] = set()
        """The pools this process wrote: 0 once none of that name is left."""
        self.publisher = PoolPublisher(self._write_pools)
        observe(self)
        self.pools_changed()

    @_never_raises
    def refused(self, name: str, reason: Refusal) -> None:
        """Count one call the pool named ``name`` refused or dropped for ``reason``."""
        self._refusals.labels(name, reason.value).inc()

    @_never_raises
    def pools_changed(self) -> None:
        """Write every pool's numbers, after a pool was watched or shut down."""
        self._write_pools()

    def _write_pools(self) -> bool:
        """Write what every pool holds now; return whether any has a busy worker or queued call.

        A number a pool cannot report (see ``_pool_state``) is left unwritten,
        or written as 0 where this process wrote it before: a pool shut down
        (reported for its refusals only) or gone no longer counts.
        """
        with self._pools_lock:  # one writer at a time: the last one read the newest state
            before = self._written_pools
            reported = {pool.name: pool for pool in pool_states()}
            active = False
            written: set[str] = set()
            for name in reported.keys() | before:
                pool = reported.get(name)
                if pool is not None:
                    for reason in Refusal:
                        self._refusals.labels(name, reason.value)  # present, at zero
                    active = active or bool(pool.busy) or bool(pool.queued)
                # A series is made only to be written: in multiprocess mode making
                # one writes it, at 0.
                numbers = (
                    (self._maximum, (name,), pool and pool.maximum),
                    (self._threads, (name, "busy"), pool and pool.busy),
                    (self._threads, (name, "idle"), pool and pool.idle),
                    (self._queued, (name,), pool and pool.queued),
                )
                for gauge, labels, value in numbers:
                    if value is not None:
                        gauge.labels(*labels).set(value)
                        written.add(name)
                    elif name in before:
                        gauge.labels(*labels).set(0)
            self._written_pools = written
            return active

    def series(self, kind: str, function: str) -> _ClientSeries:
        """Return the series of ``function`` of ``kind``, created on first use."""
        return made_once(self._series, (kind, function), self._lock, self._new)

    def _new(self, key: tuple[str, str]) -> _ClientSeries:
        kind, function = key
        for family in (self._depth, self._capacity, self._active):
            family.labels(function, kind)  # present, at zero, from the start
        return _ClientSeries(
            self._families, function, kind, self._refresh_depth, self.publisher.poke
        )

    @_never_raises
    def stream_opened(
        self, kind: str, function: str, capacity: int, depth: Callable[[], int]
    ) -> object:
        """Count an iterator whose generator started, and its capacity (if bounded)."""
        token = next(self._tokens)
        with self._lock:
            self._streams[token] = ((function, kind), capacity, depth)
        self._active.labels(function, kind).inc()
        if capacity:
            self._capacity.labels(function, kind).inc(capacity)
        return token

    @_never_raises
    def stream_closed(self, token: object) -> None:
        """Count the iterator's generator as ended."""
        if not isinstance(token, int):
            return
        with self._lock:
            stream = self._streams.pop(token, None)
        if stream is None:
            return
        (function, kind), capacity, _ = stream
        self._active.labels(function, kind).dec()
        if capacity:
            self._capacity.labels(function, kind).dec(capacity)
        self._refresh_depth(function, kind)

    def _refresh_depth(self, function: str, kind: str) -> None:
        """Write this process's buffered items for (function, kind) to its gauge.

        No scrape reaches a worker process here, so depth is written when its
        producers report items (every 256) or block, and when one ends.
        """
        with self._lock:
            readers = [
                depth for labels, _, depth in self._streams.values() if labels == (function, kind)
            ]
        self._depth.labels(function, kind).set(sum(read() for read in readers))


class _ClientSeries:  # every counting method is @_never_raises
    """The labelled metric objects of one (function, kind), looked up once."""

    def __init__(
        self,
        families: tuple[Any, ...],
        function: str,
        kind: str,
        refresh_depth: Callable[[str, str], None],
        pools_busier: Callable[[], None],
    ) -> None:
        self._refresh_depth = refresh_depth
        self._pools_busier = pools_busier
        (
            started,
            self._finished_family,
            duration,
            wait,
            limit_wait,
            in_flight,
            queued,
            threads_alive,
            threads_started,
            items,
            blocked,
            self._cancellations_family,
            slow,
        ) = families
        self._labels = (function, kind)
        self._started = started.labels(function, kind)
        self._duration = duration.labels(function, kind)
        self._wait = wait.labels(function, kind)
        self._limit_wait = limit_wait.labels(function, kind)
        self._in_flight = in_flight.labels(function, kind)
        self._queued = queued.labels(function, kind)
        self._threads_alive = threads_alive.labels(function, kind)
        self._threads_started = threads_started.labels(function, kind)
        self._items = items.labels(function, kind)
        self._blocked = blocked.labels(function, kind)
        self._slow = slow.labels(function, kind)
        self._finished = {
            outcome: self._finished_family.labels(function, kind, outcome)
            for outcome in ("ok", "error", "cancelled")
        }

    @_never_raises
    def submitted(self) -> None:
        """Count a call submitted, now waiting for a thread."""
        self._started.inc()
        self._queued.inc()
        self._pools_busier()

    @_never_raises
    def started(self, waited: float) -> None:
        """Count a call a thread picked up after ``waited`` seconds."""
        self._queued.dec()
        self._in_flight.inc()
        self._wait.observe(waited)

    @_never_raises
    def finished(self, outcome: str, duration: float, trace: tuple[int, int] | None = None) -> None:
        """Count a call that ran for ``duration`` seconds and ended with ``outcome``.

        Exemplars (``trace``) are not kept in multiprocess mode.
        """
        self._in_flight.dec()
        self._duration.observe(duration)
        self._finished[outcome].inc()

    @_never_raises
    def skipped(self, outcome: str) -> None:
        """Count a call that ended with ``outcome`` before a thread picked it up."""
        self._queued.dec()
        self._finished[outcome].inc()

    @_never_raises
    def limit_waited(self, seconds: float) -> None:
        """Count ``seconds`` a call waited for a place under its limit."""
        self._limit_wait.observe(seconds)

    @_never_raises
    def thread_started(self) -> None:
        """Count a dedicated thread started."""
        self._threads_started.inc()
        self._threads_alive.inc()

    @_never_raises
    def thread_finished(self) -> None:
        """Count a dedicated thread about to end."""
        self._threads_alive.dec()

    @_never_raises
    def items_yielded(self, count: int) -> None:
        """Count ``count`` more items handed to the consumer."""
        self._items.inc(count)
        self._refresh_depth(*self._labels)

    @_never_raises
    def backpressure(self, seconds: float) -> None:
        """Count ``seconds`` a producer waited on a full channel."""
        self._blocked.inc(seconds)
        self._refresh_depth(*self._labels)

    @_never_raises
    def generator_cancelled(self, reason: str) -> None:
        """Count a generator stopped before its end for ``reason``."""
        self._cancellations_family.labels(*self._labels, reason).inc()

    @_never_raises
    def slow(self) -> None:
        """Count a call (or a generator's stall) the watchdog found running too long."""
        self._slow.inc()
