"""sync_await, wait_coroutine, sync_wait_coroutine: results, errors, wrong threads."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aiothreads import (
    EVENT_LOOP,
    FromThreadChannel,
    IteratorWrapper,
    LoopClosedError,
    NoEventLoopError,
    instrumentation,
    sync_await,
    sync_wait_coroutine,
    threaded,
    threaded_iterable,
    wait_coroutine,
)
from aiothreads._inbox import LoopInbox, inbox_for
from tests.loops import cancels_itself, loop_in_thread

tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")


async def echo(value: str, *, suffix: str = "") -> str:
    await asyncio.sleep(0)
    return value + suffix


class _Failure(Exception):
    pass


async def fail() -> None:
    await asyncio.sleep(0)
    raise _Failure("on the loop")


@pytest.mark.asyncio
async def test_sync_await_returns_the_result() -> None:
    @threaded
    def work() -> str:
        return sync_await(echo, "a", suffix="!")

    assert await work() == "a!"


@pytest.mark.asyncio
async def test_wait_coroutine_and_explicit_loop() -> None:
    loop = asyncio.get_running_loop()

    @threaded
    def work() -> tuple[str, str]:
        return wait_coroutine(echo("b")), wait_coroutine(echo("c"), loop)

    assert await work() == ("b", "c")


@pytest.mark.asyncio
async def test_sync_wait_coroutine_from_a_foreign_thread() -> None:
    loop = asyncio.get_running_loop()
    assert await asyncio.to_thread(sync_wait_coroutine, loop, echo, "d", suffix="?") == "d?"


@pytest.mark.asyncio
async def test_exceptions_propagate_to_the_thread() -> None:
    @threaded
    def work() -> None:
        sync_await(fail)

    with pytest.raises(_Failure, match="on the loop"):
        await work()


@pytest.mark.asyncio
async def test_timeout_error_from_the_coroutine_is_not_mistaken_for_a_wait() -> None:
    async def times_out() -> None:
        raise TimeoutError("coroutine timed out")

    @threaded
    def work() -> None:
        sync_await(times_out)

    with pytest.raises(TimeoutError, match="coroutine timed out"):
        await work()


@pytest.mark.asyncio
async def test_context_variables_flow_from_thread_to_coroutine() -> None:
    async def read() -> str:
        return tenant.get()

    @threaded
    def work() -> str:
        tenant.set("acme")
        return sync_await(read)

    assert await work() == "acme"


@pytest.mark.asyncio
async def test_calling_from_the_loop_thread_fails_at_once() -> None:
    loop = asyncio.get_running_loop()
    EVENT_LOOP.set(loop)
    with pytest.raises(RuntimeError, match="deadlock"):
        sync_await(echo, "x")
    coro = echo("y")
    with pytest.raises(RuntimeError, match="deadlock"):
        wait_coroutine(coro)
    with pytest.raises(RuntimeError, match="deadlock"):
        sync_wait_coroutine(loop, echo, "z")


def test_thread_without_a_loop_gets_a_helpful_error() -> None:
    errors: list[BaseException] = []

    def outside() -> None:
        for attempt in (
            lambda: sync_await(echo, "x"),
            lambda: wait_coroutine(echo("y")),
            lambda: sync_wait_coroutine(None, echo, "z"),
        ):
            try:
                attempt()
            except RuntimeError as exc:
                errors.append(exc)

    thread = threading.Thread(target=outside)
    thread.start()
    thread.join(5)
    assert len(errors) == 3
    assert all("@threaded" in str(error) for error in errors)
    assert all(error.__cause__ is None for error in errors)


def test_closed_loop_is_reported(loop_factory: object) -> None:
    loop = loop_factory()  # type: ignore[operator]
    loop.close()
    with pytest.raises(LoopClosedError, match=r"^the event loop is closed$"):
        wait_coroutine(echo("x"), loop)


@pytest.mark.asyncio_errors_expected
@pytest.mark.watchdog  # asyncio's own executor: nothing announces the close
def test_loop_closing_while_a_thread_waits_ends_the_wait(loop_factory: object) -> None:
    loop = loop_factory()  # type: ignore[operator]
    submitted = threading.Event()
    outcome: list[BaseException] = []

    async def never_finishes() -> None:
        submitted.set()
        await asyncio.Event().wait()

    def waiter() -> None:
        try:
            wait_coroutine(never_finishes(), loop)
        except (RuntimeError, asyncio.CancelledError) as exc:
            outcome.append(exc)

    async def run_until_submitted() -> None:
        await loop.run_in_executor(None, submitted.wait, 5)

    thread = threading.Thread(target=waiter)
    thread.start()
    loop.run_until_complete(run_until_submitted())
    loop.close()
    thread.join(5)  # a hang guard: the backstop's poll is what ends the wait
    assert outcome, "the waiting thread never returned"
    assert isinstance(outcome[0], LoopClosedError)
    assert str(outcome[0]) == "the event loop closed while a thread waited on it"
    gc.collect()  # the abandoned task's coroutine is closed: it must not signal again


def test_asyncio_run_shutdown_cancels_the_wait() -> None:
    submitted = threading.Event()
    outcome: list[BaseException] = []

    async def never_finishes() -> None:
        submitted.set()
        await asyncio.Event().wait()

    def waiter(loop: asyncio.AbstractEventLoop) -> None:
        try:
            sync_wait_coroutine(loop, never_finishes)
        except asyncio.CancelledError as exc:
            outcome.append(exc)

    async def main() -> None:
        thread = threading.Thread(target=waiter, args=(asyncio.get_running_loop(),))
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, submitted.wait, 5)
        main.thread = thread  # type: ignore[attr-defined]

    asyncio.run(main())
    main.thread.join(5)  # type: ignore[attr-defined]
    assert len(outcome) == 1


def test_wrong_loop_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="event loop"):
        sync_wait_coroutine("loop", echo, "x")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_sync_await_calls_a_plain_callable_on_the_loop_thread() -> None:
    loop_thread = threading.get_ident()
    done = asyncio.Event()

    def where(label: str) -> tuple[str, int]:
        return label, threading.get_ident()

    @threaded
    def work() -> tuple[str, int]:
        answer = sync_await(where, "on the loop")
        sync_await(done.set)  # asyncio.Event is not thread-safe: set it on the loop
        return answer

    assert await work() == ("on the loop", loop_thread)
    assert done.is_set()


@pytest.mark.asyncio
async def test_sync_await_of_a_callable_returning_a_future_returns_the_futures_result() -> None:
    def schedule(value: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, value)
        return future

    def start_task(value: str) -> asyncio.Task[str]:
        return asyncio.ensure_future(echo(value, suffix="!"))

    @threaded
    def work() -> tuple[object, object]:
        return sync_await(schedule, "settled later"), sync_await(start_task, "a task")

    assert await work() == ("settled later", "a task!")


@pytest.mark.asyncio
async def test_a_plain_callable_that_raises_raises_in_the_thread() -> None:
    def refuse() -> None:
        raise _Failure("plain")

    @threaded
    def work() -> None:
        sync_await(refuse)

    with pytest.raises(_Failure, match="plain"):
        await work()


@pytest.fixture(params=["instrumented", "uninstrumented"])
def bridge_instrumentation(request: pytest.FixtureRequest) -> Iterator[None]:
    """The bridge takes one path with a probe and another without: run both."""
    if request.param == "uninstrumented":
        instrumentation.configure(enabled=False)
    try:
        yield
    finally:
        instrumentation.reset()


@pytest.mark.asyncio
@pytest.mark.usefixtures("bridge_instrumentation")
async def test_every_bridge_returns_results_and_raises_errors_with_or_without_probes() -> None:
    loop = asyncio.get_running_loop()

    @threaded
    def work() -> tuple[str, str, str]:
        with pytest.raises(_Failure, match="on the loop"):
            sync_await(fail)
        with pytest.raises(TypeError, match=r"^expected an asyncio event loop, got str$"):
            sync_wait_coroutine("loop", echo, "x")  # type: ignore[arg-type]
        return (
            sync_await(echo, "a"),
            wait_coroutine(echo("b")),
            sync_wait_coroutine(loop, echo, "c", suffix="!"),
        )

    assert await work() == ("a", "b", "c!")


@pytest.mark.asyncio
@pytest.mark.usefixtures("bridge_instrumentation")
async def test_the_loop_thread_is_refused_with_or_without_probes() -> None:
    EVENT_LOOP.set(asyncio.get_running_loop())
    with pytest.raises(
        RuntimeError,
        match=r"^cannot block on the event loop from its own thread: it would deadlock; "
        r"use 'await' here, or call from a worker thread$",
    ):
        sync_await(echo, "x")


@pytest.mark.parametrize(
    ("name", "attempt"),
    [
        ("sync_await", lambda: sync_await(echo, "x")),
        ("wait_coroutine", lambda: wait_coroutine(echo("y"))),
        ("sync_wait_coroutine", lambda: sync_wait_coroutine(None, echo, "z")),
    ],
)
def test_the_no_loop_error_names_the_function_called(
    name: str, attempt: Callable[[], object]
) -> None:
    errors: list[BaseException] = []

    def outside() -> None:
        try:
            attempt()
        except NoEventLoopError as exc:
            errors.append(exc)

    thread = threading.Thread(target=outside)
    thread.start()
    thread.join(5)
    assert len(errors) == 1
    assert str(errors[0]).startswith(f"{name}() cannot find the event loop: ")


@pytest.mark.asyncio
async def test_a_task_cancelled_before_its_coroutine_ran_cancels_the_wait() -> None:
    loop = asyncio.get_running_loop()
    coroutines: list[Coroutine[Any, Any, Any]] = []

    def cancelled_at_birth(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
    ) -> asyncio.Task[Any]:
        coroutines.append(coro)
        given = {name: value for name, value in options.items() if value is not None}
        task = asyncio.Task(coro, loop=loop, **given)
        task.cancel()
        return task

    @threaded
    def work() -> str:
        try:
            sync_await(echo, "never")
        except asyncio.CancelledError as exc:
            return str(exc)
        return "returned"

    loop.set_task_factory(cancelled_at_birth)  # type: ignore[arg-type]
    try:
        message = await work()  # the bridge's task is the only one created meanwhile
    finally:
        loop.set_task_factory(None)
    assert message == "the event loop cancelled the awaited task"
    assert len(coroutines) == 1


@pytest.mark.asyncio
async def test_a_coroutine_cancelled_on_the_loop_raises_cancelled_in_the_thread() -> None:
    @threaded
    def work() -> str:
        try:
            sync_await(cancels_itself)
        except asyncio.CancelledError as exc:
            return str(exc)
        return "returned"

    assert await work() == "the event loop cancelled the awaited task"


@pytest.mark.asyncio
async def test_a_cancelled_caller_stops_the_next_sync_await_before_it_starts() -> None:
    asked, release, finished = threading.Event(), threading.Event(), threading.Event()
    started: list[bool] = []
    messages: list[str] = []

    async def never_started() -> None:
        started.append(True)

    @threaded
    def work() -> None:
        asked.set()
        release.wait(5)
        try:
            sync_await(never_started)
        except asyncio.CancelledError as exc:
            messages.append(str(exc))
            raise
        finally:
            finished.set()

    call = work()
    assert await asyncio.to_thread(asked.wait, 5)
    call.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await asyncio.to_thread(finished.wait, 5)
    assert messages == ["the caller of this threaded call was cancelled"]
    assert started == []


@pytest.mark.asyncio
async def test_a_caller_cancelled_while_its_sync_await_is_on_the_way_never_starts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller is cancelled after the thread's own check, before the coroutine starts.

    The loop is held until the thread has posted both the caller's
    cancellation and ``sync_await``'s start, so the loop runs them in that
    order in one batch.
    """
    inbox = inbox_for(asyncio.get_running_loop())
    loop_held, start_posted, finished = threading.Event(), threading.Event(), threading.Event()
    posting_threads: set[int] = set()
    started: list[bool] = []
    messages: list[str] = []
    callers: list[asyncio.Task[None]] = []
    post = LoopInbox.post

    def post_and_tell(self: LoopInbox, callback: Callable[..., object], *args: Any) -> None:
        post(self, callback, *args)
        if threading.get_ident() in posting_threads:
            start_posted.set()

    def hold_the_loop() -> None:
        loop_held.set()
        assert start_posted.wait(5)

    async def never_started() -> None:
        started.append(True)

    @threaded
    def work() -> None:
        inbox.post(hold_the_loop)
        assert loop_held.wait(5)
        inbox.post(callers[0].cancel)
        posting_threads.add(threading.get_ident())
        try:
            sync_await(never_started)
        except asyncio.CancelledError as exc:
            messages.append(str(exc))
            raise
        finally:
            finished.set()

    monkeypatch.setattr(LoopInbox, "post", post_and_tell)
    callers.append(asyncio.ensure_future(work()))
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
    assert await asyncio.to_thread(finished.wait, 5)
    assert messages == ["the event loop cancelled the awaited task"]
    assert started == []


