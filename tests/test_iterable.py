"""Threaded iterables: delivery, backpressure, every way the generator is stopped."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import traceback
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from aiothreads import (
    EVENT_LOOP,
    BoundThreadedIterable,
    ThreadedIterable,
    ThreadedIterableSeparate,
    sync_await,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
)
from aiothreads.iterator_wrapper import IteratorWrapper

trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id")


async def wait_for_event(event: threading.Event, timeout: float = 5.0) -> bool:
    """Wait for a threading.Event without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(None, event.wait, timeout)


class Probe:
    """Records what a test generator did, with thread-safe signals."""

    def __init__(self) -> None:
        self.yielded = 0
        self.started = threading.Event()
        self.finalized = threading.Event()
        self.buffer_full = threading.Event()

    def generator(self, limit: int | None = None, full_at: int = -1) -> Iterator[int]:
        self.started.set()
        try:
            number = 0
            while limit is None or number < limit:
                if number == full_at:
                    self.buffer_full.set()
                yield number
                self.yielded += 1
                number += 1
        finally:
            self.finalized.set()

    async def assert_stopped(self) -> None:
        """The generator's ``finally`` ran, woken by the stop itself.

        The closed-loop backstop never fires in these tests (see conftest), so
        a stop that waited for a timeout instead of being woken would not
        arrive: the five seconds here only guard against a hang.
        """
        assert await wait_for_event(self.finalized), "the generator's finally never ran"


@pytest.mark.asyncio
async def test_items_arrive_in_order() -> None:
    @threaded_iterable
    def numbers(limit: int) -> Generator[int, None, None]:
        yield from range(limit)

    assert [item async for item in numbers(100)] == list(range(100))


@pytest.mark.asyncio
async def test_empty_generator() -> None:
    @threaded_iterable(max_size=1)
    def nothing() -> Generator[int, None, None]:
        yield from ()

    assert [item async for item in nothing()] == []


@pytest.mark.asyncio
@pytest.mark.parametrize("max_size", [1, 2, 7])
async def test_producer_runs_at_most_max_size_items_ahead(max_size: int) -> None:
    probe = Probe()
    # A blocked producer is woken once the consumer drained the channel to half.
    taken = max_size - max_size // 2
    wrapper = threaded_iterable(probe.generator, max_size=max_size)(full_at=max_size + taken)
    async with wrapper as items:
        for expected in range(taken):
            assert await items.__anext__() == expected
        # The producer stops once the channel holds max_size items; it reaches
        # number max_size + taken only because the consumer took that many.
        assert await wait_for_event(probe.buffer_full)
        assert probe.yielded <= max_size + taken


@pytest.mark.asyncio
async def test_break_stops_the_generator() -> None:
    probe = Probe()
    source = threaded_iterable(probe.generator, max_size=2)
    async for item in source():
        if item == 3:
            break
    await probe.assert_stopped()


@pytest.mark.asyncio
async def test_break_stops_a_producer_blocked_on_a_full_channel() -> None:
    probe = Probe()
    source = threaded_iterable(probe.generator, max_size=1)
    async for _ in source(full_at=2):
        assert await wait_for_event(probe.buffer_full)
        break
    await probe.assert_stopped()


@pytest.mark.asyncio
async def test_leaving_async_with_stops_the_generator() -> None:
    probe = Probe()
    async with threaded_iterable(probe.generator, max_size=1)() as items:
        async for item in items:
            if item == 1:
                break
        kept_alive = items
    await probe.assert_stopped()
    assert kept_alive.closed


@pytest.mark.asyncio
async def test_aclose_waits_for_the_generator_thread() -> None:
    probe = Probe()
    items = threaded_iterable(probe.generator, max_size=1)()
    assert await items.__anext__() == 0
    await items.aclose()
    assert probe.finalized.is_set()
    with pytest.raises(StopAsyncIteration):
        await items.__anext__()


@pytest.mark.asyncio
async def test_close_without_await_still_stops_the_generator() -> None:
    probe = Probe()
    items = threaded_iterable(probe.generator, max_size=1)()
    assert await items.__anext__() == 0
    items.close()
    await probe.assert_stopped()


@pytest.mark.asyncio
async def test_cancelling_the_consumer_stops_the_generator() -> None:
    probe = Probe()
    waiting = asyncio.Event()
    never = threading.Event()

    @threaded_iterable(max_size=1)
    def stalls() -> Generator[int, None, None]:
        try:
            yield 1
            never.wait(5)
            yield 2
        finally:
            probe.finalized.set()

    async def consume() -> None:
        async for _ in stalls():
            waiting.set()

    task = asyncio.create_task(consume())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    never.set()
    assert await wait_for_event(probe.finalized)


