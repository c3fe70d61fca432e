"""Shared fixtures: every async test runs on asyncio's loop and on uvloop, leaks no
threads and logs no asyncio errors."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable, Iterator, Mapping

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is not available on Windows
    uvloop = None

THREAD_EXIT_GRACE = 5.0

WATCHDOG_NEVER = 3600.0
"""Far above any test's timeout: a test that needs the backstop poll fails."""
WATCHDOG_FAST = 0.05


def pytest_collection_finish(session: pytest.Session) -> None:
    """Keep what collection imported out of every later garbage collection.

    Each test collects garbage twice (``no_asyncio_errors``), and a full
    collection walks every live object: the modules the suite imports (dask,
    OpenTelemetry's SDK) would make each one cost tens of milliseconds.
    Frozen, they are left out; what the tests themselves make is still
    collected as before.
    """
    gc.collect()
    gc.freeze()


LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return LOOP_FACTORIES


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """For sync tests that drive their own loops: one factory per loop kind."""
    factory: Callable[[], asyncio.AbstractEventLoop] = LOOP_FACTORIES[request.param]
    return factory


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail the test if a thread it started is still alive after it ended."""
    before = set(threading.enumerate())
    yield
    started = [thread for thread in threading.enumerate() if thread not in before]
    for thread in started:
        thread.join(THREAD_EXIT_GRACE)
    leaked = [thread.name for thread in started if thread.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_asyncio_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if asyncio logged an error (e.g. an exception never retrieved).

    Tests that close a loop with a task still pending on purpose are marked
    ``asyncio_errors_expected``: asyncio rightly complains about those tasks.
    """
    if request.node.get_closest_marker("asyncio_errors_expected"):
        yield
        gc.collect()
        return
    gc.collect()
    collector = _ErrorCollector()
    logger = logging.getLogger("asyncio")
    logger.addHandler(collector)
    try:
        yield
        gc.collect()  # futures report unretrieved exceptions when collected
    finally:
        logger.removeHandler(collector)
    assert not collector.messages, f"asyncio logged errors: {collector.messages}"


@pytest.fixture(autouse=True)
def watchdog_never_fires(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the closed-loop backstop poll so rare that only real wake-ups make progress.

    Tests of the backstop itself (a loop closed by hand that aiothreads cannot
    observe, such as uvloop's) are marked ``watchdog`` and get a fast poll.
    """
    import aiothreads._loops

    fast = request.node.get_closest_marker("watchdog") is not None
    interval = WATCHDOG_FAST if fast else WATCHDOG_NEVER
    monkeypatch.setattr(aiothreads._loops, "LOOP_WATCHDOG_INTERVAL", interval)