@pytest.mark.asyncio
async def test_a_cancelled_caller_cancels_the_coroutine_it_waits_for_on_another_idle_loop() -> None:
    """The other loop sleeps in its selector: the cancellation must wake it, not just queue."""
    waiting, cancelled, finished = threading.Event(), threading.Event(), threading.Event()

    async def wait_for_ever() -> None:
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with loop_in_thread(asyncio.new_event_loop) as other:

        @threaded
        def work() -> None:
            try:
                sync_wait_coroutine(other, wait_for_ever)
            finally:
                finished.set()

        call = work()
        assert await asyncio.to_thread(waiting.wait, 5)
        call.cancel()
        try:
            woken = await asyncio.to_thread(cancelled.wait, 5)
        finally:
            other.call_soon_threadsafe(int)  # a lost wake-up is made up for: the thread ends
            assert await asyncio.to_thread(finished.wait, 5)
        assert woken, "the other loop slept through the cancellation"


class _Payload:
    """A result whose lifetime the tests follow."""


@pytest.mark.asyncio
async def test_a_finished_sync_await_keeps_nothing_alive_while_its_call_goes_on() -> None:
    async def make() -> _Payload:
        await asyncio.sleep(0)  # suspends: the bridge watches the caller meanwhile
        return _Payload()

    @threaded
    def work() -> bool:
        results = [weakref.ref(sync_await(make)) for _ in range(3)]
        gc.collect()
        return all(result() is None for result in results)

    assert await work()


