"""The writer of pool numbers in multiprocess mode: written when poked, followed while busy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING

from aiothreads.instrumentation import _pool_publisher
from aiothreads.instrumentation._pool_publisher import PoolPublisher

if TYPE_CHECKING:
    import pytest

INTERVAL = 0.01
WAIT = 10.0


class Pools:
    """Stands for ``_write_pools``: counts writes; ``busy`` says whether a pool has work."""

    def __init__(self) -> None:
        self.busy = False
        self.writes = 0
        self.writer: threading.Thread | None = None

    def write(self) -> bool:
        self.writes += 1
        self.writer = threading.current_thread()
        return self.busy


def test_nothing_is_written_or_started_before_a_poke() -> None:
    pools = Pools()
    publisher = PoolPublisher(pools.write, INTERVAL)
    assert not publisher.wait_for(after=0, timeout=10 * INTERVAL)
    assert pools.writes == 0
    assert not any(t.name == "aiothreads-pool-metrics" for t in threading.enumerate())
    publisher.stop()


def test_a_poke_writes_at_once_then_once_more_then_the_writer_sleeps() -> None:
    pools = Pools()
    publisher = PoolPublisher(pools.write, INTERVAL)
    try:
        publisher.poke()
        assert publisher.wait_for(after=1, quiet=True, timeout=WAIT)
        assert pools.writer is not None
        assert pools.writer.name == "aiothreads-pool-metrics"
        assert pools.writer.daemon
        assert not publisher.wait_for(after=2, timeout=20 * INTERVAL)  # no timer, no poll
        assert pools.writes == 2
    finally:
        publisher.stop()


def test_the_files_follow_a_busy_pool_until_it_is_quiet() -> None:
    pools = Pools()
    pools.busy = True
    publisher = PoolPublisher(pools.write, INTERVAL)
    try:
        publisher.poke()
        # Busy: written again and again with no poke after the first.
        assert publisher.wait_for(after=5, timeout=WAIT)
        pools.busy = False
        written = publisher.writes
        assert publisher.wait_for(after=written, quiet=True, timeout=WAIT)
        quiet = publisher.writes
        assert not publisher.wait_for(after=quiet + 1, timeout=20 * INTERVAL)
        publisher.poke()  # a new call wakes it again
        assert publisher.wait_for(after=publisher.writes, timeout=WAIT)
    finally:
        publisher.stop()


def test_a_failing_write_counts_as_busy_and_the_writer_goes_on() -> None:
    failures = []

    def write() -> bool:
        failures.append(1)
        raise OSError("no space left on device")

    publisher = PoolPublisher(write, INTERVAL)
    try:
        publisher.poke()
        assert publisher.wait_for(after=3, timeout=WAIT)
        assert not publisher.wait_for(after=0, quiet=True, timeout=0)
    finally:
        publisher.stop()


def test_stop_ends_the_writer_and_a_later_poke_starts_none() -> None:
    pools = Pools()
    pools.busy = True
    publisher = PoolPublisher(pools.write, INTERVAL)
    publisher.poke()
    assert publisher.wait_for(after=0, timeout=WAIT)
    writer = pools.writer
    publisher.stop()
    assert writer is not None
    assert not writer.is_alive()
    publisher.poke()
    assert not any(t.name == "aiothreads-pool-metrics" for t in threading.enumerate())


def test_a_poke_during_a_write_gets_a_write_of_its_own_and_then_the_follow_up() -> None:
    """A call that came while the pools were being written may not be in that write."""
    pools = Pools()
    writing = threading.Event()
    poked = threading.Event()

    def write() -> bool:
        if pools.writes == 0:
            writing.set()
            poked.wait(WAIT)  # the test pokes while this write runs
        return pools.write()

    publisher = PoolPublisher(write, INTERVAL)
    try:
        publisher.poke()
        assert writing.wait(WAIT)
        publisher.poke()
        poked.set()
        assert publisher.wait_for(after=2, quiet=True, timeout=WAIT)  # its own, the follow-up
        assert not publisher.wait_for(after=3, timeout=20 * INTERVAL)  # then it sleeps
        assert pools.writes == 3
    finally:
        publisher.stop()


def test_a_publisher_stopped_before_any_poke_never_starts_a_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def start(self) -> None:
            started.append(self)
            super().start()

    monkeypatch.setattr(_pool_publisher.threading, "Thread", Recorded)
    publisher = PoolPublisher(Pools().write, INTERVAL)
    publisher.stop()
    publisher.poke()
    for thread in started:
        thread.join(WAIT)
    assert [thread.name for thread in started] == []


FORK = """
import os, threading
from typing import TYPE_CHECKING

from aiothreads.instrumentation import _pool_publisher
from aiothreads.instrumentation._pool_publisher import PoolPublisher

if TYPE_CHECKING:
    import pytest

writes = []
publisher = PoolPublisher(lambda: writes.append(os.getpid()) or False, 0.01)
publisher.poke()
assert publisher.wait_for(after=0, timeout=10)
child = os.fork()
if child == 0:
    names = [t.name for t in threading.enumerate()]
    assert "aiothreads-pool-metrics" not in names, names  # the parent's writer is not here
    publisher.poke()
    assert publisher.wait_for(after=publisher.writes, timeout=10)  # a writer of its own
    assert writes[-1] == os.getpid()
    publisher.stop()
    os._exit(0)
_, status = os.waitpid(child, 0)
publisher.stop()
assert os.waitstatus_to_exitcode(status) == 0, status
print("ok")
"""


def test_a_forked_child_writes_its_own_numbers() -> None:
    completed = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(FORK)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert completed.stdout == "ok\n", completed.stderr
