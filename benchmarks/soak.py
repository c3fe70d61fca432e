"""Run the demo's mixed workload for a while; report RSS, threads and throughput.

Usage: ``python -m benchmarks.soak --minutes 30 [--interval 10]`` (not part of CI).
Prints one line per interval: elapsed time, resident memory, live threads, and
calls and items per second since the previous line. Memory or thread counts
that keep climbing across a long run are leaks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import threading
import time
from pathlib import Path

from aiothreads.demo import Demo, Settings


def rss_megabytes() -> float:
    """Resident memory of this process, in MB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def soak(minutes: float, interval: float) -> None:
    demo = Demo(Settings())
    runner = asyncio.create_task(demo.run())
    deadline = time.monotonic() + minutes * 60
    last_calls, last_items, last_time = 0, 0, time.monotonic()
    print("elapsed_s rss_mb threads calls_per_s items_per_s")
    while time.monotonic() < deadline:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(runner), interval)
        now = time.monotonic()
        progress = demo.progress
        span = now - last_time
        calls_rate = (progress.calls - last_calls) / span
        items_rate = (progress.items - last_items) / span
        print(
            f"{now - progress.started:9.0f} {rss_megabytes():6.1f} {threading.active_count():7d} "
            f"{calls_rate:11.0f} {items_rate:11.0f}",
            flush=True,
        )
        last_calls, last_items, last_time = progress.calls, progress.items, now
    demo.stopping.set()
    await runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=10.0)
    arguments = parser.parse_args()
    asyncio.run(soak(arguments.minutes, arguments.interval))


if __name__ == "__main__":
    main()
