"""The slow-call watchdog: once per slow call or stall, never for fast work, off by default."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from aiothreads import instrumentation, threaded, threaded_iterable, threaded_separate
from aiothreads._inflight import running
from aiothreads._watchdog import THREAD_NAME, WATCHDOG, Watchdog
from tests.metrics_alone import count_calls_only
from tests.python_process import run_python
from tests.streams import one_ahead_of_its_consumer
from tests.waiting import turns_until

SECRET = "s3cr3t-argument-value"
THRESHOLD = 10.0


async def in_own_thread(event: threading.Event) -> bool:
    with ThreadPoolExecutor(1) as waiter:
        return await asyncio.get_running_loop().run_in_executor(waiter, event.wait, 5)


class SlowLog(logging.Handler):
    """Collects the watchdog's stdlib warnings; ``arrived`` is set on each."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.arrived = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("slow threaded call"):
            self.records.append(record)
            self.arrived.set()

    @property
    def fields(self) -> list[dict[str, object]]:
        return [record.aiothreads for record in self.records]  # type: ignore[attr-defined]


@pytest.fixture
def slow_log() -> Iterator[SlowLog]:
    handler = SlowLog()
    logger = logging.getLogger("aiothreads")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def manual() -> Iterator[Watchdog]:
    """A watchdog without a thread, driven through ``check(now)``; instrumentation off."""
    instrumentation.configure(enabled=False)
    watchdog = Watchdog()
    watchdog.configure(THRESHOLD, start_thread=False)
    try:
        yield watchdog
    finally:
        instrumentation.reset()


def started_at() -> float:
    ((_, started),) = running().values()
    return started


class Blocked:
    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def block(self, secret: str) -> str:
        self.started.set()
        self.release.wait(5)  # <- blocks here
        return secret


@pytest.mark.asyncio
@pytest.mark.parametrize("decorate", [threaded, threaded_separate])
async def test_a_slow_call_is_reported_exactly_once(
    decorate: object, manual: Watchdog, slow_log: SlowLog
) -> None:
    blocked = Blocked()
    call = decorate(blocked.block, name="stuck")(SECRET)  # type: ignore[operator]
    assert await in_own_thread(blocked.started)
    start = started_at()

    assert manual.check(start + THRESHOLD - 0.001) == pytest.approx(0.001, abs=1e-6)
    assert slow_log.records == []
    manual.check(start + THRESHOLD)
    manual.check(start + THRESHOLD + 1)
    manual.check(start + 10 * THRESHOLD)
    blocked.release.set()
    assert await call == SECRET

    assert len(slow_log.records) == 1
    (fields,) = slow_log.fields
    assert fields["function"] == "stuck"
    assert fields["elapsed"] == THRESHOLD
    assert str(fields["thread"]).startswith("aiothreads")
    assert isinstance(fields["thread_id"], int)
    stack = fields["stack"]
    assert isinstance(stack, list)
    assert any(entry.endswith("in block") and __file__ in entry for entry in stack)
    assert SECRET not in slow_log.records[0].getMessage()
    assert manual.check(start + 20 * THRESHOLD) is None  # nothing runs any more


@pytest.mark.asyncio
async def test_fast_calls_are_never_reported(manual: Watchdog, slow_log: SlowLog) -> None:
    @threaded
    def quick(number: int) -> int:
        manual.check()  # the real clock, while the call runs
        return number

    assert await asyncio.gather(*(quick(number) for number in range(200))) == list(range(200))
    assert slow_log.records == []


