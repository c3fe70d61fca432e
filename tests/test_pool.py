"""The worker pool aiothreads installs as an asyncio loop's default executor."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest

from aiothreads import threaded
from aiothreads._asyncio_internals import default_executor_of
from aiothreads._executor import default_executor
from aiothreads._pool import WorkerPool


@threaded
def thread_name() -> str:
    return threading.current_thread().name


def test_pool_is_a_thread_pool_executor() -> None:
    with WorkerPool(max_workers=2) as pool:
        assert isinstance(pool, ThreadPoolExecutor)
        assert pool.submit(pow, 2, 10).result(5) == 1024
        assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]
        future = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            future.result(5)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(abs, 1)


def test_pool_never_exceeds_max_workers() -> None:
    release = threading.Event()
    with WorkerPool(max_workers=2) as pool:
        futures = [pool.submit(release.wait, 5) for _ in range(6)]
        assert len(pool._workers) == 2
        release.set()
        assert all(future.result(5) for future in futures)


def test_shutdown_can_cancel_queued_work() -> None:
    release = threading.Event()
    pool = WorkerPool(max_workers=1)
    running = pool.submit(release.wait, 5)
    queued = pool.submit(abs, -1)
    release.set()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(5)
    if queued.cancelled():
        with pytest.raises(CancelledError):
            queued.result()
    else:
        assert queued.result() == 1


def test_bad_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        WorkerPool(max_workers=0)


@pytest.mark.asyncio
async def test_installed_as_the_default_executor_of_loops_without_one() -> None:
    loop = asyncio.get_running_loop()
    name = await thread_name()
    assert isinstance(default_executor(loop), WorkerPool)
    assert name.startswith("aiothreads_")
    # Code that uses the loop's executor directly shares the same pool.
    assert (await asyncio.to_thread(lambda: threading.current_thread().name)).startswith(
        "aiothreads_"
    )


@pytest.mark.asyncio
async def test_an_executor_set_after_the_first_call_is_used_from_then_on() -> None:
    loop = asyncio.get_running_loop()
    assert (await thread_name()).startswith("aiothreads_")
    executor = ThreadPoolExecutor(1, thread_name_prefix="set-later")
    loop.set_default_executor(executor)
    try:
        assert default_executor(loop) is executor
        assert (await thread_name()).startswith("set-later")
    finally:
        executor.shutdown(wait=True)


@pytest.mark.asyncio
async def test_executor_set_by_the_application_wins() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="app-pool"))
    assert (await thread_name()).startswith("app-pool")


@pytest.mark.asyncio
async def test_executor_replaced_after_first_use_wins() -> None:
    loop = asyncio.get_running_loop()
    await thread_name()
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="later-pool"))
    assert (await thread_name()).startswith("later-pool")


def test_asyncio_run_waits_for_running_calls() -> None:
    started, shutting_down, finished = threading.Event(), threading.Event(), threading.Event()

    @threaded
    def slow() -> None:
        started.set()
        shutting_down.wait(5)  # still running when asyncio.run shuts the pool down
        finished.set()

    async def main() -> None:
        slow()  # not awaited: asyncio.run still waits for it at shutdown
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        known, pool = default_executor_of(asyncio.get_running_loop())
        assert known
        assert isinstance(pool, WorkerPool)
        shut_down = pool.shutdown

        def announce_then_shut_down(wait: bool = True, *, cancel_futures: bool = False) -> None:
            shutting_down.set()
            shut_down(wait, cancel_futures=cancel_futures)

        pool.shutdown = announce_then_shut_down  # type: ignore[method-assign]

    asyncio.run(main())
    assert shutting_down.is_set()
    assert finished.is_set()
