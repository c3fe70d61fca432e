"""OpenTelemetry metrics for threaded calls, separate threads and threaded iterators.

For services that ship telemetry over OTLP rather than being scraped. The
instruments follow the OpenTelemetry naming rules (dotted names, UCUM units,
counts in curly braces) and carry the attributes ``function`` and ``kind``
(``outcome`` and ``reason`` where they apply), never an argument value.

A call costs two instrument operations: its wait for a thread and its
duration are histogram records. Everything else is counted in the per-thread
tallies of ``._tallies`` and read by observable instruments when the SDK
collects, so it costs nothing per call.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

from .._outcomes import Refusal
from .._pool_state import PoolState, pool_states
from .._version import __version__
from ._tallies import DURATION_BUCKETS, OUTCOMES, REASONS, Tallies, Tally

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._tallies import StreamTotals, TallySeries

__all__ = ["INSTRUMENTS", "OpenTelemetryMetrics", "global_meter_provider_installed"]

INSTRUMENTS: Final = {
    "aiothreads.call.duration": ("s", "Time a call ran in its thread."),
    "aiothreads.call.wait.duration": ("s", "Time a call waited for a thread to pick it up."),
    "aiothreads.call.started": ("{call}", "Calls submitted to a thread."),
    "aiothreads.call.finished": ("{call}", "Calls that ended, by outcome."),
    "aiothreads.call.active": ("{call}", "Calls running in a thread now."),
    "aiothreads.call.queued": ("{call}", "Calls waiting for a worker thread now."),
    "aiothreads.call.slow": (
        "{call}",
        "Calls (and generator stalls) that ran past the slow-call threshold.",
    ),
    "aiothreads.thread.started": ("{thread}", "Dedicated threads started."),
    "aiothreads.thread.active": ("{thread}", "Dedicated threads running now."),
    "aiothreads.generator.items": ("{item}", "Items threaded generators handed over."),
    "aiothreads.generator.blocked": ("s", "Time generator threads waited on a full channel."),
    "aiothreads.generator.stopped": ("{generator}", "Generators stopped early, by reason."),
    "aiothreads.channel.depth": ("{item}", "Items buffered in live channels."),
    "aiothreads.channel.capacity": ("{item}", "Capacity of the live bounded channels."),
    "aiothreads.generator.active": ("{generator}", "Generators started and not ended."),
    "aiothreads.pool.thread.count": ("{thread}", "Worker threads of a pool, by state."),
    "aiothreads.pool.thread.limit": ("{thread}", "The most worker threads a pool may have."),
    "aiothreads.pool.queue.size": ("{call}", "Calls waiting for a worker of a pool."),
    "aiothreads.pool.call.refused": ("{call}", "Calls a pool refused or dropped, by reason."),
}
"""Instrument name -> (unit, description)."""


def global_meter_provider_installed() -> bool:
    """Whether the application installed a meter provider (an SDK) as the global one."""
    from opentelemetry import metrics  # noqa: PLC0415 - the extra is optional

    provider = metrics.get_meter_provider()
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


class OpenTelemetryMetrics:
    """Reports ``tallies`` through an OpenTelemetry meter (the global provider's by default)."""

    def __init__(self, tallies: Tallies, meter_provider: Any = None) -> None:
        from opentelemetry import metrics  # noqa: PLC0415 - the extra is optional
        from opentelemetry.metrics import Observation  # noqa: PLC0415

        self._observation = Observation
        self._tallies = tallies
        meter = metrics.get_meter("aiothreads", __version__, meter_provider=meter_provider)

        def histogram(name: str) -> Any:
            unit, description = INSTRUMENTS[name]
            try:
                return meter.create_histogram(
                    name,
                    unit=unit,
                    description=description,
                    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
                )
            except TypeError:  # an API older than 1.23 takes no advice
                return meter.create_histogram(name, unit=unit, description=description)

        self._duration = histogram("aiothreads.call.duration")
        self._wait = histogram("aiothreads.call.wait.duration")
        counter = meter.create_observable_counter
        up_down = meter.create_observable_up_down_counter
        gauge = meter.create_observable_gauge
        each, streams = self._each, self._each_stream
        observed: tuple[tuple[Callable[..., Any], str, Callable[[Any], Iterable[Any]]], ...] = (
            (counter, "aiothreads.call.started", each(attrgetter("submitted"))),
            (counter, "aiothreads.call.finished", self._finished),
            (up_down, "aiothreads.call.active", each(Tally.in_flight)),
            (up_down, "aiothreads.call.queued", each(Tally.queued)),
            (counter, "aiothreads.call.slow", each(attrgetter("slow"))),
            (counter, "aiothreads.thread.started", each(attrgetter("threads_started"))),
            (up_down, "aiothreads.thread.active", each(Tally.threads_alive)),
            (counter, "aiothreads.generator.items", each(attrgetter("items"))),
            (counter, "aiothreads.generator.blocked", each(attrgetter("blocked"))),
            (counter, "aiothreads.generator.stopped", self._stopped),
            (gauge, "aiothreads.channel.depth", streams(attrgetter("depth"))),
            (gauge, "aiothreads.channel.capacity", streams(attrgetter("capacity"))),
            (up_down, "aiothreads.generator.active", streams(attrgetter("active"))),
            (up_down, "aiothreads.pool.thread.count", self._pool_threads),
            (up_down, "aiothreads.pool.thread.limit", self._each_pool(attrgetter("maximum"))),
            (up_down, "aiothreads.pool.queue.size", self._each_pool(attrgetter("queued"))),
            (counter, "aiothreads.pool.call.refused", self._pool_refusals),
        )
        for create, name, callback in observed:
            unit, description = INSTRUMENTS[name]
            create(name, callbacks=[callback], unit=unit, description=description)

    def attach(self) -> None:
        """Start reporting the tallies (again, after they were detached).

        The instruments exist from construction; until this is called their
        callbacks report nothing and no call is recorded into the histograms.
        """
        self._tallies.attach(self._record_into)
        self._tallies.exporters.add("opentelemetry_metrics")

    def _record_into(self, series: TallySeries) -> None:
        """Record each call's wait and duration of ``series`` in the histograms."""
        base = {"function": series.function, "kind": series.kind}
        by_outcome = {str(outcome): {**base, "outcome": str(outcome)} for outcome in OUTCOMES}
        wait, duration = self._wait.record, self._duration.record

        def started(waited: float) -> None:
            wait(waited, base)

        def finished(outcome: str, seconds: float) -> None:
            duration(seconds, by_outcome[outcome])

        series.on_started = started
        series.on_finished = finished

    def _reporting(self) -> bool:
        """Whether this reporter is still on (``configure()`` may have switched it off)."""
        return "opentelemetry_metrics" in self._tallies.exporters

    def _totals(self) -> list[tuple[dict[str, str], Tally]]:
        if not self._reporting():
            return []
        return [
            ({"function": series.function, "kind": series.kind}, series.totals())
            for series in self._tallies.snapshot()
        ]

    def _each(self, value: Callable[[Tally], float]) -> Callable[[Any], list[Any]]:
        """Make an instrument callback that observes ``value`` of every function's totals."""

        def observe(_: Any) -> list[Any]:
            return [self._observation(value(total), labels) for labels, total in self._totals()]

        return observe

    def _finished(self, _: Any) -> list[Any]:
        return [
            self._observation(total.ended(index), {**labels, "outcome": str(outcome)})
            for labels, total in self._totals()
            for index, outcome in enumerate(OUTCOMES)
        ]

    def _stopped(self, _: Any) -> list[Any]:
        return [
            self._observation(total.cancellations[index], {**labels, "reason": str(reason)})
            for labels, total in self._totals()
            for index, reason in enumerate(REASONS)
            if total.cancellations[index]
        ]

    def _pools(self) -> list[PoolState]:
        return pool_states() if self._reporting() else []

    def _pool_threads(self, _: Any) -> list[Any]:
        observed: list[Any] = []
        for pool in self._pools():
            if pool.busy is not None and pool.idle is not None:
                observed.append(self._observation(pool.busy, {"pool": pool.name, "state": "busy"}))
                observed.append(self._observation(pool.idle, {"pool": pool.name, "state": "idle"}))
        return observed

    def _each_pool(self, value: Callable[[PoolState], int | None]) -> Callable[[Any], list[Any]]:
        """Make an instrument callback that observes ``value`` of every pool where it is known."""

        def observe(_: Any) -> list[Any]:
            return [
                self._observation(known, {"pool": pool.name})
                for pool in self._pools()
                if (known := value(pool)) is not None
            ]

        return observe

    def _pool_refusals(self, _: Any) -> list[Any]:
        return [
            self._observation(
                pool.refused.get(reason, 0), {"pool": pool.name, "reason": str(reason)}
            )
            for pool in self._pools()
            for reason in Refusal
        ]

    def _each_stream(self, value: Callable[[StreamTotals], float]) -> Callable[[Any], list[Any]]:
        """Make an instrument callback that observes ``value`` of every streaming function."""

        def observe(_: Any) -> list[Any]:
            if not self._reporting():
                return []
            return [
                self._observation(value(total), {"function": function, "kind": kind})
                for (function, kind), total in self._tallies.streams.totals().items()
            ]

        return observe