@pytest.mark.asyncio
async def test_each_stall_of_a_generator_is_reported_once(
    manual: Watchdog, slow_log: SlowLog
) -> None:
    stalls = [threading.Event(), threading.Event()]
    resume = [threading.Event(), threading.Event()]

    @threaded_iterable(max_size=4)
    def stalling() -> Generator[int, None, None]:
        for number, (stall, go_on) in enumerate(zip(stalls, resume, strict=True)):
            yield number
            stall.set()
            go_on.wait(5)

    iterator = stalling()
    assert await iterator.__anext__() == 0
    assert await in_own_thread(stalls[0])
    first_look = started_at() + 1
    manual.check(first_look)  # an item since the start: busy from this look on
    manual.check(first_look + THRESHOLD - 0.001)
    assert slow_log.records == []
    manual.check(first_look + THRESHOLD)
    manual.check(first_look + 3 * THRESHOLD)
    assert len(slow_log.records) == 1
    resume[0].set()
    assert await iterator.__anext__() == 1
    assert await in_own_thread(stalls[1])
    second_look = first_look + 4 * THRESHOLD
    manual.check(second_look)  # a new item: the stall before it is over, a new one starts
    manual.check(second_look + THRESHOLD - 0.001)
    assert len(slow_log.records) == 1
    manual.check(second_look + THRESHOLD)
    manual.check(second_look + 2 * THRESHOLD)
    assert len(slow_log.records) == 2
    resume[1].set()
    assert [item async for item in iterator] == []
    assert [fields["kind"] for fields in slow_log.fields] == ["iterable", "iterable"]


@pytest.mark.asyncio
async def test_a_generators_stall_is_reported_with_the_time_since_its_last_item(
    manual: Watchdog, slow_log: SlowLog
) -> None:
    stalled, resume = threading.Event(), threading.Event()

    @threaded_iterable(max_size=4)
    def stalling() -> Generator[int, None, None]:
        yield 0
        stalled.set()
        resume.wait(5)

    iterator = stalling()
    try:
        assert await iterator.__anext__() == 0
        assert await in_own_thread(stalled)
        first_look = started_at() + THRESHOLD / 2  # the item came before: the stall starts here
        manual.check(first_look)
        manual.check(first_look + THRESHOLD)
        assert [fields["elapsed"] for fields in slow_log.fields] == [THRESHOLD]
    finally:
        resume.set()
        assert [item async for item in iterator] == []


@pytest.mark.asyncio
async def test_a_generator_that_stalls_before_its_first_item_is_timed_from_its_start(
    manual: Watchdog, slow_log: SlowLog
) -> None:
    stalled, resume = threading.Event(), threading.Event()

    @threaded_iterable(max_size=4)
    def late() -> Generator[int, None, None]:
        stalled.set()
        resume.wait(5)
        yield 1

    iterator = late()
    first = asyncio.ensure_future(iterator.__anext__())
    try:
        assert await in_own_thread(stalled)
        manual.check(started_at() + THRESHOLD)  # the first look, a threshold after its start
        assert [fields["elapsed"] for fields in slow_log.fields] == [THRESHOLD]
    finally:
        resume.set()
        assert await first == 1
        assert [item async for item in iterator] == []
    assert slow_log.fields[0]["kind"] == "iterable"


@pytest.mark.asyncio
async def test_a_generator_waiting_for_room_is_not_slow(
    manual: Watchdog, slow_log: SlowLog
) -> None:
    full = threading.Event()
    async with one_ahead_of_its_consumer(full) as numbers:
        assert await numbers.__anext__() == 1
        assert await in_own_thread(full)
        ((work, _),) = running().values()
        channel = work.about[3]
        await turns_until(lambda: channel.waiting_for_room, "the producer waits for room")
        manual.check(started_at() + 100 * THRESHOLD)
    assert slow_log.records == []


@pytest.mark.asyncio
async def test_metric_span_event_and_structlog_event(slow_log: SlowLog) -> None:
    structlog = pytest.importorskip("structlog")
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    prometheus_client = pytest.importorskip("prometheus_client")

    registry = prometheus_client.CollectorRegistry()
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    watchdog = Watchdog()
    with structlog.testing.capture_logs() as logs:
        instrumentation.configure(
            registry=registry, tracer_provider=provider, structlog=True, prometheus=True
        )
        watchdog.configure(THRESHOLD, start_thread=False)
        try:
            blocked = Blocked()
            call = threaded(blocked.block, name="stuck")(SECRET)
            assert await in_own_thread(blocked.started)
            watchdog.check(started_at() + THRESHOLD + 1)
            watchdog.check(started_at() + THRESHOLD + 2)
            blocked.release.set()
            await call
        finally:
            instrumentation.reset()
            provider.shutdown()
    structlog.reset_defaults()

    labels = {"function": "stuck", "kind": "threaded"}
    assert registry.get_sample_value("aiothreads_calls_slow_total", labels) == 1
    (span,) = exporter.get_finished_spans()
    (event,) = [event for event in span.events if event.name == "aiothreads.slow"]
    assert event.attributes is not None
    assert event.attributes["aiothreads.elapsed"] == pytest.approx(THRESHOLD + 1)
    stacktrace = str(event.attributes["code.stacktrace"])
    assert "in block" in stacktrace
    slow = [entry for entry in logs if entry["event"] == "slow threaded call"]
    assert len(slow) == 1
    assert stacktrace == "\n".join(slow[0]["stack"])  # one frame a line
    assert event.attributes["thread.id"] == slow[0]["thread_id"]
    assert event.attributes["thread.name"] == slow[0]["thread"]
    assert slow[0]["log_level"] == "warning"
    assert slow[0]["function"] == "stuck"
    assert slow[0]["trace_id"] == format(span.context.trace_id, "032x")
    assert SECRET not in repr(slow) + repr(event.attributes)
    assert slow_log.records == []  # structlog took the event


