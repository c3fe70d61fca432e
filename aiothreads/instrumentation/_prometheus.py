"""Prometheus metrics for threaded calls, separate threads and threaded iterators.

Every series carries ``function`` (the module-qualified name of the decorated
function) and ``kind`` (threaded, separate, iterable, iterable_separate,
sync_await); never an argument value. Calls count into per-thread tallies
(``._tallies``); a scrape adds them up, derives the gauges and reads the
live channels' depth and capacity, so streaming items costs nothing for them.

With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus-client's multiprocess mode),
see ``._prometheus_multiprocess`` instead.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, Final

from .._outcomes import Refusal
from .._pool_state import pool_states
from ._tallies import (
    DURATION_BUCKETS,
    ITERABLE_KINDS,
    OUTCOMES,
    REASONS,
    SEPARATE_KINDS,
    Tallies,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._tallies import Exemplar, Tally

__all__ = ["DURATION_BUCKETS", "LABELS", "METRICS", "POOL_METRICS", "PrometheusMetrics"]

LABELS: Final = ("function", "kind")


METRICS: Final = {
    "aiothreads_calls_started_total": "Calls submitted to a thread, by function and kind.",
    "aiothreads_calls_finished_total": "Calls that ended, by function, kind and outcome.",
    "aiothreads_calls_slow_total": (
        "Calls that ran, and generators that went without an item, longer than the "
        "slow-call threshold (counted once each)."
    ),
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
    "aiothreads_pool_threads": "Worker threads of a thread pool, by state (busy, idle).",
    "aiothreads_pool_threads_max": "The most worker threads a thread pool may have.",
    "aiothreads_pool_queued": "Calls waiting for a worker of a thread pool, from any submitter.",
    "aiothreads_pool_refused_total": (
        "Calls a thread pool refused or dropped before they ran, by reason "
        "(shut_down, rejected, dropped)."
    ),
}

POOL_METRICS: Final = (
    "aiothreads_pool_threads",
    "aiothreads_pool_threads_max",
    "aiothreads_pool_queued",
    "aiothreads_pool_refused_total",
)
"""The metrics of the pools themselves, labelled by ``pool``, not ``function`` and ``kind``."""


class PrometheusMetrics(Tallies):
    """aiothreads' metrics on one registry (a prometheus-client ``CollectorRegistry``)."""

    def __init__(self, registry: Any) -> None:
        super().__init__()
        registry.register(_Collector(self))
        self.exporters.add("prometheus")


class _Collector:
    """Turns the tallies and live channels into metric families when Prometheus scrapes."""

    def __init__(self, tallies: Tallies) -> None:
        from prometheus_client import core  # noqa: PLC0415 - the extra is optional

        self._core = core
        self._exemplar = core.Exemplar
        self._bounds = [str(bound) for bound in DURATION_BUCKETS]  # as prometheus-client has them
        self._tallies = tallies

    def _family(self, kind: str, full: str, *extra: str) -> Any:
        make = {
            "counter": self._core.CounterMetricFamily,
            "gauge": self._core.GaugeMetricFamily,
            "histogram": self._core.HistogramMetricFamily,
        }[kind]
        labels = ["pool", *extra] if full in POOL_METRICS else [*LABELS, *extra]
        return make(full.removesuffix("_total"), METRICS[full], labels=labels)

    def describe(self) -> Iterator[Any]:
        """Name the families, so the registry refuses a second owner of their names."""
        return iter(self._empty_families().values())

    def _empty_families(self) -> dict[str, Any]:
        counters = (
            "aiothreads_calls_started_total",
            "aiothreads_calls_slow_total",
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
        families["aiothreads_pool_threads"] = self._family(
            "gauge", "aiothreads_pool_threads", "state"
        )
        for full in ("aiothreads_pool_threads_max", "aiothreads_pool_queued"):
            families[full] = self._family("gauge", full)
        families["aiothreads_pool_refused_total"] = self._family(
            "counter", "aiothreads_pool_refused_total", "reason"
        )
        return families

    def collect(self) -> Iterator[Any]:
        """Add every series up and report it, with the live channels."""
        families = self._empty_families()
        for series in self._tallies.snapshot():
            self._report(families, series.labels, series.totals())
        self._report_streams(families)
        self._report_pools(families)
        return iter(families.values())

    def _report_pools(self, families: dict[str, Any]) -> None:
        """Read the pools now: their threads, maximum, queue and refusals."""
        for pool in pool_states():
            name = pool.name
            if pool.busy is not None and pool.idle is not None:
                families["aiothreads_pool_threads"].add_metric([name, "busy"], pool.busy)
                families["aiothreads_pool_threads"].add_metric([name, "idle"], pool.idle)
            if pool.maximum is not None:
                families["aiothreads_pool_threads_max"].add_metric([name], pool.maximum)
            if pool.queued is not None:
                families["aiothreads_pool_queued"].add_metric([name], pool.queued)
            for reason in Refusal:
                families["aiothreads_pool_refused_total"].add_metric(
                    [name, reason.value], pool.refused.get(reason, 0)
                )

    def _report(self, families: dict[str, Any], labels: list[str], total: Tally) -> None:
        families["aiothreads_calls_started_total"].add_metric(labels, total.submitted)
        for index, outcome in enumerate(OUTCOMES):
            families["aiothreads_calls_finished_total"].add_metric(
                [*labels, outcome.value], total.ended(index)
            )
        families["aiothreads_calls_slow_total"].add_metric(labels, total.slow)
        families["aiothreads_calls_queued"].add_metric(labels, total.queued())
        families["aiothreads_calls_in_flight"].add_metric(labels, total.in_flight())
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
        if kind in SEPARATE_KINDS:
            families["aiothreads_separate_threads_started_total"].add_metric(
                labels, total.threads_started
            )
            families["aiothreads_separate_threads_alive"].add_metric(labels, total.threads_alive())
        if kind in ITERABLE_KINDS:
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
        exemplars: list[Exemplar | None] | None = None,
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
        for labels, total in self._tallies.streams.totals().items():
            capacity = math.inf if total.unbounded else total.capacity
            families["aiothreads_channel_depth"].add_metric(list(labels), total.depth)
            families["aiothreads_channel_capacity"].add_metric(list(labels), capacity)
            families["aiothreads_iterators_active"].add_metric(list(labels), float(total.active))
