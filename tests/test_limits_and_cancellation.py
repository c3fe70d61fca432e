"""limit=, executor= and cooperative cancellation (check_cancelled / is_cancelled)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from aiothreads import (
    CapacityLimiter,
    WorkerPool,
    check_cancelled,
    is_cancelled,
    sync_await,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
)
from tests.waiting import queued_for_a_place, turns_until


async def in_own_thread(event: threading.Event, timeout: float = 5) -> bool:
    with ThreadPoolExecutor(1) as waiter:
        return await asyncio.get_running_loop().run_in_executor(waiter, event.wait, timeout)


class Gauge:
    """Tracks how many executions run at once, and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *_: object) -> None:
        with self.lock:
            self.now -= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("decorate", [threaded, threaded_separate])
async def test_limit_bounds_concurrent_executions(decorate: object) -> None:
    gauge = Gauge()
    release, two_running = threading.Event(), threading.Event()

    def work(value: int) -> int:
        with gauge:
            if gauge.now == 2:
                two_running.set()
            release.wait(5)
        return value

    limited = decorate(work, limit=2) if decorate is threaded_separate else threaded(limit=2)(work)  # type: ignore[operator]
    calls = [limited(value) for value in range(8)]
    assert await in_own_thread(two_running)
    release.set()
    assert await asyncio.gather(*calls) == list(range(8))
    assert gauge.peak <= 2


@pytest.mark.asyncio
async def test_shared_limiter_spans_functions() -> None:
    gauge = Gauge()
    limiter = CapacityLimiter(1)
    release = threading.Event()

    @threaded(limit=limiter)
    def first() -> None:
        with gauge:
            release.wait(5)

    @threaded(limit=limiter)
    def second() -> None:
        with gauge:
            release.wait(5)

    calls = [first(), second(), first(), second()]
    release.set()
    await asyncio.gather(*calls)
    assert gauge.peak == 1
    assert limiter.borrowed_tokens == 0
    assert first.limiter is limiter


@pytest.mark.asyncio
async def test_caller_cancelled_while_waiting_frees_its_place() -> None:
    limiter = CapacityLimiter(1)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    @threaded(limit=limiter)
    def work(name: str) -> None:
        ran.append(name)
        started.set()
        release.wait(5)

    holder = work("holder")
    assert await in_own_thread(started)
    waiting = work("cancelled")
    await turns_until(lambda: limiter.waiting == 1, "the call queues on the limiter")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.waiting == 0
    follower = work("follower")
    release.set()
    await asyncio.gather(holder, follower)
    assert ran == ["holder", "follower"]
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("instrument", [True, False])
async def test_a_call_cancelled_while_queued_in_the_pool_gives_its_place_back_at_once(
    instrument: bool,
) -> None:
    """Not when a worker reaches it, which may be long after: the place is free for others now."""
    pool = WorkerPool(max_workers=1)
    limiter = CapacityLimiter(1)
    release = threading.Event()
    ran: list[str] = []

    @threaded(executor=pool)
    def occupy() -> None:
        release.wait(5)

    @threaded(limit=limiter, executor=pool, instrument=instrument)
    def work(name: str) -> None:
        ran.append(name)

    try:
        blocker = occupy()
        queued = work("cancelled")  # took the place, waits behind the blocker
        assert limiter.borrowed_tokens == 1
        queued.cancel()
        assert limiter.borrowed_tokens == 0
        follower = work("follower")
        assert limiter.borrowed_tokens == 1
        release.set()
        await asyncio.gather(blocker, follower)
        assert ran == ["follower"]
        assert limiter.borrowed_tokens == 0
    finally:
        release.set()
        await asyncio.to_thread(pool.shutdown)


