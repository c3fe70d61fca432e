"""Executors that are not aiothreads' pool and do unusual things with their futures."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from aiothreads import CapacityLimiter, runs_in_threads, threaded, threaded_iterable
from tests.loops import loop_in_thread
from tests.waiting import turns_until

T = TypeVar("T")
_Work = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


@runs_in_threads
class OtherLoopExecutor(Executor):
    """Runs work on a thread of its own; its futures belong to another loop (in another thread).

    Work whose future was cancelled before the thread took it never runs.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work)
        self._thread.start()
        self.futures: list[asyncio.Future[Any]] = []
        self.ran = 0

    def submit(  # type: ignore[override]
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> asyncio.Future[T]:
        created: Future[asyncio.Future[T]] = Future()
        self._loop.call_soon_threadsafe(lambda: created.set_result(self._loop.create_future()))
        future = created.result(5)
        self.futures.append(future)
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            future, fn, args = work
            if future.cancelled():
                continue
            self.ran += 1
            result = fn(*args)
            self._loop.call_soon_threadsafe(_settle, future, result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queue.put(None)
        self._thread.join()


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


@pytest.mark.asyncio
async def test_a_call_on_an_executor_whose_futures_belong_to_another_loop(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    blocking, release = threading.Event(), threading.Event()
    never: list[str] = []

    def hold() -> str:
        blocking.set()
        release.wait(5)
        return "held"

    with loop_in_thread(loop_factory, debug=True) as other:  # touched from here, it raises
        executor = OtherLoopExecutor(other)
        try:
            run = threaded(executor=executor)

            first = run(hold)()
            assert await asyncio.to_thread(blocking.wait, 5)
            queued = run(never.append)("ran")
            queued.cancel()  # its executor's future, on the other loop, is cancelled there
            cancelled = executor.futures[1].cancelled
            await turns_until(cancelled, "the other loop cancelling the executor's future")
            release.set()
            assert await first == "held"
            assert await run(lambda: "after")() == "after"
        finally:
            await asyncio.to_thread(executor.shutdown)
    assert never == []
    assert executor.ran == 2  # the cancelled call's executor dropped it


@runs_in_threads
class DoneOnAnotherLoopExecutor(Executor):
    """Runs work on another loop's thread inside ``submit()``; returns that loop's future, done."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(  # type: ignore[override]
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> asyncio.Future[T]:
        finished: Future[asyncio.Future[T]] = Future()

        def run_there() -> None:
            future = self._loop.create_future()
            future.set_result(fn(*args, **kwargs))
            finished.set_result(future)

        self._loop.call_soon_threadsafe(run_there)
        return finished.result(5)


@pytest.mark.asyncio
async def test_a_call_whose_executor_returns_another_loops_future_done(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    with loop_in_thread(loop_factory, debug=True) as other:  # touched from here, it raises
        run = threaded(executor=DoneOnAnotherLoopExecutor(other))
        assert await run(lambda: "ran there")() == "ran there"
        assert await run(lambda: "and again")() == "and again"


@runs_in_threads
class FailsThenRunsExecutor(Executor):
    """Fails each future it returns at once, and runs the work later anyway (misbehaving)."""

    def __init__(self) -> None:
        self.accepted: list[Callable[[], object]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        future.set_exception(RuntimeError("overloaded"))
        self.accepted.append(lambda: fn(*args, **kwargs))
        return future

    def run_accepted(self) -> None:
        for work in self.accepted:
            work()


@pytest.mark.asyncio
async def test_work_an_executor_failed_never_runs_even_if_it_runs_it_anyway() -> None:
    ran: list[str] = []
    executor = FailsThenRunsExecutor()

    @threaded(executor=executor)
    def work() -> None:
        ran.append("ran")

    with pytest.raises(RuntimeError, match=r"^overloaded$"):  # the executor's own error
        await work()
    await asyncio.to_thread(executor.run_accepted)  # too late: the call was settled as refused
    assert ran == []


@runs_in_threads
class InterruptedExecutor(Executor):
    """An executor whose ``submit()`` is interrupted (Ctrl-C arrives inside it)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        raise KeyboardInterrupt


def test_an_iterator_whose_executor_is_interrupted_settles_before_the_interrupt_goes_on(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    limiter = CapacityLimiter(1)
    ran: list[int] = []

    @threaded_iterable(max_size=1, limit=limiter, executor=InterruptedExecutor())
    def rows() -> Generator[int, None, None]:
        ran.append(1)
        yield 1

    stream = rows()
    loop = loop_factory()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(stream.__anext__())
        assert stream.closed
        assert limiter.borrowed_tokens == 0  # its place was given back before it went on
        with pytest.raises(StopAsyncIteration):  # it is over: it never runs
            loop.run_until_complete(stream.__anext__())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    assert ran == []


@pytest.mark.parametrize("waits_for_its_place", [False, True])
def test_a_limited_call_whose_executor_is_interrupted_gives_its_place_back_once(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], waits_for_its_place: bool
) -> None:
    limiter = CapacityLimiter(1)
    ran: list[int] = []

    @threaded(limit=limiter, executor=InterruptedExecutor())
    def work() -> None:
        ran.append(1)

    queued: list[asyncio.Future[None]] = []

    async def queue_behind_the_limit() -> None:
        async with limiter:  # the call queues for the place; its submit is interrupted later
            queued.append(asyncio.ensure_future(work()))
            await turns_until(lambda: limiter.waiting == 1, "the call queuing for the place")

    loop = loop_factory()
    try:
        with pytest.raises(KeyboardInterrupt):  # out of the loop, from the call's task
            if waits_for_its_place:
                loop.run_until_complete(queue_behind_the_limit())
            else:
                queued.append(loop.create_task(work()))  # type: ignore[arg-type]
            loop.run_until_complete(queued[0])
        assert isinstance(queued[0].exception(), KeyboardInterrupt)
        assert limiter.borrowed_tokens == 0
        assert limiter.waiting == 0
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    assert ran == []


class Overloaded(Exception):
    """A load-shedding executor's own refusal."""


@runs_in_threads
class SheddingExecutor(ThreadPoolExecutor):
    """Refuses all work with its own exception, as a load-shedding pool does when full."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        raise Overloaded("too busy, try later")


@pytest.mark.asyncio
async def test_a_call_its_executor_sheds_raises_the_executors_own_exception() -> None:
    limiter = CapacityLimiter(1)
    ran: list[int] = []

    @threaded(limit=limiter, executor=SheddingExecutor())
    def work() -> None:
        ran.append(1)

    with pytest.raises(Overloaded, match=r"^too busy, try later$"):  # as run_in_executor
        await work()
    with pytest.raises(Overloaded):
        await asyncio.get_running_loop().run_in_executor(SheddingExecutor(), lambda: None)
    assert limiter.borrowed_tokens == 0
    assert ran == []


@pytest.mark.asyncio
async def test_a_generator_its_executor_sheds_raises_the_executors_own_exception() -> None:
    limiter = CapacityLimiter(1)
    ran: list[int] = []

    @threaded_iterable(max_size=1, limit=limiter, executor=SheddingExecutor())
    def rows() -> Generator[int, None, None]:
        ran.append(1)
        yield 1

    stream = rows()
    with pytest.raises(Overloaded, match=r"^too busy, try later$"):
        await stream.__anext__()
    assert stream.closed
    assert limiter.borrowed_tokens == 0
    assert ran == []
