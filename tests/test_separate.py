"""``@threaded_separate``: a fresh thread per call, daemon unless ``detach=False``."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from aiothreads import (
    EVENT_LOOP,
    BoundThreaded,
    ThreadedSeparate,
    sync_await,
    threaded_separate,
)

region: contextvars.ContextVar[str] = contextvars.ContextVar("region")


@threaded_separate
def thread_facts() -> tuple[str, bool, int]:
    thread = threading.current_thread()
    return thread.name, thread.daemon, threading.get_ident()


@threaded_separate(detach=False)
def attached_facts() -> tuple[str, bool, int]:
    thread = threading.current_thread()
    return thread.name, thread.daemon, threading.get_ident()


@pytest.mark.asyncio
async def test_each_call_gets_its_own_daemon_thread() -> None:
    both_running = threading.Barrier(2, timeout=5)

    @threaded_separate
    def meet() -> int:
        both_running.wait()
        return threading.get_ident()

    first, second = await asyncio.gather(meet(), meet())
    assert first != second
    name, daemon, _ = await thread_facts()
    assert name == "aiothreads-tests.test_separate.thread_facts"
    assert daemon
    assert isinstance(thread_facts, ThreadedSeparate)
    assert thread_facts.detach


@pytest.mark.asyncio
async def test_a_function_decorated_at_run_time_gets_a_daemon_thread_unless_attached() -> None:
    def daemon() -> bool:
        return threading.current_thread().daemon

    assert await threaded_separate(daemon)()
    assert await threaded_separate()(daemon)()
    assert await ThreadedSeparate(daemon)()
    assert not await threaded_separate(daemon, detach=False)()
    assert not await ThreadedSeparate(daemon, detach=False)()


@pytest.mark.asyncio
async def test_detach_false_makes_a_non_daemon_thread() -> None:
    _, daemon, _ = await attached_facts()
    assert not daemon
    assert not attached_facts.detach
    explicit = threaded_separate(attached_facts.func, detach=False)
    assert not (await explicit())[1]


@pytest.mark.asyncio
async def test_calls_do_not_use_the_pool() -> None:
    release = threading.Event()
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))

    @threaded_separate
    def wait_for_release() -> bool:
        return release.wait(5)

    blocked = [wait_for_release() for _ in range(3)]
    # With one pool worker this would queue; separate threads all run at once.
    await asyncio.get_running_loop().run_in_executor(None, release.set)
    assert await asyncio.gather(*blocked) == [True, True, True]


@pytest.mark.asyncio
async def test_context_and_loop_reach_the_thread() -> None:
    region.set("eu")

    async def shout(text: str) -> str:
        return text.upper()

    @threaded_separate
    def view() -> tuple[str, asyncio.AbstractEventLoop, str]:
        return region.get(), EVENT_LOOP.get(), sync_await(shout, "hi")

    assert await view() == ("eu", asyncio.get_running_loop(), "HI")


@pytest.mark.asyncio
async def test_exceptions_propagate() -> None:
    @threaded_separate
    def broken() -> None:
        raise LookupError("missing")

    with pytest.raises(LookupError, match="missing"):
        await broken()


class Monitor:
    @threaded_separate
    def poll(self, value: int) -> int:
        return value + 1

    @threaded_separate
    @staticmethod
    def ping() -> str:
        return threading.current_thread().name

    @threaded_separate(detach=False)
    @classmethod
    def build(cls) -> Monitor:
        return cls()


@pytest.mark.asyncio
async def test_methods() -> None:
    monitor = Monitor()
    assert await monitor.poll(1) == 2
    assert isinstance(monitor.poll, BoundThreaded)
    assert monitor.poll is monitor.poll
    assert (await Monitor.ping()).startswith("aiothreads-")
    assert isinstance(await Monitor.build(), Monitor)


def test_sync_call_is_inline() -> None:
    assert thread_facts.sync_call()[2] == threading.get_ident()


def test_bad_detach_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"^detach must be a bool, got str$"):
        threaded_separate(detach="yes")  # type: ignore[call-overload]


def test_a_generator_function_is_refused_with_the_decorator_to_use_instead() -> None:
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"; use @threaded_iterable_separate$"):
        threaded_separate(numbers)
