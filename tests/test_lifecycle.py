"""Loops and the interpreter going away: no hang, no leak, no lost work."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import pytest

from aiothreads import (
    LoopClosedError,
    sync_wait_coroutine,
    threaded,
    threaded_iterable,
    wait_coroutine,
)
from aiothreads._bridge import _Waiter
from aiothreads._inflight import codes_running
from aiothreads._loops import Closable, LoopState
from tests.loops import loop_in_thread
from tests.python_process import run_dev_script

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Tracer = Callable[[FrameType, str, Any], Any]

EXIT_SCRIPT = """
import asyncio, atexit, sys, threading
import aiothreads

if sys.argv[1] == "uvloop":
    import uvloop
    new_loop = uvloop.new_event_loop
else:
    new_loop = asyncio.new_event_loop

started, exiting = threading.Event(), threading.Event()
atexit.register(exiting.set)  # runs before aiothreads' own exit handler (registered earlier)

@aiothreads.threaded
def slow_write():
    started.set()
    exiting.wait()  # still running when the interpreter exits
    print("threaded finished", flush=True)

def plain_write():
    started.set()
    exiting.wait()
    print("executor finished", flush=True)

async def start(kind):
    if kind == "threaded":
        slow_write()
    else:
        await asyncio.sleep(0)
        slow_write().cancel  # installs the pool as the loop's default executor
        started.wait()
        started.clear()
        asyncio.get_running_loop().run_in_executor(None, plain_write)

loop = new_loop()
loop.run_until_complete(start(sys.argv[2]))
started.wait()
loop.close()  # by hand, with the work still running
"""


@pytest.mark.parametrize("kind", ["threaded", "executor"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_work_running_in_the_pool_finishes_at_interpreter_exit(loop: str, kind: str) -> None:
    completed = run_dev_script(EXIT_SCRIPT, loop, kind)
    assert completed.returncode == 0, completed.stderr
    assert f"{kind} finished" in completed.stdout
    assert "Traceback" not in completed.stderr


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_closed_loops_and_their_descriptors_are_collected_even_with_late_results(
    loop_factory: LoopFactory,
) -> None:
    release = threading.Event()

    @threaded
    def late() -> int:
        release.wait()
        return 1

    async def fire_and_forget() -> None:
        late()

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    threads_before = set(threading.enumerate())
    gc.collect()
    descriptors_before = open_descriptors()
    for _ in range(100):
        loop = loop_factory()
        loop.run_until_complete(fire_and_forget())
        loops.append(weakref.ref(loop))
        release.set()  # the result lands after the loop stopped
        loop.close()
        release.clear()
        del loop
    release.set()
    for thread in set(threading.enumerate()) - threads_before:
        thread.join()  # executors of closed loops finish delivering (or dropping) results
    gc.collect()
    alive = [reference for reference in loops if reference() is not None]
    assert alive == []
    assert open_descriptors() - descriptors_before < 5


def test_many_loops_in_many_threads_start_run_and_close_at_once() -> None:
    @threaded
    def double(value: int) -> int:
        return value * 2

    @threaded_iterable(max_size=1)
    def count(limit: int) -> Generator[int, None, None]:
        yield from range(limit)

    async def work() -> int:
        total = sum(await asyncio.gather(*(double(value) for value in range(5))))
        async for item in count(3):
            total += item
        return total

    failures: list[BaseException] = []

    def run_many() -> None:
        try:
            for _ in range(20):
                assert asyncio.run(work()) == 23
        except BaseException as exc:
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


@pytest.mark.asyncio
async def test_cancelling_a_call_frees_its_thread_blocked_on_another_loop(
    loop_factory: LoopFactory,
) -> None:
    entered, returned = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        entered.set()
        await asyncio.Event().wait()

    @threaded
    def bridge(other: asyncio.AbstractEventLoop) -> None:
        try:
            sync_wait_coroutine(other, forever)
        except BaseException as exc:
            outcome.append(exc)
            returned.set()
            raise

    with loop_in_thread(loop_factory) as other:
        call = bridge(other)
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The thread returns once the other loop cancelled the coroutine, which
        # must have been asked to on its own thread (nothing else wakes it).
        assert await asyncio.get_running_loop().run_in_executor(None, returned.wait, 5)
    assert isinstance(outcome[0], asyncio.CancelledError)


@pytest.mark.asyncio
@pytest.mark.watchdog  # uvloop's close is announced to nobody: the backstop ends the wait
@pytest.mark.asyncio_errors_expected  # the other loop closes with the coroutine pending
async def test_cancelling_a_call_after_the_loop_it_waited_on_closed_is_quiet(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    entered, gave_up, cancelled = threading.Event(), threading.Event(), threading.Event()
    finished = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        entered.set()
        await asyncio.Event().wait()

    @threaded
    def bridge(other: asyncio.AbstractEventLoop) -> None:
        try:
            sync_wait_coroutine(other, forever)
        except LoopClosedError as exc:
            outcome.append(exc)
            gave_up.set()
            cancelled.wait(5)  # still running when its caller cancels it
        finally:
            finished.set()

    loop = asyncio.get_running_loop()
    with loop_in_thread(loop_factory) as other:
        call = bridge(other)
        assert await loop.run_in_executor(None, entered.wait, 5)
    # The other loop is closed; the thread learns it and goes on running.
    assert await loop.run_in_executor(None, gave_up.wait, 5)
    call.cancel()  # asks the closed loop to cancel the coroutine: nothing to do, no error
    cancelled.set()
    assert await loop.run_in_executor(None, finished.wait, 5)  # the loop ran the callbacks
    with pytest.raises(asyncio.CancelledError):
        await call
    assert [type(exc) for exc in outcome] == [LoopClosedError]
    failed_callbacks = [
        record for record in caplog.records if "Exception in callback" in record.getMessage()
    ]
    assert failed_callbacks == []


@pytest.mark.watchdog  # the loop never ran: nothing announces its close
def test_a_coroutine_for_a_loop_that_closed_before_it_ran_is_closed(
    loop_factory: LoopFactory,
) -> None:
    loop = loop_factory()

    async def never_runs() -> None:
        raise AssertionError("ran on a closed loop")

    coroutine = never_runs()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            wait_coroutine(coroutine, loop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    loop.close()  # the loop never ran what was sent to it
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], LoopClosedError)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


@pytest.mark.asyncio
async def test_an_unawaited_close_whose_cleanup_raises_leaves_nothing_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    yielded = threading.Event()

    @threaded_iterable(max_size=1)
    def fragile() -> Generator[int, None, None]:
        try:
            while True:
                yield 1
                yielded.set()
        finally:
            raise ValueError("cleanup failed")

    iterator = fragile()
    async for _ in iterator:
        break
    with caplog.at_level(logging.ERROR, logger="aiothreads"):
        iterator.close()  # not awaited
        with pytest.raises(ValueError, match="cleanup failed"):  # waiting shows it too
            await asyncio.wait_for(iterator.wait_closed(), 5)
    assert any(
        record.message == "a threaded generator failed while it was being stopped"
        for record in caplog.records
    )


EXIT_WITH_THREADS_SCRIPT = """
import asyncio, aiothreads

