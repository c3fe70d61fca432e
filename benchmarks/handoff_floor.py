"""How close ``sync_await`` is to the cost of waking one thread from another (Linux).

Run: ``python -m benchmarks.handoff_floor [--round-trips N] [--rounds R]``

A ``sync_await`` round trip is two hand-offs between threads: the calling
thread wakes the loop, and the loop wakes the calling thread. This measures,
on the same loop, a bare round trip with nothing but those two wake-ups (an
``eventfd`` the loop watches, a lock the thread waits on), the same through
asyncio's public API (``loop.call_soon_threadsafe(lock.release)``), and
the least a hand-off through a task costs (the loop creates a plain task
whose coroutine releases the lock), and ``sync_await`` of a coroutine that
returns at once, and reports each in microseconds per round trip, with
``sync_await``'s own work: what it costs beyond the ``call_soon_threadsafe``
floor, and beyond the plain task. Run it once as is and once under
``taskset -c 0``: on one CPU a wake-up is a local switch, so the gap between
the two rows is the library's own cost; across CPUs the wake-ups themselves
dominate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time

from benchmarks import cases


async def bare_round_trips(count: int) -> float:
    """Seconds per round trip of an eventfd write answered by a lock release."""
    loop = asyncio.get_running_loop()
    wake_loop = os.eventfd(0, os.EFD_NONBLOCK)
    waiting: list[threading.Lock] = []

    def on_wake_up() -> None:
        os.eventfd_read(wake_loop)
        waiting.pop().release()

    def round_trips() -> float:
        started = time.perf_counter()
        for _ in range(count):
            answered = threading.Lock()
            answered.acquire()
            waiting.append(answered)
            os.eventfd_write(wake_loop, 1)
            answered.acquire()
        return (time.perf_counter() - started) / count

    loop.add_reader(wake_loop, on_wake_up)
    try:
        return await loop.run_in_executor(None, round_trips)
    finally:
        loop.remove_reader(wake_loop)
        os.close(wake_loop)


async def call_soon_threadsafe_round_trips(count: int) -> float:
    """Seconds per round trip of ``loop.call_soon_threadsafe(lock.release)`` from a pool thread.

    This is the floor that ``sync_await``'s own work is measured against:
    what any thread-to-loop-and-back hand-off costs with asyncio's public API.
    """
    loop = asyncio.get_running_loop()

    def round_trips() -> float:
        started = time.perf_counter()
        for _ in range(count):
            answered = threading.Lock()
            answered.acquire()
            loop.call_soon_threadsafe(answered.release)
            answered.acquire()
        return (time.perf_counter() - started) / count

    return await loop.run_in_executor(None, round_trips)


async def plain_task_round_trips(count: int) -> float:
    """Seconds per round trip of a task, created on the loop, whose coroutine releases the lock.

    Any hand-off that runs a coroutine as a task (so that ``current_task()``
    and ``asyncio.timeout()`` work in it) costs at least this, unless its task
    starts eagerly (Python 3.12 and later).
    """
    loop = asyncio.get_running_loop()

    async def release(answered: threading.Lock) -> None:
        answered.release()

    def round_trips() -> float:
        started = time.perf_counter()
        for _ in range(count):
            answered = threading.Lock()
            answered.acquire()
            loop.call_soon_threadsafe(loop.create_task, release(answered))
            answered.acquire()
        return (time.perf_counter() - started) / count

    return await loop.run_in_executor(None, round_trips)


async def sync_await_round_trips(count: int) -> float:
    """Seconds per ``sync_await`` round trip of a coroutine that returns at once."""
    return await cases.sync_await_aiothreads(count) / count


def main() -> None:
    """Print the median microseconds per round trip of both, rounds interleaved."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--round-trips", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    cases = {
        "bare eventfd + lock": bare_round_trips,
        "call_soon_threadsafe + lock": call_soon_threadsafe_round_trips,
        "call_soon_threadsafe + plain task": plain_task_round_trips,
        "sync_await": sync_await_round_trips,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(arguments.rounds):
        for name, case in cases.items():
            asyncio.run(case(arguments.round_trips // 20))  # warm-up
            samples[name].append(asyncio.run(case(arguments.round_trips)))
    cpus = len(os.sched_getaffinity(0))
    print(f"round trip, median of {arguments.rounds} rounds, {cpus} CPU(s) allowed:")
    for name, values in samples.items():
        print(f"  {name:34s} {statistics.median(values) * 1e6:6.1f} µs")
    floor = statistics.median(samples["call_soon_threadsafe + lock"])
    plain_task = statistics.median(samples["call_soon_threadsafe + plain task"])
    sync_await = statistics.median(samples["sync_await"])
    beyond_floor = (sync_await - floor) * 1e6
    print(f"  sync_await's own work beyond call_soon_threadsafe + lock: {beyond_floor:.1f} µs")
    print(f"  sync_await's own work beyond a plain task: {(sync_await - plain_task) * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