@pytest.mark.asyncio
async def test_cancelled_running_call_keeps_its_place_until_it_ends() -> None:
    limiter = CapacityLimiter(1)
    started, release = threading.Event(), threading.Event()

    @threaded(limit=limiter)
    def slow() -> None:
        started.set()
        release.wait(5)

    running = slow()
    assert await in_own_thread(started)
    running.cancel()
    assert limiter.borrowed_tokens == 1  # the thread still runs
    release.set()
    done = slow()
    await done
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_limited_iterables_wait_for_a_place() -> None:
    gauge = Gauge()
    limiter = CapacityLimiter(2)

    def rows(count: int) -> Generator[int, None, None]:
        with gauge:
            yield from range(count)

    pooled = threaded_iterable(rows, max_size=2, limit=limiter)
    separate = threaded_iterable_separate(rows, max_size=2, limit=limiter)

    async def drain(source: object) -> list[int]:
        stream = source(20)  # type: ignore[operator]
        items = [item async for item in stream]
        await stream.wait_closed()  # its thread is done, and its place given back
        return items

    results = await asyncio.gather(*(drain(s) for s in [pooled, separate] * 3))
    assert all(result == list(range(20)) for result in results)
    assert gauge.peak <= 2
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_a_limited_iterator_closed_while_it_waits_for_admission_never_runs() -> None:
    limiter = CapacityLimiter(1)
    ran: list[str] = []
    holder_running, release_holder = threading.Event(), threading.Event()

    @threaded_iterable(max_size=1, limit=limiter)
    def rows(name: str) -> Generator[str, None, None]:
        ran.append(name)
        if name == "holder":
            holder_running.set()
            release_holder.wait(5)
        yield name

    holder = rows("holder")
    holder_items = asyncio.ensure_future(holder.__anext__())
    assert await in_own_thread(holder_running)
    waiting = rows("waiting")
    admission = await queued_for_a_place(limiter, waiting.__anext__())

    waiting.close()
    release_holder.set()
    assert await holder_items == "holder"
    await holder.aclose()
    with pytest.raises(StopAsyncIteration):
        await admission

    assert ran == ["holder"]
    assert limiter.borrowed_tokens == 0
    assert limiter.waiting == 0


@pytest.mark.asyncio
async def test_an_iterator_cancelled_while_it_waits_for_admission_is_closed() -> None:
    limiter = CapacityLimiter(1)
    ran: list[int] = []

    @threaded_iterable(max_size=1, limit=limiter)
    def rows() -> Generator[int, None, None]:
        ran.append(1)
        yield 1

    async with limiter:
        stream = rows()
        admission = await queued_for_a_place(limiter, stream.__anext__())
        admission.cancel()
        with pytest.raises(asyncio.CancelledError):
            await admission
    assert stream.closed
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert ran == []
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_closing_an_iterator_whose_producer_is_still_queued_drops_it_quietly() -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []
    with ThreadPoolExecutor(1) as worker:
        worker.submit(lambda: (started.set(), release.wait(5)))
        assert await in_own_thread(started)

        @threaded_iterable(max_size=1, executor=worker)
        def rows() -> Generator[int, None, None]:
            ran.append(1)
            yield 1

        stream = rows()
        first = asyncio.ensure_future(stream.__anext__())  # queues its producer
        await turns_until(lambda: worker._work_queue.qsize() == 1, "the producer queuing")
        await stream.close()  # returns at once: nothing ran, nothing to wait for
        with pytest.raises(StopAsyncIteration):
            await first
        release.set()
    assert ran == []


@pytest.mark.asyncio
async def test_a_separate_iterators_thread_never_keeps_the_interpreter_alive() -> None:
    @threaded_iterable_separate(max_size=1)
    def daemon() -> Generator[bool, None, None]:
        yield threading.current_thread().daemon

    assert [flag async for flag in daemon()] == [True]


