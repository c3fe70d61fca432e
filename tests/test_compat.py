"""Code written for aiothreads 1.1 keeps working: import paths and the IteratorWrapper hook."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import importlib
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor as ThreadPoolExecutorForTest
from typing import Any

import pytest

import aiothreads
from aiothreads.coroutine_waiter import sync_await, sync_wait_coroutine, wait_coroutine
from aiothreads.iterator_wrapper import (
    ChannelClosed,
    ChannelTimeout,
    FromThreadChannel,
    IteratorWrapper,
)
from aiothreads.threaded_iterable import ThreadedIterable, threaded_iterable
from aiothreads.threads import BoundThreaded, Threaded, threaded, threaded_separate
from aiothreads.types import EVENT_LOOP


def test_old_import_paths_name_the_same_objects() -> None:
    assert EVENT_LOOP is aiothreads.EVENT_LOOP
    assert IteratorWrapper is aiothreads.IteratorWrapper
    assert FromThreadChannel is aiothreads.FromThreadChannel
    assert ChannelClosed is aiothreads.ChannelClosed
    assert ChannelTimeout is aiothreads.ChannelTimeout
    assert (sync_await, wait_coroutine, sync_wait_coroutine) == (
        aiothreads.sync_await,
        aiothreads.wait_coroutine,
        aiothreads.sync_wait_coroutine,
    )
    assert (threaded, threaded_separate, Threaded, BoundThreaded) == (
        aiothreads.threaded,
        aiothreads.threaded_separate,
        aiothreads.Threaded,
        aiothreads.BoundThreaded,
    )
    assert (threaded_iterable, ThreadedIterable) == (
        aiothreads.threaded_iterable,
        aiothreads.ThreadedIterable,
    )


class OwnThreadWrapper(IteratorWrapper[Any, Any]):
    """The 1.1 extension point: run the producer on a thread of our own."""

    def _run(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def target() -> None:
            try:
                self._in_thread()
            finally:
                loop.call_soon_threadsafe(done.set_result, None)

        threading.Thread(target=target, name="own-producer").start()
        return done


def letters() -> Generator[str, None, None]:
    yield threading.current_thread().name
    yield from "abc"


@pytest.mark.asyncio
async def test_subclass_overriding_run_drives_the_generator() -> None:
    wrapper = OwnThreadWrapper(letters, max_size=1)
    assert [item async for item in wrapper] == ["own-producer", "a", "b", "c"]
    await wrapper.wait_closed()
    assert wrapper.closed


@pytest.mark.asyncio
async def test_subclass_stops_on_break() -> None:
    finalized = threading.Event()

    def endless() -> Generator[int, None, None]:
        try:
            number = 0
            while True:
                yield number
                number += 1
        finally:
            finalized.set()

    async for number in OwnThreadWrapper(endless, max_size=1):
        if number == 2:
            break
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, finalized.wait, 5)


@pytest.mark.asyncio
async def test_wrapper_with_an_explicit_executor() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="explicit") as executor:
        wrapper: IteratorWrapper[Any, str] = IteratorWrapper(letters, max_size=2, executor=executor)
        items = [item async for item in wrapper]
    assert items[0].startswith("explicit")
    assert wrapper.loop is asyncio.get_running_loop()


def test_wrapper_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError, match=r"^gen_func must be callable, got int$"):
        IteratorWrapper(42)  # type: ignore[arg-type]


def test_wrapper_rejects_a_flag_that_is_not_a_bool() -> None:
    with pytest.raises(TypeError, match=r"^instrument must be a bool, got str$"):
        IteratorWrapper(letters, instrument="yes")  # type: ignore[arg-type]


def test_a_wrapper_built_by_hand_is_named_after_its_generator_and_keeps_its_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        wrapper: IteratorWrapper[Any, str] = IteratorWrapper(letters, loop)
        assert wrapper.loop is loop
        assert repr(wrapper).startswith(f"<IteratorWrapper {__name__}.letters ")
    finally:
        loop.close()


@pytest.mark.asyncio
async def test_old_helper_functions_keep_their_signatures() -> None:
    from aiothreads.new_thread import run_in_new_thread
    from aiothreads.threads import run_in_executor

    assert await run_in_executor(pow, None, (2, 5)) == 32
    assert await run_in_executor(int, None, ("ff",), {"base": 16}) == 255
    with ThreadPoolExecutorForTest() as executor:
        assert await run_in_executor(abs, executor, (-3,)) == 3
    name = await run_in_new_thread(lambda: threading.current_thread().name)
    assert name.startswith("aiothreads-")
    assert await run_in_new_thread(divmod, (7, 2), detach=False) == (3, 1)
    silent = run_in_new_thread(lambda: 1 / 0, no_return=True)
    with pytest.raises(ZeroDivisionError):
        await silent


def fail_in_a_thread() -> None:
    raise LookupError("nobody looks at this")


@pytest.mark.parametrize(("no_return", "reported"), [(None, True), (False, True), (True, False)])
def test_the_old_run_in_new_thread_reports_an_exception_nobody_retrieved_unless_no_return(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], no_return: bool | None, reported: bool
) -> None:
    from aiothreads.new_thread import run_in_new_thread

    messages: list[str] = []

    async def forgotten() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: messages.append(context["message"])
        )
        options = {} if no_return is None else {"no_return": no_return}
        future = run_in_new_thread(fail_in_a_thread, **options)
        await asyncio.wait([future])
        for thread in threading.enumerate():  # holds the call until it ends
            if thread.name.endswith(".fail_in_a_thread"):
                await asyncio.to_thread(thread.join, 10)
        del future
        gc.collect()

    loop = loop_factory()
    try:
        loop.run_until_complete(forgotten())
    finally:
        loop.close()
    assert any("never retrieved" in message for message in messages) is reported


@pytest.mark.asyncio
async def test_the_old_run_in_new_thread_makes_daemon_threads_unless_told_not_to() -> None:
    from aiothreads.new_thread import run_in_new_thread

    def is_daemon() -> bool:
        return threading.current_thread().daemon

    assert await run_in_new_thread(is_daemon) is True
    assert await run_in_new_thread(is_daemon, detach=False) is False
    assert await run_in_new_thread(is_daemon, (), {}, False) is False  # 1.x: detach is the 4th


@pytest.mark.asyncio
async def test_the_old_run_in_new_thread_names_its_thread_after_the_function_behind_partials() -> (
    None
):
    from aiothreads.new_thread import run_in_new_thread

    def tagged(first: str, second: str) -> str:
        return f"{first}{second} on {threading.current_thread().name}"

    # The thread is named after ``tagged`` itself, not after the partial around it.
    called = functools.partial(tagged, "a", "b")

    assert await run_in_new_thread(called) == f"ab on aiothreads-{__name__}.{tagged.__qualname__}"


def test_the_old_run_in_executor_awaited_outside_a_loop_runs_on_its_executor_with_its_arguments(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    from aiothreads.threads import run_in_executor

    def parsed_where(number: str, *, base: int) -> tuple[str, int]:
        return threading.current_thread().name, int(number, base)

    with ThreadPoolExecutorForTest(1, thread_name_prefix="given") as executor:
        pending = run_in_executor(parsed_where, executor, ("ff",), {"base": 16})  # a coroutine
        loop = loop_factory()
        try:
            name, number = loop.run_until_complete(pending)  # type: ignore[arg-type]
        finally:
            loop.close()
    assert name.startswith("given")
    assert number == 255


@pytest.mark.asyncio
async def test_the_old_run_in_executor_in_a_running_loop_starts_the_call_on_its_executor() -> None:
    from aiothreads.threads import run_in_executor

    started = threading.Event()

    def where() -> str:
        started.set()
        return threading.current_thread().name

    with ThreadPoolExecutorForTest(1, thread_name_prefix="given") as executor:
        running = run_in_executor(where, executor)
        assert asyncio.isfuture(running)  # started, as in 1.x: not a coroutine waiting for await
        assert await asyncio.to_thread(started.wait, 10)
        assert (await running).startswith("given")


def test_the_old_run_in_executor_awaited_outside_a_loop_tells_the_function_its_loop(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    from aiothreads.threads import run_in_executor

    pending = run_in_executor(EVENT_LOOP.get)  # a coroutine, made before any loop runs
    loop = loop_factory()
    try:
        assert loop.run_until_complete(pending) is loop  # type: ignore[arg-type]
    finally:
        loop.close()


@pytest.mark.asyncio
async def test_old_helper_functions_tell_the_function_its_loop_from_a_context_that_knew_none() -> (
    None
):
    from aiothreads.new_thread import run_in_new_thread
    from aiothreads.threads import run_in_executor

    loop = asyncio.get_running_loop()

    async def loops_seen_in_threads() -> tuple[object, object]:
        assert EVENT_LOOP.get(None) is None
        return await run_in_executor(EVENT_LOOP.get), await run_in_new_thread(EVENT_LOOP.get)

    task = contextvars.Context().run(loop.create_task, loops_seen_in_threads())
    assert await task == (loop, loop)


def test_every_name_the_1x_modules_share_is_one_object_everywhere() -> None:
    from aiothreads import coroutine_waiter, iterator_wrapper, new_thread, threads, types

    # ``aiothreads.threaded_iterable`` is the decorator: the module is reached by its path.
    threaded_iterable_module = importlib.import_module("aiothreads.threaded_iterable")
    found: dict[str, tuple[str, object]] = {}
    for module in (
        coroutine_waiter,
        iterator_wrapper,
        new_thread,
        threads,
        threaded_iterable_module,
        types,
    ):
        for name in module.__all__:
            value = getattr(module, name)
            if hasattr(aiothreads, name):
                assert value is getattr(aiothreads, name), f"{module.__name__}.{name}"
            first = found.setdefault(name, (module.__name__, value))
            assert value is first[1], f"{module.__name__}.{name} is not {first[0]}.{name}"
    assert isinstance(aiothreads.threaded_separate(abs), threads.ThreadedSeparate)


def fail_with(message: str) -> None:
    raise ValueError(message)


@pytest.mark.asyncio
@pytest.mark.parametrize("no_return", [True, False])
async def test_the_1x_run_in_new_thread_reports_an_exception_nobody_retrieved_unless_no_return(
    no_return: bool,
) -> None:
    from aiothreads.new_thread import run_in_new_thread

    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    try:
        future = run_in_new_thread(fail_with, ("lost",), no_return=no_return)
        await asyncio.wait([future])  # done, and its exception not retrieved here
        future.__del__()  # what runs when the future is dropped
    finally:
        loop.set_exception_handler(None)
    future.exception()  # seen now: nothing more to report when it is collected
    assert len(reported) == (0 if no_return else 1), reported
