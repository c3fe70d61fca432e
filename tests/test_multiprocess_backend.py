"""The multiprocess-mode metrics backend, driven in this process.

prometheus-client chooses how its metric objects keep values when it is imported; here
it was imported before ``PROMETHEUS_MULTIPROC_DIR`` is set, so they keep them in memory,
while aiothreads, which reads the variable as it is configured, chooses its multiprocess
backend (``MultiprocessMetrics``). What that backend counts, under which labels and in
which bucket, is read from the registry. That prometheus-client adds up the files of real
worker processes is tested with such processes in ``test_instrumentation_multiprocess.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from aiothreads import ExecutorRefused, instrumentation, threaded, threaded_separate
from aiothreads import _pool_state as pool_state
from aiothreads._outcomes import Refusal
from aiothreads._pool_state import PoolState
from aiothreads.instrumentation import _hooks
from aiothreads.instrumentation import _prometheus_multiprocess as multiprocess_backend
from aiothreads.instrumentation._prometheus import METRICS
from aiothreads.instrumentation._prometheus_multiprocess import MultiprocessMetrics
from aiothreads.instrumentation._tallies import DURATION_BUCKETS

pytestmark = pytest.mark.timeout(60)

LABELS = {"function": "tests.f", "kind": "threaded"}
WAIT = 10.0


class Backend:
    """The configured ``MultiprocessMetrics`` and its registry, read sample by sample."""

    def __init__(self, registry: CollectorRegistry, metrics: MultiprocessMetrics) -> None:
        self.registry = registry
        self.metrics = metrics

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def of(self, name: str, **labels: str) -> float | None:
        """``name``'s sample for ``LABELS`` and ``labels``."""
        return self.value(name, **LABELS, **labels)

    def buckets(self, name: str, **labels: str) -> dict[str, float]:
        """The cumulative buckets of histogram ``name``, by ``le``."""
        wanted = {**LABELS, **labels}
        return {
            sample.labels["le"]: sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == f"{name}_bucket"
            and all(sample.labels.get(key) == value for key, value in wanted.items())
        }


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Backend]:
    observer = pool_state._observer
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    instrumentation.configure(
        registry=registry, prometheus=True, opentelemetry=False, structlog=False
    )
    telemetry = _hooks.current()
    assert telemetry is not None
    metrics = telemetry.metrics
    assert isinstance(metrics, MultiprocessMetrics)
    assert instrumentation.enabled_backends() == ["prometheus"]
    try:
        yield Backend(registry, metrics)
    finally:
        metrics.publisher.stop()
        instrumentation.reset()
        pool_state.observe(observer)


def le(bound: float) -> str:
    return str(float(bound))


def test_a_call_is_counted_from_submitted_to_finished_with_its_times_in_their_buckets(
    backend: Backend,
) -> None:
    series = backend.metrics.series("threaded", "tests.f")
    series.submitted()
    assert backend.of("aiothreads_calls_started_total") == 1
    assert backend.of("aiothreads_calls_queued") == 1
    assert backend.of("aiothreads_calls_in_flight") == 0

    series.started(0.003)
    assert backend.of("aiothreads_calls_queued") == 0
    assert backend.of("aiothreads_calls_in_flight") == 1
    assert backend.of("aiothreads_call_wait_seconds_count") == 1
    assert backend.of("aiothreads_call_wait_seconds_sum") == pytest.approx(0.003)

    series.finished("error", 0.2)
    assert backend.of("aiothreads_calls_in_flight") == 0
    assert backend.of("aiothreads_calls_finished_total", outcome="error") == 1
    assert backend.of("aiothreads_calls_finished_total", outcome="ok") == 0
    assert backend.of("aiothreads_calls_finished_total", outcome="cancelled") == 0
    assert backend.of("aiothreads_call_duration_seconds_sum") == pytest.approx(0.2)

    wait = backend.buckets("aiothreads_call_wait_seconds")
    duration = backend.buckets("aiothreads_call_duration_seconds")
    assert list(wait) == [*map(le, DURATION_BUCKETS), "+Inf"]
    assert list(duration) == list(wait)
    for bound in DURATION_BUCKETS:
        assert wait[le(bound)] == (1 if bound >= 0.003 else 0), bound
        assert duration[le(bound)] == (1 if bound >= 0.2 else 0), bound


@pytest.mark.parametrize("outcome", ["ok", "error", "cancelled"])
def test_a_call_that_never_ran_leaves_the_queue_with_its_outcome(
    backend: Backend, outcome: str
) -> None:
    series = backend.metrics.series("threaded", "tests.f")
    series.submitted()
    series.submitted()
    series.skipped(outcome)
    assert backend.of("aiothreads_calls_queued") == 1
    assert backend.of("aiothreads_calls_in_flight") == 0
    assert backend.of("aiothreads_calls_finished_total", outcome=outcome) == 1
    assert backend.of("aiothreads_call_duration_seconds_count") == 0


