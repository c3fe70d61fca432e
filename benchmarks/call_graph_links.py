"""What linking asyncio's call graph costs a ``sync_await`` (Python 3.14 and later).

Run: ``python -m benchmarks.call_graph_links [--round-trips N] [--rounds R]``

A threaded call, awaited by a task, makes ``sync_await`` round trips to a
coroutine that suspends once (the only kind that is linked: one that ends in
its first step never waits as a task of its own). With linking on, the task
awaiting the threaded call is recorded as awaiting each such coroutine's task
(``asyncio.future_add_to_awaited_by``) and unrecorded when it ends; off, that
step is skipped. Rounds alternate between the two on the same loop, and the
table shows the median microseconds per round trip of each, on asyncio's loop
and on uvloop. Threaded calls that make no ``sync_await`` pay nothing, and
neither does anything on Pythons before 3.14.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable

from aiothreads import _asyncio_internals, sync_await, threaded


async def _suspends_once(value: int) -> int:
    await asyncio.sleep(0)
    return value


@threaded
def _round_trips(count: int) -> float:
    started = time.perf_counter()
    for number in range(count):
        sync_await(_suspends_once, number)
    return (time.perf_counter() - started) / count


async def _awaited_by_a_task(count: int) -> float:
    async def request() -> float:
        return await _round_trips(count)

    return await asyncio.create_task(request(), name="request")


def measure(
    factory: Callable[[], asyncio.AbstractEventLoop], round_trips: int, rounds: int
) -> dict[str, float]:
    """Median microseconds per round trip with linking on and off, interleaved."""
    linking = _asyncio_internals._add_to_awaited_by
    seen: dict[str, list[float]] = {"on": [], "off": []}
    loop = factory()
    try:
        loop.run_until_complete(_awaited_by_a_task(round_trips // 10 or 1))  # warm-up
        for _ in range(rounds):
            for mode in ("on", "off"):
                _asyncio_internals._add_to_awaited_by = linking if mode == "on" else None  # type: ignore[misc]
                seen[mode].append(loop.run_until_complete(_awaited_by_a_task(round_trips)))
    finally:
        _asyncio_internals._add_to_awaited_by = linking  # type: ignore[misc]
        loop.close()
    return {mode: statistics.median(values) * 1e6 for mode, values in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    if _asyncio_internals._add_to_awaited_by is None:
        print(f"Python {sys.version.split()[0]} has no call graph to link: nothing to measure")
        return
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    print(f"Python {sys.version.split()[0]}, {arguments.rounds} rounds of {arguments.round_trips}")
    print()
    print("| loop | linked (µs per round trip) | not linked | added |")
    print("| --- | ---: | ---: | ---: |")
    for name, factory in factories.items():
        result = measure(factory, arguments.round_trips, arguments.rounds)
        added = result["on"] - result["off"]
        print(f"| {name} | {result['on']:.2f} | {result['off']:.2f} | {added:+.2f} µs |")


if __name__ == "__main__":
    main()