@pytest.mark.asyncio
async def test_a_finished_sync_await_in_a_generator_keeps_nothing_alive() -> None:
    async def make() -> _Payload:
        await asyncio.sleep(0)  # suspends: the bridge watches the consumer meanwhile
        return _Payload()

    @threaded_iterable(max_size=1)
    def produce() -> Generator[bool, None, None]:
        results = [weakref.ref(sync_await(make)) for _ in range(3)]
        gc.collect()
        yield all(result() is None for result in results)

    async with contextlib.aclosing(produce()) as stream:
        assert [item async for item in stream] == [True]


def producer_waiting_on_the_loop(
    wait: Callable[[], Awaitable[None]], outcome: list[BaseException], returned: threading.Event
) -> Callable[[], IteratorWrapper[[], int]]:
    """A generator that yields 1, then waits on the loop for ``wait()``, keeping what it raised."""

    @threaded_iterable(max_size=1)
    def produce() -> Generator[int, None, None]:
        yield 1
        try:
            sync_await(wait)
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            returned.set()
        yield 2

    return produce


@pytest.mark.asyncio
async def test_a_generator_waiting_on_the_loop_is_freed_when_its_consumer_leaves() -> None:
    waiting, returned = asyncio.Event(), threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        waiting.set()
        await asyncio.Event().wait()

    stream = producer_waiting_on_the_loop(forever, outcome, returned)()
    assert await stream.__anext__() == 1
    await waiting.wait()
    await stream.close()
    assert await asyncio.to_thread(returned.wait, 5), "the producer still waits on the loop"
    assert [type(exc) for exc in outcome] == [asyncio.CancelledError]