def test_a_limit_wait_lands_in_the_bucket_of_its_value(backend: Backend) -> None:
    series = backend.metrics.series("threaded", "tests.f")
    series.limit_waited(0.04)
    series.limit_waited(2.0)
    assert backend.of("aiothreads_limit_wait_seconds_count") == 2
    assert backend.of("aiothreads_limit_wait_seconds_sum") == pytest.approx(2.04)
    buckets = backend.buckets("aiothreads_limit_wait_seconds")
    for bound in DURATION_BUCKETS:
        assert buckets[le(bound)] == (bound >= 0.04) + (bound >= 2.0), bound
    assert backend.of("aiothreads_call_wait_seconds_count") == 0


def test_a_separate_thread_is_counted_started_and_alive_until_it_ends(backend: Backend) -> None:
    series = backend.metrics.series("threaded_separate", "tests.f")
    labels = {"function": "tests.f", "kind": "threaded_separate"}
    series.thread_started()
    series.thread_started()
    assert backend.value("aiothreads_separate_threads_started_total", **labels) == 2
    assert backend.value("aiothreads_separate_threads_alive", **labels) == 2
    series.thread_finished()
    assert backend.value("aiothreads_separate_threads_started_total", **labels) == 2
    assert backend.value("aiothreads_separate_threads_alive", **labels) == 1


def test_an_iterator_counts_its_items_stall_cancellations_and_slow_calls(backend: Backend) -> None:
    series = backend.metrics.series("threaded", "tests.f")
    series.items_yielded(256)
    series.items_yielded(3)
    series.backpressure(0.5)
    series.backpressure(0.25)
    series.generator_cancelled("consumer_left")
    series.generator_cancelled("consumer_left")
    series.generator_cancelled("error")
    series.slow()
    assert backend.of("aiothreads_items_yielded_total") == 259
    assert backend.of("aiothreads_producer_blocked_seconds_total") == pytest.approx(0.75)
    assert backend.of("aiothreads_generator_cancellations_total", reason="consumer_left") == 2
    assert backend.of("aiothreads_generator_cancellations_total", reason="error") == 1
    assert backend.of("aiothreads_calls_slow_total") == 1


def test_a_functions_stream_gauges_are_present_at_zero_from_its_first_series(
    backend: Backend,
) -> None:
    backend.metrics.series("threaded_iterable", "tests.g")
    labels = {"function": "tests.g", "kind": "threaded_iterable"}
    for name in ("channel_depth", "channel_capacity", "iterators_active"):
        assert backend.value(f"aiothreads_{name}", **labels) == 0, name


def test_open_streams_count_as_active_with_their_capacity_and_depth_until_closed(
    backend: Backend,
) -> None:
    depths = {"bounded": 2, "unbounded": 5}
    metrics = backend.metrics
    series = metrics.series("threaded", "tests.f")
    bounded = metrics.stream_opened("threaded", "tests.f", 4, lambda: depths["bounded"])
    unbounded = metrics.stream_opened("threaded", "tests.f", 0, lambda: depths["unbounded"])
    other = metrics.stream_opened("threaded", "tests.other", 8, lambda: 100)
    assert backend.of("aiothreads_iterators_active") == 2
    assert backend.of("aiothreads_channel_capacity") == 4

    series.items_yielded(1)  # depth is written when producers report items
    assert backend.of("aiothreads_channel_depth") == 7
    depths["bounded"] = 0
    series.backpressure(0.1)  # ... or block
    assert backend.of("aiothreads_channel_depth") == 5

    metrics.stream_closed(bounded)
    assert backend.of("aiothreads_iterators_active") == 1
    assert backend.of("aiothreads_channel_capacity") == 0
    assert backend.of("aiothreads_channel_depth") == 5  # and when one ends
    metrics.stream_closed(bounded)  # twice: nothing more
    metrics.stream_closed("not a token")
    assert backend.of("aiothreads_iterators_active") == 1
    metrics.stream_closed(unbounded)
    assert backend.of("aiothreads_iterators_active") == 0
    assert backend.of("aiothreads_channel_depth") == 0
    labels = {"function": "tests.other", "kind": "threaded"}
    assert backend.value("aiothreads_iterators_active", **labels) == 1
    assert backend.value("aiothreads_channel_capacity", **labels) == 8
    metrics.stream_closed(other)


def test_a_failing_metric_write_never_reaches_the_call(backend: Backend) -> None:
    series = backend.metrics.series("threaded", "tests.f")
    series.finished("not an outcome", 0.1)  # a KeyError inside: swallowed
    series.items_yielded(-1)  # a counter that would go down: a ValueError inside
    series.backpressure(-1.0)
    assert backend.of("aiothreads_calls_finished_total", outcome="ok") == 0
    assert backend.of("aiothreads_items_yielded_total") == 0


