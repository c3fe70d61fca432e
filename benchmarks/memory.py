"""Buffered memory of a bounded stream with a slow consumer, measured with tracemalloc."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

ITEM_SIZE = 10 * 1024
MAX_SIZE = 64
ITEMS = 100_000


def _big_items(count: int):  # type: ignore[no-untyped-def]
    for _ in range(count):
        yield bytes(ITEM_SIZE)


async def _stream(count: int) -> None:
    from aiothreads import threaded_iterable

    source = threaded_iterable(_big_items, max_size=MAX_SIZE)
    received = 0
    async for _ in source(count):
        received += 1
        await asyncio.sleep(0)  # a consumer slower than the producer: the buffer stays full
    assert received == count


def measure(count: int) -> float:
    """Return the peak bytes held above the baseline while streaming ``count`` items."""
    asyncio.run(_stream(100))  # imports and first-use allocations stay out of the peak
    gc.collect()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        asyncio.run(_stream(count))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return float(peak - baseline)


def report(scale: float = 1.0) -> str:
    """Measure and describe the result in one paragraph."""
    count = max(1000, int(ITEMS * scale))
    peak = measure(count)
    worth = peak / ITEM_SIZE
    return (
        f"Streaming {count:,} items of {ITEM_SIZE // 1024} KB through "
        f"`@threaded_iterable(max_size={MAX_SIZE})` to a consumer slower than the producer "
        f"peaked at {peak / 1024:,.0f} KB above the baseline (tracemalloc), "
        f"{worth:.1f} items' worth: the channel's {MAX_SIZE} items plus the one the producer "
        "is handing over and the one the consumer holds, and the machinery itself."
    )
