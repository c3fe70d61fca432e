"""sync_await, wait_coroutine, sync_wait_coroutine: results, errors, wrong threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from aiothreads import EVENT_LOOP, sync_await, sync_wait_coroutine, threaded, wait_coroutine

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
    with pytest.raises(RuntimeError, match="closed"):
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
    assert isinstance(outcome[0], RuntimeError)
    assert "closed" in str(outcome[0])


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
async def test_a_plain_callable_that_raises_raises_in_the_thread() -> None:
    def refuse() -> None:
        raise _Failure("plain")

    @threaded
    def work() -> None:
        sync_await(refuse)

    with pytest.raises(_Failure, match="plain"):
        await work()