def test_a_pools_refusals_count_by_reason_and_its_threads_by_state(backend: Backend) -> None:
    release = threading.Event()
    started = threading.Event()
    pool = ThreadPoolExecutor(2, thread_name_prefix="test-mp-pool")
    name = pool_state.pool_name(pool)

    @threaded(executor=pool)
    def hold() -> None:
        started.set()
        release.wait()

    async def scenario() -> None:
        held = asyncio.ensure_future(hold())
        await asyncio.to_thread(started.wait)
        backend.metrics.pools_changed()
        assert backend.value("aiothreads_pool_threads", pool=name, state="busy") == 1
        assert backend.value("aiothreads_pool_threads_max", pool=name) == 2
        assert backend.value("aiothreads_pool_queued", pool=name) == 0
        for reason in Refusal:
            assert (
                backend.value("aiothreads_pool_refused_total", pool=name, reason=reason.value) == 0
            )
        release.set()
        await held
        pool.shutdown(wait=True)
        with pytest.raises(ExecutorRefused):
            await hold()

    asyncio.run(scenario())
    assert backend.value("aiothreads_pool_refused_total", pool=name, reason="shut_down") == 1
    assert backend.value("aiothreads_pool_refused_total", pool=name, reason="rejected") == 0
    assert backend.of("aiothreads_calls_finished_total", outcome="ok") is None  # another name
    backend.metrics.pools_changed()
    assert backend.value("aiothreads_pool_threads", pool=name, state="busy") == 0


@threaded
def answer() -> int:
    return 1


@threaded_separate
def answer_alone() -> int:
    return 2


def test_calls_through_the_decorators_count_in_the_multiprocess_backend(backend: Backend) -> None:
    async def scenario() -> None:
        assert await answer() == 1
        assert await answer() == 1
        assert await answer_alone() == 2

    asyncio.run(scenario())
    ok_labels = {"function": f"{__name__}.answer", "kind": "threaded"}
    alone_labels = {"function": f"{__name__}.answer_alone", "kind": "separate"}
    assert backend.value("aiothreads_calls_finished_total", **ok_labels, outcome="ok") == 2
    assert backend.value("aiothreads_call_duration_seconds_count", **ok_labels) == 2
    assert backend.value("aiothreads_calls_in_flight", **ok_labels) == 0
    assert backend.value("aiothreads_calls_queued", **ok_labels) == 0
    assert backend.value("aiothreads_separate_threads_started_total", **alone_labels) == 1
    assert backend.value("aiothreads_separate_threads_alive", **alone_labels) == 0


def test_the_backend_is_chosen_only_with_the_variable_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    instrumentation.configure(
        registry=CollectorRegistry(), prometheus=True, opentelemetry=False, structlog=False
    )
    try:
        telemetry = _hooks.current()
        assert telemetry is not None
        assert not isinstance(telemetry.metrics, MultiprocessMetrics)
    finally:
        instrumentation.reset()


def test_every_family_has_its_help_text_and_its_gauges_add_up_live_workers_only(
    backend: Backend,
) -> None:
    backend.metrics.series("threaded", "tests.f")
    helps = {family.name: family.documentation for family in backend.registry.collect()}
    for full, documentation in METRICS.items():
        name = full.removesuffix("_total")
        assert helps.get(name) == documentation, name
    gauges = [
        collector
        for collector in backend.registry._collector_to_names
        if isinstance(collector, Gauge)
    ]
    assert len(gauges) == 9
    for gauge in gauges:  # a worker that exited stops counting
        assert gauge._multiprocess_mode == "livesum", gauge._name


def pool(name: str, *, busy: int | None, idle: int | None, queued: int | None) -> PoolState:
    return PoolState(name, busy, idle, 4, queued, {})


@pytest.mark.parametrize(
    ("busy", "idle", "queued", "active"),
    [(0, 2, 0, False), (1, 1, 0, True), (0, 2, 3, True), (None, None, None, False)],
    ids=["idle", "busy", "queued", "unknown"],
)
def test_the_pools_are_written_by_state_and_report_whether_any_has_work(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    busy: int | None,
    idle: int | None,
    queued: int | None,
    active: bool,
) -> None:
    states = [
        pool("web", busy=busy, idle=idle, queued=queued),
        pool("quiet", busy=0, idle=1, queued=0),
    ]
    monkeypatch.setattr(multiprocess_backend, "pool_states", lambda: states)
    assert backend.metrics._write_pools() is active
    expected = {"busy": busy, "idle": idle}
    for state, value in expected.items():
        written = backend.value("aiothreads_pool_threads", pool="web", state=state)
        assert written == (None if value is None else value), state
    assert backend.value("aiothreads_pool_queued", pool="web") == queued
    assert backend.value("aiothreads_pool_threads", pool="quiet", state="idle") == 1

    states = [pool("quiet", busy=0, idle=1, queued=0)]  # "web" is gone: written as 0
    assert backend.metrics._write_pools() is False
    if busy is not None:
        assert backend.value("aiothreads_pool_threads", pool="web", state="busy") == 0
        assert backend.value("aiothreads_pool_queued", pool="web") == 0


def test_a_call_wakes_the_writer_which_writes_the_pools_until_they_are_quiet(
    backend: Backend,
) -> None:
    publisher = backend.metrics.publisher
    writes = publisher.writes

    async def scenario() -> None:
        assert await answer() == 1

    asyncio.run(scenario())
    assert publisher.wait_for(after=writes, quiet=True, timeout=WAIT)
    assert backend.value("aiothreads_pool_threads", pool="default", state="busy") == 0
