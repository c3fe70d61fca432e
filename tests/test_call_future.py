"""The future of a threaded call: its waiters run in the loop turn its outcome arrives."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from typing import Any

import pytest

from aiothreads import threaded
from aiothreads._future import CallFuture

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.mark.asyncio
async def test_resolve_runs_callbacks_registered_before_it_at_once() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    seen: list[int] = []
    future.add_done_callback(lambda done: seen.append(done.result()))

    future.resolve(7)

    assert seen == [7]


@pytest.mark.asyncio
async def test_callbacks_registered_after_the_outcome_are_scheduled_as_usual() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    future.resolve(7)
    seen: list[int] = []
    future.add_done_callback(lambda done: seen.append(done.result()))

    assert seen == []
    await asyncio.sleep(0)
    assert seen == [7]


@pytest.mark.asyncio
async def test_set_result_and_cancel_schedule_callbacks_like_any_future() -> None:
    loop = asyncio.get_running_loop()
    settled: CallFuture[int] = CallFuture(loop=loop)
    cancelled: CallFuture[int] = CallFuture(loop=loop)
    seen: list[str] = []
    settled.add_done_callback(lambda _: seen.append("settled"))
    cancelled.add_done_callback(lambda _: seen.append("cancelled"))

    settled.set_result(1)
    assert cancelled.cancel("stop")

    assert seen == []
    await asyncio.sleep(0)
    assert sorted(seen) == ["cancelled", "settled"]
    assert not cancelled.cancel()


@pytest.mark.asyncio
async def test_callbacks_run_in_the_context_they_were_registered_in() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    seen: list[str] = []
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, "abc")
    future.add_done_callback(lambda _: seen.append(REQUEST_ID.get()), context=context)
    future.add_done_callback(lambda _: seen.append(REQUEST_ID.get()))

    future.resolve(1)

    assert seen == ["abc", "none"]


@pytest.mark.asyncio
async def test_removed_callbacks_never_run_and_the_rest_run_once() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    seen: list[str] = []

    def first(_: object) -> None:
        seen.append("first")

    future.add_done_callback(first)
    future.add_done_callback(first)
    future.add_done_callback(lambda _: seen.append("second"))
    future.add_done_callback(lambda _: seen.append("third"))

    # asyncio keeps the rest in a list of its own now
    assert future.remove_done_callback(first) == 2
    future.resolve(1)
    assert seen == ["second", "third"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    assert seen == ["second", "third"], "a callback run at resolve was scheduled again"


@pytest.mark.asyncio
async def test_fail_with_cancelled_error_cancels_the_future() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    future.fail(asyncio.CancelledError())

    assert future.cancelled()


@pytest.mark.asyncio
async def test_fail_and_resolve_leave_a_done_future_alone() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    future.cancel()
    future.resolve(1)
    future.fail(ValueError("late"))

    assert future.cancelled()


@pytest.mark.asyncio
async def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, report: reports.append(report))
    future: CallFuture[int] = CallFuture(loop=loop)
    seen: list[str] = []

    def broken(_: object) -> None:
        raise ValueError("broken callback")

    future.add_done_callback(broken)
    future.add_done_callback(lambda _: seen.append("after"))
    try:
        future.resolve(1)
    finally:
        loop.set_exception_handler(None)

    assert seen == ["after"]
    assert [type(report["exception"]) for report in reports] == [ValueError]
    assert report_names_the_callback(reports[0])


def report_names_the_callback(report: dict[str, Any]) -> bool:
    return "broken" in report["message"]


@pytest.mark.asyncio
async def test_keyboard_interrupt_in_a_callback_propagates_and_later_ones_still_run() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    seen: list[str] = []

    def interrupt(_: object) -> None:
        raise KeyboardInterrupt

    future.add_done_callback(interrupt)
    future.add_done_callback(lambda _: seen.append("later"))

    with pytest.raises(KeyboardInterrupt):
        future.resolve(1)
    await asyncio.sleep(0)

    assert seen == ["later"]


@pytest.mark.asyncio
async def test_callbacks_left_after_a_keyboard_interrupt_run_in_their_own_context() -> None:
    """The callbacks handed on after an interrupt keep the context each was registered in."""
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    seen: list[str] = []

    def interrupt(_: object) -> None:
        raise KeyboardInterrupt

    interrupting = contextvars.copy_context()
    interrupting.run(REQUEST_ID.set, "interrupting")
    later = contextvars.copy_context()
    later.run(REQUEST_ID.set, "later")
    future.add_done_callback(interrupt, context=interrupting)
    future.add_done_callback(lambda _: seen.append(REQUEST_ID.get()), context=later)
    future.add_done_callback(lambda _: seen.append(REQUEST_ID.get()))

    with pytest.raises(KeyboardInterrupt):
        future.resolve(1)
    await asyncio.sleep(0)

    assert seen == ["later", "none"]


def test_a_threaded_call_resumes_its_caller_in_the_turn_its_outcome_arrives() -> None:
    """A plain future would resume the caller one loop turn after it was settled."""

    @threaded
    def blocking() -> int:
        return 1

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        turns = 0
        first_turn_seen_done = -1
        future = blocking()
        assert isinstance(future, CallFuture)

        def count_turn() -> None:
            nonlocal turns, first_turn_seen_done
            turns += 1
            if future.done():
                first_turn_seen_done = turns
            else:
                loop.call_soon(count_turn)

        loop.call_soon(count_turn)
        await future
        resumed_in_turn = turns
        while first_turn_seen_done < 0:
            await asyncio.sleep(0)
        return resumed_in_turn, first_turn_seen_done

    resumed_in_turn, first_turn_seen_done = asyncio.run(main())
    assert resumed_in_turn < first_turn_seen_done


@pytest.mark.asyncio
async def test_gather_wait_and_wait_for_work_with_threaded_calls() -> None:
    @threaded
    def double(value: int) -> int:
        return 2 * value

    assert await asyncio.gather(double(1), double(2)) == [2, 4]
    done, pending = await asyncio.wait([double(3), double(4)])
    assert not pending
    assert sorted(task.result() for task in done) == [6, 8]
    assert await asyncio.wait_for(double(5), timeout=10) == 10


@pytest.mark.asyncio
async def test_a_failed_call_wakes_its_waiters_once() -> None:
    future: CallFuture[int] = CallFuture(loop=asyncio.get_running_loop())
    seen: list[BaseException | None] = []
    future.add_done_callback(lambda done: seen.append(done.exception()))

    future.fail(ValueError("boom"))
    await asyncio.sleep(0)

    assert [type(error) for error in seen] == [ValueError]


@pytest.mark.asyncio
async def test_a_threaded_call_lets_go_of_its_arguments_once_it_ran() -> None:
    class Payload:
        pass

    @threaded
    def consume(payload: Payload) -> None:
        del payload

    payload = Payload()
    alive = weakref.ref(payload)
    future = consume(payload)
    del payload
    await future
    gc.collect()

    assert alive() is None, "the finished call's future still holds its arguments"


@pytest.mark.asyncio
async def test_the_future_of_a_call_cannot_be_called_to_run_it_again() -> None:
    runs: list[int] = []

    @threaded
    def record() -> None:
        runs.append(1)

    future = record()
    await future

    assert not callable(future)
    assert runs == [1]
