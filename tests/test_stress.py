"""Load: many calls, iterators and threads at once; nothing lost, everything released."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import tracemalloc
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest

from aiothreads import threaded, threaded_iterable, threaded_separate

ROUNDS = 3
MEMORY_ROUNDS = 6


@threaded
def square(value: int) -> int:
    return value * value


@threaded_iterable(max_size=8)
def numbers(limit: int) -> Generator[int, None, None]:
    yield from range(limit)


@pytest.mark.asyncio
async def test_ten_thousand_concurrent_calls_all_complete() -> None:
    for _ in range(ROUNDS):
        results = await asyncio.gather(*[square(value) for value in range(10_000)])
        assert results == [value * value for value in range(10_000)]


@pytest.mark.asyncio
async def test_a_thousand_iterators_broken_at_random_points() -> None:
    random.seed(7)
    finished = 0
    finished_lock = threading.Lock()

    @threaded_iterable(max_size=4)
    def counted(limit: int) -> Generator[int, None, None]:
        nonlocal finished
        try:
            yield from range(limit)
        finally:
            with finished_lock:
                finished += 1

    async def consume(stop_at: int) -> list[int]:
        received = []
        stream = counted(100)
        async for item in stream:
            received.append(item)
            if item == stop_at:
                break
        await stream.wait_closed()  # the generator's thread is done, finally included
        return received

    for round_number in range(ROUNDS):
        stops = [random.randint(0, 120) for _ in range(1000)]
        received = await asyncio.gather(*[consume(stop) for stop in stops])
        for stop, items in zip(stops, received, strict=True):
            assert items == list(range(min(stop, 99) + 1))
        assert finished == 1000 * (round_number + 1)


@pytest.mark.asyncio
async def test_two_hundred_concurrent_separate_threads() -> None:
    baseline = threading.active_count()
    for _ in range(ROUNDS):
        barrier = threading.Barrier(200, timeout=30)

        @threaded_separate
        def meet(barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            return threading.get_ident()

        idents = await asyncio.gather(*[meet() for _ in range(200)])
        assert len(set(idents)) == 200
    for thread in [t for t in threading.enumerate() if t.name.startswith("aiothreads-")]:
        thread.join(5)
    assert threading.active_count() <= baseline + 1


def scrape() -> None:
    """Add the counts up as a scrape does: the tallies of threads that ended fold then.

    Until then each thread that counted a call keeps a tally of its own (about
    3 KB), however many threads ended: a bounded amount, but one that depends
    on how many threads the rounds started, not a leak.
    """
    from aiothreads.instrumentation import _hooks
    from aiothreads.instrumentation._tallies import Tallies

    telemetry = _hooks.current()
    metrics = None if telemetry is None else telemetry.metrics
    if isinstance(metrics, Tallies):
        for series in metrics.snapshot():
            series.totals()


def test_thread_count_and_memory_return_to_baseline(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    def run(coro: Coroutine[Any, Any, None]) -> None:
        loop = loop_factory()
        try:
            loop.run_until_complete(coro)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def workload() -> None:
        await asyncio.gather(*[square(value) for value in range(2000)])
        for limit in (10, 100, 1000):
            assert [item async for item in numbers(limit)] == list(range(limit))
        async for _ in numbers(10_000):
            break

    run(workload())  # warm-up: imports, caches, first pool
    gc.collect()
    threads_before = threading.active_count()
    tracemalloc.start()
    try:
        run(workload())  # the first traced round settles per-process caches
        scrape()
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(MEMORY_ROUNDS):
            run(workload())
        scrape()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert threading.active_count() <= threads_before
    # A loop kept alive after it closed costs 15-300 KB a round; the interpreter's
    # own caches settle at a few KB over many rounds: allow 8 KB a round.
    assert after - before < MEMORY_ROUNDS * 8 * 1024, (
        f"{(after - before) / 1024:.0f} KB kept over {MEMORY_ROUNDS} rounds"
    )