@aiothreads.threaded
def value():
    return 1

async def main():
    assert await value() == 1

for _ in range(3):
    asyncio.run(main())
print("done", flush=True)
"""


def test_an_idle_pool_never_holds_the_interpreter_up() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-W",
            "error",
            "-c",
            textwrap.dedent(EXIT_WITH_THREADS_SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "done"


def thread_waiting_on(
    loop: asyncio.AbstractEventLoop,
    started: threading.Event,
    outcomes: dict[str, BaseException],
    *,
    tracer: Tracer | None = None,
    done: threading.Event | None = None,
) -> threading.Thread:
    """A thread (not started) that waits on ``loop`` for a coroutine that never finishes.

    ``started`` is set once the coroutine runs; what the wait raised lands in
    ``outcomes["sync_await"]``. A daemon, so that a test that fails cannot hang.
    """

    async def never_finishes() -> None:
        started.set()
        await asyncio.Event().wait()

    def wait() -> None:
        if tracer is not None:
            sys.settrace(tracer)
        try:
            wait_coroutine(never_finishes(), loop)
        except BaseException as exc:
            outcomes["sync_await"] = exc
        finally:
            sys.settrace(None)
            if done is not None:
                done.set()

    return threading.Thread(target=wait, daemon=True)


@pytest.mark.asyncio_errors_expected  # the coroutine the closed loop never finished
def test_closing_a_loop_by_hand_releases_its_waiting_threads_at_once() -> None:
    # asyncio's loop with aiothreads' pool as its default executor: loop.close()
    # shuts the pool down, which announces the close (no backstop poll needed).
    loop = asyncio.new_event_loop()
    blocked, submitted, finalized = threading.Event(), threading.Event(), threading.Event()
    outcomes: dict[str, BaseException] = {}

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

    kept = []

    async def start() -> None:
        stream = endless()
        kept.append(stream)
        await stream.__anext__()
        thread = thread_waiting_on(loop, submitted, outcomes)
        thread.start()
        kept.append(thread)
        await loop.run_in_executor(None, submitted.wait, 5)

    loop.run_until_complete(start())
    assert blocked.wait(5)
    loop.close()
    kept[1].join()
    assert isinstance(outcomes["sync_await"], LoopClosedError)
    assert finalized.wait(5), "the producer stayed blocked after the loop closed"


@pytest.mark.asyncio_errors_expected  # the coroutine the closed loop never finished
def test_a_thread_that_starts_waiting_just_as_the_loop_closes_is_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The close is announced to the waiters registered at that moment; a thread
    # whose coroutine already runs but that has not registered yet must still
    # see the close when it does.
    loop = asyncio.new_event_loop()
    started, closed = threading.Event(), threading.Event()
    outcomes: dict[str, BaseException] = {}
    register = LoopState.add_waiter

    def register_once_closed(state: LoopState, waiter: Closable) -> None:
        closed.wait(5)
        register(state, waiter)

    monkeypatch.setattr(LoopState, "add_waiter", register_once_closed)

    thread = thread_waiting_on(loop, started, outcomes)

    async def start() -> None:
        await threaded(lambda: None)()  # the pool becomes the loop's default executor
        thread.start()
        await loop.run_in_executor(None, started.wait, 5)

    loop.run_until_complete(start())
    loop.close()
    closed.set()
    thread.join(5)
    assert not thread.is_alive(), "the thread kept waiting on the closed loop"
    assert isinstance(outcomes["sync_await"], LoopClosedError)


@pytest.mark.asyncio_errors_expected  # the coroutine the closed loop never finished
def test_a_close_announced_while_the_thread_finds_the_loop_closed_itself_is_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The thread registers as the loop closes; the closing thread announces the
    # close to it while the thread also finds the loop closed. Both may not
    # release the thread's wait: the second release would raise in loop.close().
    # Tracers hold each thread at a bytecode boundary, where the GIL may switch.
    loop = asyncio.new_event_loop()
    started, announcing, thread_done = threading.Event(), threading.Event(), threading.Event()
    registered, released_here, closer_done = threading.Event(), threading.Event(), threading.Event()
    outcomes: dict[str, BaseException] = {}
    announce = codes_running(_Waiter.loop_closed)  # a mutation tester runs copies of them
    wait = codes_running(_Waiter.wait)
    register = LoopState.add_waiter

    def register_then_let_the_close_begin(state: LoopState, waiter: Closable) -> None:
        register(state, waiter)
        registered.set()
        announcing.wait(5)

    monkeypatch.setattr(LoopState, "add_waiter", register_then_let_the_close_begin)

    def hold_the_closer(frame: FrameType, event: str, arg: object) -> Tracer | None:
        if frame.f_code not in announce:
            return None
        lines = 0

        def after_its_check(frame: FrameType, event: str, arg: object) -> Tracer:
            nonlocal lines
            if event == "line":
                lines += 1
                if lines == 2:  # it found the wait not yet released
                    announcing.set()
                    thread_done.wait(5)
            return after_its_check

        return after_its_check

    def hold_the_thread(frame: FrameType, event: str, arg: object) -> Tracer | None:
        if frame.f_code in announce:

            def on_return(frame: FrameType, event: str, arg: object) -> Tracer:
                if event == "return":
                    released_here.set()
                return on_return

            return on_return
        if frame.f_code in wait:

            def before_taking_it(frame: FrameType, event: str, arg: object) -> Tracer:
                if event == "line" and released_here.is_set() and not thread_done.is_set():
                    thread_done.set()  # released by this thread, not yet taken
                    closer_done.wait(5)
                return before_taking_it

            return before_taking_it
        return None

    thread = thread_waiting_on(loop, started, outcomes, tracer=hold_the_thread, done=thread_done)

    async def start() -> None:
        await threaded(lambda: None)()  # the pool becomes the loop's default executor
        thread.start()
        await loop.run_in_executor(None, started.wait, 5)

    loop.run_until_complete(start())
    assert registered.wait(5), "the thread never began to wait"
    tracing = sys.gettrace()
    sys.settrace(hold_the_closer)
    try:
        loop.close()
    finally:
        sys.settrace(tracing)
        closer_done.set()
    thread.join(5)
    assert announcing.is_set(), "the close was never announced to the thread"
    assert isinstance(outcomes["sync_await"], LoopClosedError)
