"""The task behind sync_await runs its first step at once, and is a real task throughout."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from aiothreads import sync_await, threaded


class _Failure(Exception):
    pass


@pytest.mark.asyncio
async def test_a_coroutine_that_does_not_suspend_sees_its_task_as_current() -> None:
    async def current() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    @threaded
    def work() -> asyncio.Task[Any] | None:
        return sync_await(current)

    task = await work()
    assert task is not None
    assert task is not asyncio.current_task()


@pytest.mark.asyncio
async def test_the_current_task_stays_the_same_across_suspensions() -> None:
    async def tasks_seen() -> tuple[Any, Any]:
        before = asyncio.current_task()
        await asyncio.sleep(0)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, None)
        await future
        return before, asyncio.current_task()

    @threaded
    def work() -> tuple[Any, Any]:
        return sync_await(tasks_seen)

    before, after = await work()
    assert before is not None
    assert before is after
    assert before.done()


@pytest.mark.asyncio
async def test_a_timeout_inside_the_coroutine_cancels_only_the_coroutine() -> None:
    async def too_slow() -> str:
        try:
            await asyncio.wait_for(asyncio.Event().wait(), 0.01)
        except asyncio.TimeoutError:
            return "timed out"
        return "finished"

    @threaded
    def work() -> str:
        return sync_await(too_slow)

    assert await work() == "timed out"


@pytest.mark.asyncio
async def test_a_failure_in_the_first_step_reaches_the_thread() -> None:
    async def fail_at_once() -> None:
        raise _Failure("first step")

    @threaded
    def work() -> None:
        sync_await(fail_at_once)

    with pytest.raises(_Failure, match="first step"):
        await work()


@pytest.mark.asyncio
async def test_a_coroutine_cancelled_after_it_suspended_cancels_the_thread_wait() -> None:
    started = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []

    async def wait_forever() -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        started.set()
        await asyncio.Event().wait()

    @threaded
    def work() -> str:
        try:
            sync_await(wait_forever)
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    call = work()
    await started.wait()
    tasks[0].cancel()
    assert await call == "cancelled"


@pytest.mark.asyncio
async def test_a_task_factory_the_application_set_is_honoured_and_its_task_keeps_the_name() -> None:
    """The factory makes the task; it is named after the coroutine and the calling thread,
    as a task started eagerly is."""
    loop = asyncio.get_running_loop()
    made: list[str] = []
    names: list[str] = []
    thread_names: list[str] = []

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        made.append(type(coro).__name__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def answer() -> int:
        task = asyncio.current_task()
        assert task is not None
        names.append(task.get_name())
        await asyncio.sleep(0)
        return 42

    @threaded
    def work() -> int:
        thread_names.append(threading.current_thread().name)
        return sync_await(answer)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        assert await work() == 42
    finally:
        loop.set_task_factory(None)
    assert made == ["coroutine"]
    assert names == [f"sync_await:{answer.__qualname__} from {thread_names[0]}"]