@pytest.mark.asyncio
async def test_two_consumers_waiting_for_admission_start_one_producer() -> None:
    limiter = CapacityLimiter(1)
    starts: list[int] = []

    @threaded_iterable(max_size=2, limit=limiter)
    def rows() -> Generator[int, None, None]:
        starts.append(1)
        yield 1
        yield 2

    async with limiter:  # both consumers of one iterator wait for the place
        stream = rows()
        first = await queued_for_a_place(limiter, stream.__anext__())
        second = await queued_for_a_place(limiter, stream.__anext__())
    assert sorted(await asyncio.gather(first, second)) == [1, 2]
    await stream.aclose()
    assert starts == [1]
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_executor_option_runs_calls_there() -> None:
    with ThreadPoolExecutor(1, thread_name_prefix="chosen") as chosen:

        @threaded(executor=chosen)
        def where() -> str:
            return threading.current_thread().name

        @threaded_iterable(executor=chosen)
        def where_items() -> Generator[str, None, None]:
            yield threading.current_thread().name

        assert (await where()).startswith("chosen")
        names = [name async for name in where_items()]
        assert names[0].startswith("chosen")


def test_bad_options_fail_early() -> None:
    with pytest.raises(TypeError, match="limit"):
        threaded(limit="3")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="total_tokens"):
        threaded(limit=0)
    with pytest.raises(TypeError, match="executor"):
        threaded(executor=object())  # type: ignore[call-overload]

    def rows() -> Generator[int, None, None]:
        yield 1

    from aiothreads import ThreadedIterableSeparate

    with pytest.raises(TypeError, match="executor"):
        ThreadedIterableSeparate(rows, executor=ThreadPoolExecutor(1))
    with pytest.raises(RuntimeError, match="release"):
        CapacityLimiter(1).release()


async def cancelled_while_running(
    after: Callable[[], object], before: Callable[[], object] = lambda: None
) -> tuple[object, object]:
    """Run ``before()`` in a threaded call, cancel the call, then run ``after()`` in it.

    Returns what ``before()`` returned and what ``after()`` returned or raised
    (raised out of the call too).
    """
    started, proceed, finished = threading.Event(), threading.Event(), threading.Event()
    results: list[object] = []

    @threaded
    def call() -> None:
        try:
            results.append(before())
            started.set()
            proceed.wait(5)
            try:
                results.append(after())
            except BaseException as error:
                results.append(error)
                raise
        finally:
            finished.set()

    future = call()
    assert await in_own_thread(started)
    future.cancel()
    proceed.set()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert await in_own_thread(finished)
    before_gave, after_gave = results
    return before_gave, after_gave


@pytest.mark.asyncio
async def test_check_cancelled_raises_once_the_caller_gave_up() -> None:
    seen: list[bool] = []

    def cooperative() -> None:
        seen.append(is_cancelled())
        check_cancelled()
        seen.append(False)  # not reached

    _, error = await cancelled_while_running(cooperative)
    assert seen == [True]
    assert type(error) is asyncio.CancelledError  # user cleanup in except CancelledError runs
    assert str(error) == "the caller of this threaded call was cancelled"


