"""Faults: loops closing mid-work, cancelled consumers, failing cleanup, dropped
iterators, executors shut down, interrupts raised in threads, interpreter exit."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor

import pytest

from aiothreads import threaded, threaded_iterable
from tests.python_process import run_dev_script


def test_loop_closed_mid_call_drops_the_result_quietly(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    @threaded
    def slow() -> int:
        started.set()
        release.wait(5)
        finished.set()
        return 1

    loop = loop_factory()
    executor = ThreadPoolExecutor(1)
    loop.set_default_executor(executor)

    async def submit() -> asyncio.Future[int]:
        return slow()  # type: ignore[return-value]

    future = loop.run_until_complete(submit())
    assert started.wait(5)
    loop.close()  # closed while the call runs, without shutting the executor down
    release.set()
    assert finished.wait(5)
    executor.shutdown(wait=True)
    assert not future.done()


@pytest.mark.watchdog  # the application's executor: nothing announces the close
def test_loop_closed_mid_stream_releases_the_producer(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    blocked, finalized = threading.Event(), threading.Event()

    @threaded_iterable(max_size=1)
    def endless() -> Generator[int, None, None]:
        try:
            number = 0
            while True:
                if number == 2:
                    blocked.set()
                yield number
                number += 1
        finally:
            finalized.set()

    loop = loop_factory()
    executor = ThreadPoolExecutor(1)
    loop.set_default_executor(executor)
    kept = []

    async def start() -> None:
        stream = endless()
        kept.append(stream)
        await stream.__anext__()

    loop.run_until_complete(start())
    assert blocked.wait(5)
    loop.close()
    assert finalized.wait(2), "the producer stayed blocked after the loop closed"
    executor.shutdown(wait=True)


@pytest.mark.asyncio
async def test_exception_in_the_generators_finally_on_break_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = threading.Event()

    @threaded_iterable(max_size=1)
    def bad_cleanup() -> Generator[int, None, None]:
        try:
            yield from range(100)
        finally:
            done.set()
            raise ValueError("cleanup failed")

    with caplog.at_level("ERROR", logger="aiothreads"):
        stream = bad_cleanup()
        async for item in stream:
            if item == 3:
                break
        # The generator was stopped by the break; nobody awaits its thread, so
        # the failure is logged. wait_closed() lets the test see it happen.
        with pytest.raises(ValueError, match="cleanup failed"):
            await stream.wait_closed()
    assert done.is_set()
    assert any("cleanup failed" in str(record.exc_info) for record in caplog.records)


@pytest.mark.asyncio
@pytest.mark.parametrize("started", [True, False])
async def test_iterator_dropped_from_another_thread(started: bool) -> None:
    finalized = threading.Event()
    ran = threading.Event()

    @threaded_iterable(max_size=1)
    def endless() -> Generator[int, None, None]:
        ran.set()
        try:
            while True:
                yield 1
        finally:
            finalized.set()

    stream = endless()
    if started:
        await stream.__anext__()
    holder = [stream]
    del stream

    def drop() -> None:
        holder.clear()
        gc.collect()

    dropper = threading.Thread(target=drop)
    dropper.start()
    await asyncio.get_running_loop().run_in_executor(None, dropper.join, 5)
    if started:
        assert await asyncio.get_running_loop().run_in_executor(None, finalized.wait, 5)
    else:
        assert not ran.is_set()


@pytest.mark.asyncio
async def test_executor_shut_down_while_calls_are_queued() -> None:
    release = threading.Event()
    executor = ThreadPoolExecutor(1)
    asyncio.get_running_loop().set_default_executor(executor)

    @threaded
    def hold() -> None:
        release.wait(5)

    @threaded
    def queued(value: int) -> int:
        return value

    blocker = hold()
    waiting = [queued(value) for value in range(5)]
    shutdown = threading.Thread(target=executor.shutdown, kwargs={"cancel_futures": True})
    shutdown.start()
    release.set()
    await blocker
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    shutdown.join(5)
    # No call hangs: each one ran, or fails saying the executor dropped it.
    for value, outcome in zip(range(5), outcomes, strict=True):
        if isinstance(outcome, asyncio.CancelledError):
            continue  # uvloop: the loop's own future reports the executor's cancellation
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, RuntimeError)
            assert "shut down" in str(outcome)
        else:
            assert outcome == value
    with pytest.raises(RuntimeError, match="shutdown"):
        await queued(1)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_raised_in_a_thread_reach_the_caller(
    interrupt: type[BaseException], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    @threaded
    def interrupted() -> None:
        raise interrupt("from the thread")

    loop = loop_factory()
    try:
        with pytest.raises(interrupt):
            loop.run_until_complete(interrupted())  # type: ignore[arg-type]
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_interpreter_exits_promptly_with_detached_threads_running() -> None:
    completed = run_dev_script(
        """
        import asyncio, threading
        from aiothreads import threaded_separate, threaded_iterable_separate

        started = threading.Barrier(3, timeout=5)

        @threaded_separate
        def forever():
            started.wait()
            threading.Event().wait()

        @threaded_iterable_separate
        def endless():
            started.wait()
            while True:
                yield 1

        async def main():
            forever()
            stream = endless()
            task = asyncio.ensure_future(stream.__anext__())
            await asyncio.get_running_loop().run_in_executor(None, started.wait)
            await task
            main.stream = stream

        asyncio.run(main())
        print("bye")
        """
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "bye"
    assert "Traceback" not in completed.stderr