@pytest.mark.asyncio
async def test_cancelling_the_consumer_while_the_producer_is_blocked() -> None:
    probe = Probe()
    source = threaded_iterable(probe.generator, max_size=1)
    gate = asyncio.Event()

    async def consume() -> None:
        async for _ in source(full_at=2):
            await gate.wait()

    task = asyncio.create_task(consume())
    assert await wait_for_event(probe.buffer_full)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await probe.assert_stopped()


@pytest.mark.asyncio
async def test_dropping_the_iterator_stops_the_generator() -> None:
    probe = Probe()
    items = threaded_iterable(probe.generator, max_size=1)()
    assert await items.__anext__() == 0
    assert await wait_for_event(probe.started)
    del items
    gc.collect()
    await probe.assert_stopped()


@pytest.mark.asyncio
async def test_iterator_never_iterated_never_runs() -> None:
    probe = Probe()
    items = threaded_iterable(probe.generator)()
    threads_before = threading.active_count()
    del items
    gc.collect()
    assert not probe.started.is_set()
    assert threading.active_count() == threads_before


@pytest.mark.asyncio
async def test_closing_a_never_started_iterator() -> None:
    probe = Probe()
    items = threaded_iterable(probe.generator)()
    await items.close()
    assert items.closed
    assert [item async for item in items] == []
    assert not probe.started.is_set()


class _SourceError(Exception):
    pass


@pytest.mark.asyncio
async def test_exception_arrives_after_the_items_before_it() -> None:
    @threaded_iterable(max_size=4)
    def fails_after_two() -> Generator[int, None, None]:
        yield 1
        yield 2
        raise _SourceError("source broke")

    received = []
    with pytest.raises(_SourceError, match="source broke") as caught:
        async for item in fails_after_two():
            received.append(item)
    assert received == [1, 2]
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "fails_after_two" in frames


@pytest.mark.asyncio
async def test_exception_before_the_first_item() -> None:
    @threaded_iterable
    def fails_at_once() -> Generator[int, None, None]:
        raise _SourceError("no items")
        yield 0  # pragma: no cover

    items = fails_at_once()
    with pytest.raises(_SourceError):
        await items.__anext__()
    with pytest.raises(StopAsyncIteration):
        await items.__anext__()


@pytest.mark.asyncio
async def test_exception_in_the_generators_cleanup_reaches_aclose() -> None:
    @threaded_iterable(max_size=1)
    def bad_cleanup() -> Generator[int, None, None]:
        try:
            yield 1
            yield 2
        finally:
            raise _SourceError("cleanup failed")

    items = bad_cleanup()
    assert await items.__anext__() == 1
    with pytest.raises(_SourceError, match="cleanup failed"):
        await items.aclose()


@pytest.mark.asyncio
async def test_context_variables_and_event_loop_reach_the_generator() -> None:
    trace_id.set("t-7")

    @threaded_iterable
    def context_view() -> Generator[object, None, None]:
        yield trace_id.get()
        yield EVENT_LOOP.get()

    assert [item async for item in context_view()] == ["t-7", asyncio.get_running_loop()]


