"""What instrumentation costs per threaded call: off, on without an SDK, on with one.

Run: ``python -m benchmarks.instrumentation_overhead [--calls N] [--rounds R]``

Modes are interleaved round by round so that drift in machine speed hits
each of them alike; the median of the rounds is reported. "hooks removed" is
the core with its single ``current()`` lookup replaced by a constant, which is
what a build without the instrumentation layer would run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiothreads._threaded as threaded_module
from aiothreads import instrumentation, threaded
from aiothreads.instrumentation import _hooks


@threaded
def trivial() -> int:
    return 1


async def sequential_calls(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await trivial()
    return (time.perf_counter() - started) / count


@contextmanager
def hooks_removed() -> Iterator[None]:
    original = threaded_module.current_telemetry
    threaded_module.current_telemetry = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        threaded_module.current_telemetry = original


@contextmanager
def mode(name: str) -> Iterator[None]:
    if name == "hooks removed":
        instrumentation.configure(enabled=False)
        with hooks_removed():
            yield
        return
    if name == "off":
        instrumentation.configure(enabled=False)
    elif name == "on, no SDK":
        from prometheus_client import CollectorRegistry

        instrumentation.configure(registry=CollectorRegistry(), opentelemetry=True, structlog=False)
    elif name == "on, with SDK":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from prometheus_client import CollectorRegistry

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        instrumentation.configure(
            registry=CollectorRegistry(), tracer_provider=provider, structlog=False
        )
        try:
            yield
        finally:
            provider.shutdown()
        return
    yield


MODES = ["hooks removed", "off", "on, no SDK", "on, with SDK"]


def measure(calls: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(rounds):
        for name in MODES:
            with mode(name):
                samples[name].append(asyncio.run(sequential_calls(calls)))
    instrumentation.reset()
    return {name: statistics.median(values) for name, values in samples.items()}


def lookup_cost() -> float:
    """Seconds one ``current()`` lookup costs when instrumentation is off."""
    instrumentation.configure(enabled=False)
    lookup: Callable[[], Any] = _hooks.current
    number = 1_000_000
    cost = min(timeit.repeat(lookup, number=number, repeat=5)) / number
    instrumentation.reset()
    return cost


def report(calls: int, rounds: int) -> str:
    """Measure and return a Markdown table."""
    medians = measure(calls, rounds)
    base = medians["hooks removed"]
    lines = [
        f"Sequential `await` of a trivial `@threaded` call, {calls} calls x {rounds} rounds "
        "(median per call).",
        "",
        "| mode | per call | vs hooks removed |",
        "| --- | ---: | ---: |",
    ]
    for name in MODES:
        value = medians[name]
        lines.append(f"| {name} | {value * 1e6:.1f} µs | {(value / base - 1) * 100:+.1f}% |")
    cost = lookup_cost()
    lines += [
        "",
        f"The off switch itself (`instrumentation._hooks.current()` returning `None`) costs "
        f"{cost * 1e9:.0f} ns per call, {cost / base * 100:.2f}% of a call.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    print(report(arguments.calls, arguments.rounds))


if __name__ == "__main__":
    main()