@pytest.mark.asyncio
async def test_a_generator_whose_consumer_left_before_it_began_to_wait_on_the_loop_is_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The coroutine runs already, but the consumer leaves before the generator's
    # thread asks to hear of it: the thread must learn it as it asks.
    waiting, release = asyncio.Event(), asyncio.Event()
    left, returned = threading.Event(), threading.Event()
    outcome: list[BaseException] = []
    register = FromThreadChannel.call_when_abandoned

    def register_once_left(channel: FromThreadChannel[Any], callback: Callable[[], object]) -> None:
        left.wait(5)
        register(channel, callback)

    monkeypatch.setattr(FromThreadChannel, "call_when_abandoned", register_once_left)

    async def until_released() -> None:
        waiting.set()
        await release.wait()

    stream = producer_waiting_on_the_loop(until_released, outcome, returned)()
    assert await stream.__anext__() == 1
    await waiting.wait()
    closing = stream.close()  # the consumer leaves
    left.set()
    freed = await asyncio.to_thread(returned.wait, 5)
    release.set()  # a generator still waiting ends too, so no thread is left behind
    await closing
    assert freed, "the producer still waits on the loop"
    assert [type(exc) for exc in outcome] == [asyncio.CancelledError]


@pytest.mark.asyncio_errors_expected  # the closed loop leaves the coroutine pending
@pytest.mark.watchdog  # the application's executor: nothing announces the close
def test_a_consumer_leaving_after_its_loop_closed_under_a_waiting_generator_is_quiet(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    loop = loop_factory()
    executor = ThreadPoolExecutor(1)
    loop.set_default_executor(executor)
    outcome: list[BaseException] = []

    async def forever(waiting: asyncio.Event) -> None:
        waiting.set()
        await asyncio.Event().wait()

    @threaded_iterable(max_size=1)
    def produce(waiting: asyncio.Event) -> Generator[int, None, None]:
        yield 1
        try:
            sync_await(forever, waiting)
        except BaseException as exc:
            outcome.append(exc)
            raise

    async def start() -> AsyncIterator[int]:
        waiting = asyncio.Event()
        items = aiter(produce(waiting))
        assert await anext(items) == 1
        await waiting.wait()  # the generator waits on the loop now
        return items

    items = loop.run_until_complete(start())
    loop.close()
    del items  # the consumer leaves: the wake-up for the generator has no loop to go to
    gc.collect()
    executor.shutdown(wait=True)  # the backstop's poll ends the generator's wait
    assert [type(exc) for exc in outcome] == [LoopClosedError]


@pytest.mark.asyncio
async def test_a_failing_task_factory_fails_the_waiting_thread_only() -> None:
    loop = asyncio.get_running_loop()

    def refuses(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
    ) -> None:
        coro.close()
        raise RuntimeError("no tasks today")

    @threaded
    def work() -> str:
        with pytest.raises(RuntimeError, match=r"^no tasks today$"):
            sync_await(echo, "never")
        return "raised here"

    loop.set_task_factory(refuses)  # type: ignore[arg-type]
    try:
        assert await work() == "raised here"  # and nothing is logged on the loop
    finally:
        loop.set_task_factory(None)


def _wait_for_an_interrupting_coroutine(
    interrupt: type[BaseException],
    loop: asyncio.AbstractEventLoop,
    seen: list[BaseException],
    done: threading.Event,
    *,
    suspends: bool = True,
) -> threading.Thread:
    async def interrupted() -> None:
        if suspends:
            await asyncio.sleep(0)
        raise interrupt("from the coroutine")

    def waits() -> None:
        try:
            sync_wait_coroutine(loop, interrupted)
        except BaseException as exc:
            seen.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=waits)
    thread.start()
    with pytest.raises(interrupt):
        loop.run_forever()
    return thread


