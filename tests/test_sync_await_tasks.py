"""The task behind sync_await is the user's: its coroutine, its context, its name, its awaiters."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from typing import Any

import pytest

from aiothreads import sync_await, threaded

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def sets_then_suspends() -> str:
    var.set("set-in-first-step")
    await asyncio.sleep(0.01)
    return var.get()


@pytest.mark.asyncio
async def test_a_value_set_in_the_first_step_persists_across_awaits() -> None:
    @threaded
    def work() -> str:
        return sync_await(sets_then_suspends)

    assert await asyncio.create_task(sets_then_suspends()) == "set-in-first-step"
    assert await work() == "set-in-first-step"


@pytest.mark.asyncio
async def test_the_coroutine_sees_the_threads_values_and_does_not_change_them() -> None:
    async def reads_then_sets() -> str:
        seen = var.get()
        var.set("changed on the loop")
        await asyncio.sleep(0)
        return seen

    @threaded
    def work() -> tuple[str, str]:
        var.set("set in the thread")
        seen = sync_await(reads_then_sets)
        return seen, var.get()

    assert await work() == ("set in the thread", "set in the thread")
    assert var.get() == "unset"


@pytest.mark.asyncio
async def test_two_coroutines_from_one_thread_each_get_their_own_copy() -> None:
    async def sets(value: str) -> str:
        var.set(value)
        await asyncio.sleep(0)
        return var.get()

    @threaded
    def work() -> list[str]:
        return [sync_await(sets, "first"), sync_await(sets, "second"), var.get()]

    assert await work() == ["first", "second", "unset"]


async def audit(seen: list[asyncio.Task[Any]]) -> int:
    task = asyncio.current_task()
    assert task is not None
    seen.append(task)
    await asyncio.sleep(0)
    return 1


@pytest.mark.asyncio
async def test_the_task_holds_the_users_coroutine_and_is_named_after_it_and_the_thread() -> None:
    seen: list[asyncio.Task[Any]] = []
    thread_names: list[str] = []

    @threaded
    def scan() -> int:
        thread_names.append(threading.current_thread().name)
        return sync_await(audit, seen)

    assert await scan() == 1
    (task,) = seen
    assert task.get_name() == f"sync_await:audit from {thread_names[0]}"
    coro = task.get_coro()
    assert getattr(coro, "cr_code", None) is audit.__code__
    assert "audit()" in repr(task)
    for internal in ("_Waiter", "_drive", "_FirstStepTaken", "aiothreads/_"):
        assert internal not in repr(task)


@pytest.mark.asyncio
async def test_a_pending_sync_await_task_is_listed_among_all_tasks_under_its_name() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def blocked() -> str:
        started.set()
        await release.wait()
        return "done"

    @threaded
    def work() -> str:
        return sync_await(blocked)

    call = asyncio.ensure_future(work())
    await started.wait()
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert any(name.startswith("sync_await:") and "blocked" in name for name in names), names
    release.set()
    assert await call == "done"


@pytest.mark.asyncio
async def test_a_plain_callable_runs_on_the_loop_without_a_task() -> None:
    tasks_before: list[int] = []

    def count_tasks() -> int:
        tasks_before.append(len(asyncio.all_tasks()))
        return 7

    @threaded
    def work() -> int:
        return sync_await(count_tasks)

    assert await work() == 7


@pytest.mark.skipif(sys.version_info < (3, 14), reason="asyncio's call graph is new in 3.14")
@pytest.mark.asyncio
async def test_the_task_awaiting_the_threaded_call_is_recorded_as_awaiting_the_coroutine() -> None:
    graphs: list[Any] = []

    async def audited() -> None:
        graphs.append(asyncio.capture_call_graph())  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        graphs.append(asyncio.capture_call_graph())  # type: ignore[attr-defined]

    @threaded
    def scan() -> None:
        sync_await(audited)

    async def scan_job() -> None:
        await scan()

    job = asyncio.create_task(scan_job(), name="scan-job")
    await job
    after_suspending = graphs[-1]
    assert after_suspending.future.get_name().startswith("sync_await:")
    assert [parent.future.get_name() for parent in after_suspending.awaited_by] == ["scan-job"]
    (parent,) = after_suspending.awaited_by
    assert [entry.frame.f_code.co_name for entry in parent.call_stack] == ["scan_job"]
    assert not getattr(job, "_asyncio_awaited_by", None)


async def lookup(key: str) -> str:
    return key


@pytest.mark.asyncio
async def test_sync_await_written_in_async_code_says_to_await_instead() -> None:
    with pytest.raises(RuntimeError) as raised:
        sync_await(lookup, "a")
    assert str(raised.value) == (
        "sync_await() was called on the event loop's own thread, in async code: waiting there "
        "would block the loop. Write 'await lookup(...)' instead; sync_await() is for "
        "blocking code running in a thread (a function decorated with @threaded)."
    )


@pytest.mark.asyncio
async def test_wait_coroutine_written_in_async_code_names_the_coroutine_and_closes_it() -> None:
    from aiothreads import wait_coroutine

    coro = lookup("a")
    with pytest.raises(RuntimeError) as raised:
        wait_coroutine(coro)
    assert str(raised.value).startswith(
        "wait_coroutine() was called on the event loop's own thread, in async code: "
        "waiting there would block the loop. Write 'await lookup(...)' instead;"
    )
    assert coro.cr_frame is None  # closed: it never warns that it was never awaited


@pytest.mark.skipif(sys.version_info < (3, 14), reason="python -m asyncio pstree is new in 3.14")
def test_asyncio_pstree_of_a_live_process_links_the_scan_job_to_its_sync_await_task() -> None:
    import subprocess

    from tests.stuck_service import SERVICE, start

    service = start(SERVICE, "secret")
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "asyncio", "pstree", str(service.pid)],
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
    finally:
        service.kill()
        service.wait(10)
        for stream in (service.stdout, service.stderr):
            if stream is not None:
                stream.close()
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    scan = next(i for i, line in enumerate(lines) if "(T) scan-job" in line)
    below = lines[scan + 1 : scan + 4]
    assert "scan_job" in below[0]
    assert "(T) sync_await:audit from aiothreads_" in below[1]
    assert "audit" in below[2]
    assert not any("_Waiter" in line or "_drive" in line for line in lines)


@pytest.mark.watchdog  # a loop closed by hand: the waiting thread notices it by looking
@pytest.mark.asyncio_errors_expected  # the pending task is destroyed with its loop, on purpose
def test_a_destroyed_pending_task_is_reported_under_the_users_coroutine(
    loop_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import gc
    import logging

    from aiothreads import LoopClosedError, sync_wait_coroutine

    started = threading.Event()
    outcomes: list[BaseException] = []

    async def never_finishes() -> None:
        started.set()
        await asyncio.Event().wait()

    def waits(loop: asyncio.AbstractEventLoop) -> None:
        try:
            sync_wait_coroutine(loop, never_finishes)
        except BaseException as exc:
            outcomes.append(exc)

    loop = loop_factory()
    thread = threading.Thread(target=waits, args=(loop,), name="the-waiter")
    thread.start()
    loop.run_until_complete(loop.run_in_executor(None, started.wait, 5))
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
    thread.join(10)
    assert [type(exc) for exc in outcomes] == [LoopClosedError]
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        del outcomes[:]
        gc.collect()
    (destroyed,) = [r.getMessage() for r in caplog.records if "destroyed" in r.getMessage()]
    assert "name='sync_await:" in destroyed
    assert "never_finishes from the-waiter'" in destroyed
    assert "coro=<test_a_destroyed_pending_task_is_reported_under_the_users_coroutine" in destroyed
    assert "_drive" not in destroyed  # aiothreads shows only as the done callback


def test_on_312_and_later_a_coroutine_that_never_suspends_is_done_as_its_task_starts(
    loop_factory: Any,
) -> None:
    from aiothreads._eager import start_task

    steps: list[str] = []

    async def at_once() -> str:
        steps.append("ran")
        return "done"

    async def started_here() -> tuple[bool, list[str]]:
        task = start_task(asyncio.get_running_loop(), at_once(), "at_once")
        seen = (task.done(), list(steps))
        assert await task == "done"
        return seen

    loop = loop_factory()
    try:
        done, ran = loop.run_until_complete(started_here())
    finally:
        loop.close()
    eager = sys.version_info >= (3, 12)
    assert (done, ran) == ((True, ["ran"]) if eager else (False, []))