@pytest.mark.asyncio
@pytest.mark.parametrize("slow_calls", [1, 2])
async def test_with_metrics_alone_a_slow_call_is_counted_and_logged(
    slow_log: SlowLog, slow_calls: int
) -> None:
    """A call that nothing but metrics records (no span, no log at DEBUG) is reported too.

    The watchdog's thread counts every slow call it finds, not just the first of a function.
    """
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    watchdog = Watchdog()
    count_calls_only(registry)
    watchdog.configure(THRESHOLD, start_thread=False)
    blocked = [Blocked() for _ in range(slow_calls)]
    calls = [threaded(each.block, name="stuck")(SECRET) for each in blocked]
    try:
        for each in blocked:
            assert await in_own_thread(each.started)
        latest = max(started for _, started in running().values())
        watchdog.check(latest + THRESHOLD + 1)
    finally:
        for each in blocked:
            each.release.set()
        await asyncio.gather(*calls)
        instrumentation.reset()
    labels = {"function": "stuck", "kind": "threaded"}
    assert registry.get_sample_value("aiothreads_calls_slow_total", labels) == slow_calls
    assert [fields["function"] for fields in slow_log.fields] == ["stuck"] * slow_calls
    assert min(fields["elapsed"] for fields in slow_log.fields) == THRESHOLD + 1


@pytest.mark.asyncio
async def test_the_watchdog_thread_reports_and_stops(slow_log: SlowLog) -> None:
    instrumentation.configure(enabled=False)
    try:
        WATCHDOG.configure(0.05)
        assert [t.name for t in threading.enumerate()].count(THREAD_NAME) == 1
        blocked = Blocked()
        call = threaded(blocked.block)(SECRET)
        assert await in_own_thread(slow_log.arrived)
        blocked.release.set()
        await call
    finally:
        instrumentation.reset()
    assert THREAD_NAME not in [t.name for t in threading.enumerate()]
    assert len(slow_log.records) == 1


def test_the_watchdog_is_off_by_default() -> None:
    result = run_python(
        "import asyncio, threading, aiothreads\n"
        "async def main():\n"
        "    await aiothreads.threaded(lambda: None)()\n"
        "    print([t.name for t in threading.enumerate()])\n"
        "asyncio.run(main())\n"
    )
    assert result.returncode == 0, result.stderr
    assert THREAD_NAME not in result.stdout


def test_the_environment_switches_it_on() -> None:
    result = run_python(
        "import asyncio, logging, threading, aiothreads\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "release = threading.Event()\n"
        "@aiothreads.threaded\n"
        "def stuck():\n"
        "    release.wait(30)\n"
        "class Release(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        release.set()\n"
        "logging.getLogger('aiothreads').addHandler(Release())\n"
        "asyncio.run(stuck())\n",
        env={"AIOTHREADS_SLOW_CALL_THRESHOLD": "0.05", "AIOTHREADS_INSTRUMENTATION": "off"},
    )
    assert result.returncode == 0, result.stderr
    assert "slow threaded call" in result.stderr
    assert "in stuck" in result.stderr


