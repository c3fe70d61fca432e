"""Benchmark cases: one coroutine per (scenario, implementation), returning seconds.

The ``aiothreads`` cases use only the 1.x API, so the same code measures the
current package and aiothreads 1.1.4 (run by ``benchmarks.child`` with the
old release first on ``sys.path``). Peer libraries are imported lazily.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

Case = Callable[[int], Awaitable[float]]


def trivial() -> int:
    return 1


# -- sequential and concurrent calls -------------------------------------------


async def seq_aiothreads(n: int) -> float:
    from aiothreads import threaded

    call = threaded(trivial)
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - started


async def seq_to_thread(n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await asyncio.to_thread(trivial)
    return time.perf_counter() - started


async def seq_run_in_executor(n: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for _ in range(n):
        await loop.run_in_executor(None, trivial)
    return time.perf_counter() - started


async def seq_anyio(n: int) -> float:
    import anyio.to_thread

    started = time.perf_counter()
    for _ in range(n):
        await anyio.to_thread.run_sync(trivial)
    return time.perf_counter() - started


async def seq_asgiref(n: int) -> float:
    from asgiref.sync import sync_to_async

    call = sync_to_async(trivial, thread_sensitive=False)
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - started


async def gather_aiothreads(n: int) -> float:
    from aiothreads import threaded

    call = threaded(trivial)
    started = time.perf_counter()
    await asyncio.gather(*[call() for _ in range(n)])
    return time.perf_counter() - started


async def gather_run_in_executor(n: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    await asyncio.gather(*[loop.run_in_executor(None, trivial) for _ in range(n)])
    return time.perf_counter() - started


async def gather_to_thread(n: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*[asyncio.to_thread(trivial) for _ in range(n)])
    return time.perf_counter() - started


async def gather_anyio(n: int) -> float:
    import anyio.to_thread

    started = time.perf_counter()
    await asyncio.gather(*[anyio.to_thread.run_sync(trivial) for _ in range(n)])
    return time.perf_counter() - started


async def gather_asgiref(n: int) -> float:
    from asgiref.sync import sync_to_async

    call = sync_to_async(trivial, thread_sensitive=False)
    started = time.perf_counter()
    await asyncio.gather(*[call() for _ in range(n)])
    return time.perf_counter() - started


# -- streaming -------------------------------------------------------------------


def _items(n: int, size: int) -> Any:
    if size:
        for _ in range(n):
            yield bytes(size)
    else:
        yield from range(n)


def stream_aiothreads(max_size: int, size: int = 0) -> Case:
    async def case(n: int) -> float:
        from aiothreads import threaded_iterable

        source = threaded_iterable(_items, max_size=max_size)
        started = time.perf_counter()
        count = 0
        async for _ in source(n, size):
            count += 1
        assert count == n
        return time.perf_counter() - started

    return case


def stream_culsans(max_size: int, size: int = 0) -> Case:
    async def case(n: int) -> float:
        import culsans

        queue: Any = culsans.Queue(max_size)
        done = object()

        def produce() -> None:
            for item in _items(n, size):
                queue.sync_put(item)
            queue.sync_put(done)

        started = time.perf_counter()
        producer = threading.Thread(target=produce)
        producer.start()
        count = 0
        while await queue.async_get() is not done:
            count += 1
        producer.join()
        assert count == n
        return time.perf_counter() - started

    return case


def stream_janus(max_size: int, size: int = 0) -> Case:
    async def case(n: int) -> float:
        import janus

        queue: Any = janus.Queue(max_size)
        done = object()

        def produce() -> None:
            for item in _items(n, size):
                queue.sync_q.put(item)
            queue.sync_q.put(done)

        started = time.perf_counter()
        producer = threading.Thread(target=produce)
        producer.start()
        count = 0
        while await queue.async_q.get() is not done:
            count += 1
        producer.join()
        queue.close()
        await queue.wait_closed()
        assert count == n
        return time.perf_counter() - started

    return case


def stream_executor_next(size: int = 0) -> Case:
    """The do-it-yourself bridge: one ``run_in_executor(next)`` per item."""

    async def case(n: int) -> float:
        loop = asyncio.get_running_loop()
        iterator = iter(_items(n, size))
        done = object()
        started = time.perf_counter()
        count = 0
        while await loop.run_in_executor(None, next, iterator, done) is not done:
            count += 1
        assert count == n
        return time.perf_counter() - started

    return case


# -- channel, bridge, separate threads ---------------------------------------------


async def channel_aiothreads(n: int) -> float:
    from aiothreads import ChannelClosed, FromThreadChannel

    channel: Any = FromThreadChannel(maxsize=1024)

    def produce() -> None:
        with channel:
            for number in range(n):
                channel.put(number)

    started = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    count = 0
    try:
        while True:
            await channel.get()
            count += 1
    except ChannelClosed:
        pass
    producer.join()
    assert count == n
    return time.perf_counter() - started


async def _echo(value: int) -> int:
    return value


async def sync_await_aiothreads(n: int) -> float:
    from aiothreads import sync_await, threaded

    @threaded
    def round_trips() -> float:
        started = time.perf_counter()
        for number in range(n):
            sync_await(_echo, number)
        return time.perf_counter() - started

    return await round_trips()


async def sync_await_run_coroutine_threadsafe(n: int) -> float:
    loop = asyncio.get_running_loop()

    def round_trips() -> float:
        started = time.perf_counter()
        for number in range(n):
            asyncio.run_coroutine_threadsafe(_echo(number), loop).result()
        return time.perf_counter() - started

    return await loop.run_in_executor(None, round_trips)


async def separate_aiothreads(n: int) -> float:
    from aiothreads import threaded_separate

    call = threaded_separate(trivial)
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - started


async def separate_thread_per_call(n: int) -> float:
    """The do-it-yourself version: a ``threading.Thread`` and a future per call."""
    loop = asyncio.get_running_loop()

    def run(future: asyncio.Future[int]) -> None:
        loop.call_soon_threadsafe(future.set_result, trivial())

    started = time.perf_counter()
    for _ in range(n):
        future: asyncio.Future[int] = loop.create_future()
        threading.Thread(target=run, args=(future,)).start()
        await future
    return time.perf_counter() - started


AIOTHREADS = "aiothreads"
OLD = "aiothreads 1.1.4"

SCENARIOS: dict[str, tuple[str, int, dict[str, Case]]] = {
    "sequential call": (
        "calls/s",
        5_000,
        {
            AIOTHREADS: seq_aiothreads,
            "asyncio.to_thread": seq_to_thread,
            "loop.run_in_executor": seq_run_in_executor,
            "anyio.to_thread.run_sync": seq_anyio,
            "asgiref sync_to_async": seq_asgiref,
        },
    ),
    "10,000 concurrent calls": (
        "calls/s",
        10_000,
        {
            AIOTHREADS: gather_aiothreads,
            "loop.run_in_executor": gather_run_in_executor,
            "asyncio.to_thread": gather_to_thread,
            "anyio.to_thread.run_sync": gather_anyio,
            "asgiref sync_to_async": gather_asgiref,
        },
    ),
    "stream ints, max_size=1024": (
        "items/s",
        200_000,
        {
            AIOTHREADS: stream_aiothreads(1024),
            "culsans": stream_culsans(1024),
            "janus": stream_janus(1024),
            "run_in_executor(next) per item": stream_executor_next(),
        },
    ),
    "stream ints, unbounded": (
        "items/s",
        200_000,
        {
            AIOTHREADS: stream_aiothreads(0),
            "culsans": stream_culsans(0),
            "janus": stream_janus(0),
        },
    ),
    "stream 1 KB items, max_size=1024": (
        "items/s",
        200_000,
        {
            AIOTHREADS: stream_aiothreads(1024, 1024),
            "culsans": stream_culsans(1024, 1024),
            "janus": stream_janus(1024, 1024),
        },
    ),
    "FromThreadChannel put/get": ("items/s", 200_000, {AIOTHREADS: channel_aiothreads}),
    "sync_await round trip": (
        "round trips/s",
        20_000,
        {
            AIOTHREADS: sync_await_aiothreads,
            "run_coroutine_threadsafe": sync_await_run_coroutine_threadsafe,
        },
    ),
    "separate thread per call": (
        "calls/s",
        500,
        {AIOTHREADS: separate_aiothreads, "threading.Thread per call": separate_thread_per_call},
    ),
}
"""scenario -> (unit, default size, implementation -> case)."""

OLD_RELEASE_SCENARIOS = [
    "sequential call",
    "10,000 concurrent calls",
    "stream ints, max_size=1024",
    "stream ints, unbounded",
    "stream 1 KB items, max_size=1024",
    "FromThreadChannel put/get",
    "sync_await round trip",
    "separate thread per call",
]
"""Scenarios also measured on aiothreads 1.1.4 (its API is the same)."""

SLOW_PEERS = {"run_in_executor(next) per item": 10}
"""Peers so slow that they run on 1/N of the items; throughput is per item."""