@pytest.mark.parametrize(
    "suspends",
    [
        pytest.param(True, id="after-suspending"),
        # Python 3.12+ logs the eager task's copy of it as never retrieved.
        pytest.param(False, id="first-step", marks=pytest.mark.asyncio_errors_expected),
    ],
)
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_the_awaited_coroutine_stops_the_loop_and_reaches_the_thread_on_shutdown(
    interrupt: type[BaseException],
    suspends: bool,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    seen: list[BaseException] = []
    done = threading.Event()
    loop = loop_factory()
    try:
        thread = _wait_for_an_interrupting_coroutine(interrupt, loop, seen, done, suspends=suspends)
        # As asyncio.run() does after an interrupt: the loop runs once more to shut down.
        loop.run_until_complete(loop.shutdown_asyncgens())
        assert done.wait(5)
        thread.join(5)
    finally:
        loop.close()
    assert [type(exc) for exc in seen] == [interrupt]
    gc.collect()  # after suspending, its task's exception was retrieved: nothing is logged


@pytest.mark.watchdog
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_the_awaited_coroutine_reaches_the_thread_when_the_loop_is_closed(
    interrupt: type[BaseException], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    seen: list[BaseException] = []
    done = threading.Event()
    loop = loop_factory()
    try:
        thread = _wait_for_an_interrupting_coroutine(interrupt, loop, seen, done)
    finally:
        loop.close()  # by hand, with the done callback still queued: it never runs
    assert done.wait(5)
    thread.join(5)
    assert [type(exc) for exc in seen] == [interrupt]
    gc.collect()


def test_a_thread_whose_callers_loop_closed_can_still_wait_on_another_loop(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    asked, go_on = threading.Event(), threading.Event()
    results: list[str] = []
    executor = ThreadPoolExecutor(1)

    async def slow_echo(value: str) -> str:
        await asyncio.sleep(0)  # suspends: the bridge then watches the caller's future
        return value

    def work(other: asyncio.AbstractEventLoop) -> None:
        asked.set()
        go_on.wait(5)
        results.append(sync_wait_coroutine(other, slow_echo, "answered"))

    async def start(other: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        call = threaded(work, executor=executor)(other)
        with ThreadPoolExecutor(1) as helper:
            assert await asyncio.get_running_loop().run_in_executor(helper, asked.wait, 5)
        return call

    first, other = loop_factory(), loop_factory()
    try:
        first.run_until_complete(start(other))
    finally:
        first.close()  # the caller's loop is gone while its thread still runs
    go_on.set()
    try:
        with ThreadPoolExecutor(1) as helper:
            other.run_until_complete(other.run_in_executor(helper, executor.shutdown, True))
    finally:
        other.close()
    assert results == ["answered"]
