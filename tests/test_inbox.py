"""The loop inbox: callbacks posted by threads run on the loop, in order, one wake-up per batch."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from aiothreads import threaded
from aiothreads._inbox import LoopInbox, inbox_for
from tests.waiting import turns_until

LINUX_SELECTOR_LOOP = sys.platform == "linux" and hasattr(os, "eventfd")


def _fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.asyncio
async def test_callbacks_posted_from_threads_run_on_the_loop_in_order() -> None:
    loop = asyncio.get_running_loop()
    inbox = inbox_for(loop)
    seen: list[tuple[int, bool]] = []
    all_done = asyncio.Event()

    def record(number: int) -> None:
        seen.append((number, threading.get_ident() == loop_thread))
        if number == 999:
            all_done.set()

    loop_thread = threading.get_ident()

    def produce() -> None:
        for number in range(1000):
            inbox.post(record, number)

    producer = threading.Thread(target=produce)
    producer.start()
    await all_done.wait()
    producer.join()

    assert seen == [(number, True) for number in range(1000)]


@pytest.mark.asyncio
async def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, report: reports.append(report))
    after = asyncio.Event()

    def broken() -> None:
        raise ValueError("broken")

    try:
        inbox = inbox_for(loop)
        thread = threading.Thread(target=lambda: (inbox.post(broken), inbox.post(after.set)))
        thread.start()
        await after.wait()
        thread.join()
    finally:
        loop.set_exception_handler(None)

    assert [type(report["exception"]) for report in reports] == [ValueError]


def test_posting_to_a_closed_loop_raises_like_call_soon_threadsafe(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    loop = loop_factory()
    inbox = inbox_for(loop)
    loop.close()

    with pytest.raises(RuntimeError, match="closed"):
        inbox.post(print)


@pytest.mark.skipif(not LINUX_SELECTOR_LOOP, reason="eventfd is Linux only")
def test_asyncio_loops_are_woken_through_an_eventfd_closed_once_the_loop_is_gone() -> None:
    async def main() -> int:
        inbox = inbox_for(asyncio.get_running_loop())
        fd = inbox._fd
        assert fd is not None
        assert _fd_is_open(fd)
        return fd

    fd = asyncio.run(main())
    gc.collect()

    assert not _fd_is_open(fd) or os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]"


def test_uvloop_keeps_its_own_thread_safe_wake_up() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> int | None:
        return inbox_for(asyncio.get_running_loop())._fd

    assert uvloop.run(main()) is None


@pytest.mark.skipif(not LINUX_SELECTOR_LOOP, reason="counts /proc/self/fd")
def test_many_loops_leave_no_descriptors_behind() -> None:
    @threaded
    def blocking(value: int) -> int:
        return value

    async def main() -> int:
        return await blocking(1)

    asyncio.run(main())
    before = _open_fds()
    for _ in range(50):
        assert asyncio.run(main()) == 1
    gc.collect()

    assert _open_fds() <= before


@pytest.mark.skipif(not LINUX_SELECTOR_LOOP, reason="eventfd is Linux only")
def test_a_loop_closed_without_shutting_down_has_its_eventfd_closed_once_it_is_gone() -> None:
    loop = asyncio.new_event_loop()

    async def open_inbox() -> LoopInbox:
        return inbox_for(asyncio.get_running_loop())

    fd = loop.run_until_complete(open_inbox())._fd
    assert fd is not None
    loop.close()

    async def another_loop() -> None:
        inbox_for(asyncio.get_running_loop())

    asyncio.run(another_loop())  # sweeps the closed loop
    del loop
    gc.collect()

    assert not _fd_is_open(fd) or os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]"


def test_outcomes_of_calls_still_arrive_while_the_loop_shuts_down() -> None:
    """After shutdown_asyncgens the eventfd is gone; results come through call_soon_threadsafe."""
    release = threading.Event()

    @threaded
    def slow() -> str:
        release.wait(5)
        return "done"

    async def main() -> str:
        loop = asyncio.get_running_loop()
        pending = slow()
        await loop.shutdown_asyncgens()
        release.set()
        return await pending

    assert asyncio.run(main()) == "done"


@pytest.mark.skipif(not LINUX_SELECTOR_LOOP, reason="eventfd is Linux only")
def test_a_callback_posted_just_before_the_loop_shuts_down_still_runs() -> None:
    """Its wake-up went to the eventfd, which the shutdown stops watching: it is handed on."""
    seen: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        inbox = inbox_for(loop)
        assert inbox._fd is not None
        poster = threading.Thread(target=inbox.post, args=(seen.append, "posted"))
        poster.start()
        poster.join()  # posted and signalled; the loop has not looked at the eventfd yet
        await loop.shutdown_asyncgens()
        await turns_until(lambda: seen == ["posted"], "the posted callback runs")

    asyncio.run(main())


def test_keyboard_interrupt_in_a_callback_propagates_and_later_ones_still_run(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    loop = loop_factory()
    seen: list[str] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    async def post_both_and_wait() -> None:
        inbox = inbox_for(loop)
        thread = threading.Thread(
            target=lambda: (inbox.post(interrupt), inbox.post(seen.append, "later"))
        )
        thread.start()
        thread.join()
        await asyncio.sleep(3600)

    async def settle() -> None:
        await asyncio.sleep(0)

    try:
        main = loop.create_task(post_both_and_wait())
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(main)
        loop.run_until_complete(settle())
        main.cancel()
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    assert seen == ["later"]