def test_a_bad_environment_value_warns_once_and_stays_off() -> None:
    result = run_python(
        "import asyncio, warnings, threading, aiothreads\n"
        "warnings.simplefilter('always')\n"
        "async def main():\n"
        "    for _ in range(3):\n"
        "        await aiothreads.threaded(lambda: None)()\n"
        "    print([t.name for t in threading.enumerate()])\n"
        "asyncio.run(main())\n",
        env={"AIOTHREADS_SLOW_CALL_THRESHOLD": "soon"},
        warnings_as_errors=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("AIOTHREADS_SLOW_CALL_THRESHOLD='soon'") == 1
    assert THREAD_NAME not in result.stdout


@pytest.mark.parametrize(
    ("threshold", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
def test_configure_refuses_a_bad_threshold(threshold: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="slow_call_threshold"):
        instrumentation.configure(slow_call_threshold=threshold)  # type: ignore[arg-type]
    instrumentation.reset()


def test_configure_takes_the_environments_threshold_unless_one_is_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIOTHREADS_SLOW_CALL_THRESHOLD", "2.5")
    backends = {"opentelemetry": False, "prometheus": False, "structlog": False}
    try:
        instrumentation.configure(**backends)
        assert WATCHDOG.threshold == 2.5
        instrumentation.configure(slow_call_threshold=7.0, **backends)
        assert WATCHDOG.threshold == 7.0  # the argument wins over the environment
    finally:
        instrumentation.reset()
    assert WATCHDOG.threshold is None


@pytest.mark.parametrize("variable", ["OFF", "Off", " False ", "NONE"])
def test_a_word_for_off_in_the_environment_keeps_the_watchdog_off_whatever_its_case(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv("AIOTHREADS_SLOW_CALL_THRESHOLD", variable)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a word for off is no bad value to warn about
            instrumentation.configure(opentelemetry=False, prometheus=False, structlog=False)
        assert WATCHDOG.threshold is None
    finally:
        instrumentation.reset()


def test_with_nothing_running_the_watchdog_sleeps_until_work_starts() -> None:
    import linecache
    import os
    import sys

    from aiothreads import _watchdog

    watchdog = Watchdog()
    watchdog.configure(60.0)
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == THREAD_NAME]

        def idle() -> bool:
            frame = sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
            while frame is not None:
                code = frame.f_code
                if code.co_filename == _watchdog.__file__:  # waiting, with no timeout:
                    return "work_arrived.wait()" in linecache.getline(
                        code.co_filename, frame.f_lineno
                    )
                frame = frame.f_back
            return False

        woke = threading.Event()
        for _ in range(100_000):
            if idle():
                woke.set()
                break
            os.sched_yield()  # lets the watchdog thread run
        assert woke.is_set(), "the watchdog never went to sleep without work"
    finally:
        watchdog.configure(None)


@pytest.mark.asyncio
async def test_a_reported_call_is_not_due_again(manual: Watchdog, slow_log: SlowLog) -> None:
    blocked = Blocked()
    call = threaded(blocked.block, name="stuck")(SECRET)
    try:
        assert await in_own_thread(blocked.started)
        start = started_at()
        # Once reported, the call asks for no check of its own: the next one is a
        # whole threshold away, as for work that starts now.
        assert manual.check(start + THRESHOLD) == pytest.approx(THRESHOLD)
        assert manual.check(start + 5 * THRESHOLD) == pytest.approx(THRESHOLD)
        assert len(slow_log.records) == 1
    finally:
        blocked.release.set()
        assert await call == SECRET


class HeldAfterEachLook(Watchdog):
    """A watchdog whose thread waits for ``go`` after each look, before it sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.looked = threading.Event()
        self.go = threading.Event()

    def check(self, now: float | None = None) -> float | None:
        due = super().check(now)
        self.looked.set()
        self.go.wait()
        return due


def test_a_stop_asked_for_while_the_watchdog_looks_is_not_lost() -> None:
    """Asked to stop between its look and its sleep, the watchdog's thread still ends."""
    watchdog = HeldAfterEachLook()
    watchdog.configure(THRESHOLD)
    thread = watchdog._thread
    assert thread is not None
    assert watchdog.looked.wait(5)  # its look found nothing running; its sleep is next
    stopping = threading.Thread(target=watchdog.configure, args=(None,), daemon=True)
    stopping.start()
    # Stopping sets the stop, then the wake-up, then waits for the thread to end.
    assert watchdog._work_arrived.wait(5)
    watchdog.go.set()
    stopping.join(5)
    thread.join(5)
    assert not stopping.is_alive()
    assert not thread.is_alive()