@pytest.mark.asyncio
async def test_generator_can_call_back_into_the_loop() -> None:
    async def double(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    @threaded_iterable(max_size=2)
    def doubled(limit: int) -> Generator[int, None, None]:
        for value in range(limit):
            yield sync_await(double, value)

    assert [item async for item in doubled(4)] == [0, 2, 4, 6]


@pytest.mark.asyncio
async def test_separate_iterable_runs_on_its_own_thread() -> None:
    @threaded_iterable_separate(max_size=1)
    def where() -> Generator[str, None, None]:
        yield threading.current_thread().name

    assert isinstance(where, ThreadedIterableSeparate)
    names = [name async for name in where()]
    assert names[0].startswith("aiothreads-")
    assert "where" in names[0]


@pytest.mark.asyncio
async def test_separate_iterable_bare_form() -> None:
    @threaded_iterable_separate
    def letters() -> Generator[str, None, None]:
        yield from "ab"

    assert [item async for item in letters()] == ["a", "b"]


@pytest.mark.asyncio
async def test_threaded_on_a_generator_makes_a_threaded_iterable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("THREADED_ITERABLE_DEFAULT_MAX_SIZE", raising=False)

    @threaded
    def numbers() -> Generator[int, None, None]:
        yield from range(3)

    assert isinstance(numbers, ThreadedIterable)
    assert numbers.max_size == 1024
    assert [item async for item in numbers()] == [0, 1, 2]


@pytest.mark.parametrize("value", ["512", "0"])
def test_default_max_size_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("THREADED_ITERABLE_DEFAULT_MAX_SIZE", value)  # 0: unbounded, as max_size=0

    @threaded
    def numbers() -> Generator[int, None, None]:
        yield 1

    assert numbers.max_size == int(value)
    assert threaded_iterable(max_size=3)(numbers.func).max_size == 3


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_bad_default_max_size_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("THREADED_ITERABLE_DEFAULT_MAX_SIZE", value)

    def numbers() -> Generator[int, None, None]:
        yield 1

    with pytest.raises(ValueError, match="THREADED_ITERABLE_DEFAULT_MAX_SIZE"):
        threaded(numbers)


def test_bad_max_size_is_rejected() -> None:
    def numbers() -> Generator[int, None, None]:
        yield 1

    with pytest.raises(ValueError, match="max_size"):
        threaded_iterable(numbers, max_size=-1)
    with pytest.raises(TypeError, match="max_size"):
        threaded_iterable(numbers, max_size="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_size"):
        threaded_iterable_separate(max_size=-5)


def test_async_functions_are_rejected_at_decoration() -> None:
    async def coroutine_function() -> int:
        return 1

    async def async_generator_function() -> Any:
        yield 1

    for decorator in (threaded_iterable, threaded_iterable_separate):
        with pytest.raises(TypeError, match="async function"):
            decorator(coroutine_function)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async function"):
            decorator(async_generator_function)


class Table:
    def __init__(self, rows: list[str]) -> None:
        self.rows = rows

    @threaded_iterable(max_size=2)
    def scan(self, prefix: str) -> Generator[str, None, None]:
        for row in self.rows:
            yield prefix + row

    @threaded_iterable
    @staticmethod
    def constant() -> Generator[int, None, None]:
        yield 1

    @threaded_iterable
    @classmethod
    def kind(cls) -> Generator[str, None, None]:
        yield cls.__name__


@pytest.mark.asyncio
async def test_methods() -> None:
    table = Table(["a", "b"])
    assert [row async for row in table.scan(">")] == [">a", ">b"]
    assert isinstance(table.scan, BoundThreadedIterable)
    assert table.scan is table.scan
    assert list(table.scan.sync_call("-")) == ["-a", "-b"]
    assert [value async for value in table.constant()] == [1]
    assert [value async for value in Table.kind()] == ["Table"]


@pytest.mark.asyncio
async def test_async_call_and_create_wrapper_return_iterators() -> None:
    @threaded_iterable
    def one() -> Generator[int, None, None]:
        yield 1

    assert isinstance(one.async_call(), IteratorWrapper)
    assert [item async for item in one.create_wrapper()] == [1]


@pytest.mark.asyncio
async def test_every_way_to_call_passes_positional_and_keyword_arguments() -> None:
    @threaded_iterable
    def steps(start: int, stop: int, *, step: int) -> Generator[int, None, None]:
        yield from range(start, stop, step)

    assert [item async for item in steps(1, 7, step=2)] == [1, 3, 5]
    assert [item async for item in steps.async_call(1, 7, step=2)] == [1, 3, 5]
    assert [item async for item in steps.create_wrapper(1, 7, step=2)] == [1, 3, 5]
    assert list(steps.sync_call(1, 7, step=2)) == [1, 3, 5]


def test_asyncio_run_shutdown_releases_a_blocked_producer() -> None:
    probe = Probe()
    kept: list[object] = []

    async def main() -> None:
        items = threaded_iterable(probe.generator, max_size=1)(full_at=2)
        kept.append(items)  # outlives the loop: only the loop's shutdown can stop it
        await items.__anext__()
        await asyncio.get_running_loop().run_in_executor(None, probe.buffer_full.wait, 5)

    asyncio.run(main())
    assert probe.finalized.is_set()


@pytest.mark.asyncio
async def test_break_stops_the_generator_even_while_the_iterator_is_referenced() -> None:
    probe = Probe()
    items = threaded_iterable(probe.generator, max_size=1)()
    async for item in items:
        if item == 1:
            break
    await probe.assert_stopped()
    assert items.closed


@threaded_iterable(max_size=1)
def _two_numbers() -> Generator[int, None, None]:
    yield 1
    yield 2


@pytest.mark.asyncio
async def test_repr_shows_the_generator_and_its_state() -> None:
    stream = _two_numbers()
    prefix = f"<IteratorWrapper {__name__}._two_numbers"
    assert repr(stream) == f"{prefix} not started>"
    assert await stream.__anext__() == 1
    assert repr(stream) == f"{prefix} running>"
    await stream.close()
    assert repr(stream) == f"{prefix} closed>"


@pytest.mark.asyncio
async def test_closing_the_iterator_cancels_a_coroutine_the_generator_awaits() -> None:
    entered = asyncio.Event()
    outcome: list[str] = []

    async def forever() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("coroutine cancelled")
            raise

    @threaded_iterable(max_size=1)
    def waits_on_the_loop() -> Generator[int, None, None]:
        try:
            sync_await(forever)
        except asyncio.CancelledError:
            outcome.append("generator saw the cancellation")
        yield 1

    items = waits_on_the_loop()
    first = asyncio.ensure_future(items.__anext__())
    try:
        await asyncio.wait_for(entered.wait(), 5)
        # A hang guard only: the consumer's leaving must end the wait at once.
        await asyncio.wait_for(items.close(), 5)
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
    assert outcome == ["coroutine cancelled", "generator saw the cancellation"]