class _RunsInline(ThreadPoolExecutor):
    """An executor that runs each call at once, in the thread that submits it."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        done: Future[object] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as error:
            done.set_exception(error)
        return done


@pytest.mark.asyncio
async def test_a_call_nested_in_a_call_gives_the_outer_scope_back() -> None:
    """A threaded function running its own loop, whose calls run inline in its thread."""
    inline = _RunsInline(1)

    @threaded(executor=inline)
    def inner() -> bool:
        return is_cancelled()

    try:
        # inner's scope replaces the outer call's in its thread, then must give it back
        seen = await cancelled_while_running(is_cancelled, before=lambda: asyncio.run(inner()))
        assert seen == (False, True)
    finally:
        inline.shutdown()


@pytest.mark.asyncio
async def test_a_generator_nested_in_a_call_gives_the_outer_scope_back() -> None:
    inline = _RunsInline(1)

    @threaded_iterable(executor=inline, max_size=0)
    def inner() -> Generator[bool, None, None]:
        yield is_cancelled()  # the generator runs in the outer call's thread

    async def consume() -> list[bool]:
        return [item async for item in inner()]

    try:
        seen = await cancelled_while_running(is_cancelled, before=lambda: asyncio.run(consume()))
        assert seen == ([False], True)
    finally:
        inline.shutdown()


@pytest.mark.asyncio
async def test_a_cancelled_call_leaves_nothing_behind_on_its_worker_thread() -> None:
    started, proceed, done = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []
    one_worker = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    @threaded(executor=one_worker)
    def cancelled_while_running() -> None:
        started.set()
        proceed.wait(5)
        seen.append(is_cancelled())
        done.set()

    try:
        call = cancelled_while_running()
        assert await in_own_thread(started)
        call.cancel()
        proceed.set()
        assert await in_own_thread(done)
        plain_function_on_that_thread = await loop.run_in_executor(one_worker, is_cancelled)
    finally:
        one_worker.shutdown(wait=True)

    assert seen == [True]
    assert plain_function_on_that_thread is False


def test_outside_aiothreads_nothing_is_cancelled() -> None:
    assert not is_cancelled()
    check_cancelled()


@pytest.mark.asyncio
async def test_sync_await_in_a_cancelled_call_raises_promptly() -> None:
    waiting_on_loop = asyncio.Event()
    outcome: list[str] = []
    finished = threading.Event()

    async def long_wait() -> None:
        waiting_on_loop.set()
        await asyncio.Event().wait()

    @threaded
    def bridge() -> None:
        try:
            sync_await(long_wait)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        finally:
            finished.set()

    future = bridge()
    await waiting_on_loop.wait()
    loop = asyncio.get_running_loop()
    cancelled_at = loop.time()
    future.cancel()
    assert await in_own_thread(finished, 5)
    assert loop.time() - cancelled_at < 0.25
    assert outcome == ["cancelled"]


@pytest.mark.asyncio
async def test_generators_see_their_consumer_leave() -> None:
    consumer_left, observed = threading.Event(), threading.Event()

    @threaded_iterable(max_size=1)
    def cooperative() -> Generator[int, None, None]:
        yield 1
        consumer_left.wait(5)
        if is_cancelled():
            observed.set()
        yield 2  # never delivered: put() finds the channel closed

    stream = cooperative()
    assert await stream.__anext__() == 1
    closing = stream.close()
    consumer_left.set()
    await closing
    assert observed.is_set()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "decorate", [threaded, threaded_separate, threaded_iterable, threaded_iterable_separate]
)
async def test_a_method_keeps_its_limit_when_bound(decorate: Callable[..., object]) -> None:
    limiter = CapacityLimiter(1)
    places_held: list[int] = []

    def scale(_: object, value: int, *, times: int) -> Generator[int, None, None]:
        places_held.append(limiter.borrowed_tokens)
        yield value * times

    def scaled(holder: object, value: int, *, times: int) -> int:
        return next(scale(holder, value, times=times))

    iterable = decorate in (threaded_iterable, threaded_iterable_separate)
    job = type("Job", (), {"run": decorate(limit=limiter)(scale if iterable else scaled)})()
    call = job.run(3, times=2)
    result = [item async for item in call] if iterable else await call
    assert result == ([6] if iterable else 6)
    assert places_held == [1]  # the bound call held the method's place


@pytest.mark.asyncio
async def test_a_method_keeps_its_executor_and_max_size_when_bound() -> None:
    with ThreadPoolExecutor(1, thread_name_prefix="chosen") as chosen:

        class Job:
            @threaded(executor=chosen)
            def where(self) -> str:
                return threading.current_thread().name

            @threaded_iterable(executor=chosen, max_size=2)
            def where_items(self, count: int) -> Generator[str, None, None]:
                for _ in range(count):
                    yield threading.current_thread().name

        job = Job()
        assert (await job.where()).startswith("chosen")
        assert job.where_items.max_size == 2
        names = [name async for name in job.where_items(3)]
        assert len(names) == 3
        assert all(name.startswith("chosen") for name in names)
