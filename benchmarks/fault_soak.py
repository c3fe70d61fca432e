"""Soak the fault paths: random faults on every decorator and executor, books checked.

Usage: ``python -m benchmarks.fault_soak --seconds 600 [--seed 1]`` (not a timed
test; the nox ``benchmarks`` session runs it for a few seconds).

Each round runs one event loop (asyncio's or uvloop, alternately) with a burst
of calls and iterators on a random executor, under a shared limit or not, and
faults a random share of them: the caller cancels before or while they run, the
executor refuses them, or drops its queued work. After every round it checks
what the fault matrix checks, over and over: no limit place held, nobody
waiting, the Prometheus gauges (queued, in flight, active iterators, live
separate threads) back to zero, and every call counted once. It prints one
line per interval with the outcomes, resident memory, threads and open file
descriptors, and exits non-zero at the first round whose books do not balance,
or if threads or descriptors keep growing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry

from aiothreads import (
    CapacityLimiter,
    ExecutorRefused,
    instrumentation,
    runs_in_threads,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
)

from .soak import rss_megabytes

try:
    import uvloop
except ImportError:  # pragma: no cover - not on Windows
    uvloop = None  # type: ignore[assignment]

GAUGES = (
    "aiothreads_calls_queued",
    "aiothreads_calls_in_flight",
    "aiothreads_iterators_active",
    "aiothreads_separate_threads_alive",
)


class QueueFull(Exception):
    """A load-shedding executor's own refusal: it reaches the caller as it is."""


@runs_in_threads
class RefusingExecutor(Executor):
    """Refuses every call, as a saturated or misconfigured executor would."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise QueueFull("queue full")


def gauges(registry: CollectorRegistry) -> dict[str, float]:
    """Sum of each gauge over all its series."""
    totals = dict.fromkeys(GAUGES, 0.0)
    for metric in registry.collect():
        if metric.name in totals:
            totals[metric.name] += sum(sample.value for sample in metric.samples)
    return totals


def open_descriptors() -> int:
    """Open file descriptors of this process (0 where /proc is missing)."""
    with contextlib.suppress(FileNotFoundError):
        return len(os.listdir("/proc/self/fd"))
    return 0


async def one_call(kind: str, executor: Executor | None, limiter: CapacityLimiter | None,
                   fault: str, gate: threading.Event) -> str:  # fmt: skip
    """Start one call or iterator of ``kind``, fault it, and return what the caller saw."""

    def work() -> int:
        gate.wait(1)
        return 1

    def rows() -> Generator[int, None, None]:
        gate.wait(1)
        yield from range(3)

    options: dict[str, Any] = {"limit": limiter}
    if kind == "threaded":
        awaitable: Any = threaded(work, executor=executor, **options)()
    elif kind == "separate":
        awaitable = threaded_separate(work, **options)()
    else:
        decorator = threaded_iterable if kind == "iterable" else threaded_iterable_separate
        if kind == "iterable":
            options["executor"] = executor
        iterator = decorator(rows, max_size=1, **options)()
        awaitable = asyncio.ensure_future(_drain(iterator))
    task = asyncio.ensure_future(awaitable)
    if fault == "cancel before start":
        task.cancel()
    elif fault == "cancel while running":
        await asyncio.sleep(0)
        task.cancel()
    try:
        await asyncio.wait_for(task, 10)
    except asyncio.CancelledError:
        return "cancelled"
    except (ExecutorRefused, QueueFull):
        return "refused"
    return "ok"


async def _drain(iterator: Any) -> int:
    return sum([item async for item in iterator])


async def one_round(
    rng: random.Random, outcomes: Counter[str], limiters: list[CapacityLimiter]
) -> None:
    """One loop's worth of faulted calls; their limiter, if any, goes to ``limiters``."""
    executor_kind = rng.choice(["default", "thread pool", "refusing", "dropping"])
    executor: Executor | None = None
    if executor_kind in {"thread pool", "dropping"}:
        executor = ThreadPoolExecutor(2)
    elif executor_kind == "refusing":
        executor = RefusingExecutor()
    limiter = CapacityLimiter(rng.randint(1, 4)) if rng.random() < 0.5 else None
    if limiter is not None:
        limiters.append(limiter)
    gate = threading.Event()
    faults = ["none", "cancel before start", "cancel while running"]
    calls = [
        one_call(
            rng.choice(["threaded", "separate", "iterable", "iterable_separate"]),
            executor,
            limiter,
            rng.choice(faults),
            gate,
        )
        for _ in range(rng.randint(5, 40))
    ]
    running = asyncio.gather(*calls)
    await asyncio.sleep(0)
    if executor_kind == "dropping" and isinstance(executor, ThreadPoolExecutor):
        executor.shutdown(wait=False, cancel_futures=True)
    gate.set()
    outcomes.update(await running)
    if isinstance(executor, ThreadPoolExecutor):
        executor.shutdown(wait=True)


def settle(registry: CollectorRegistry) -> dict[str, float]:
    """The gauges once every dedicated thread of the round has ended."""
    for thread in threading.enumerate():
        if thread.name.startswith("aiothreads-"):  # separate threads; pool workers are "_N"
            thread.join()
    return gauges(registry)


def run_round(factory: Callable[[], asyncio.AbstractEventLoop], round_: Any) -> None:
    """Run ``round_`` on a new loop and shut it down as ``asyncio.run`` does."""
    loop = factory()
    try:
        loop.run_until_complete(round_)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    registry = CollectorRegistry()
    instrumentation.configure(
        registry=registry, prometheus=True, opentelemetry=False, structlog=False
    )
    loops: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    if uvloop is not None:
        loops.append(uvloop.new_event_loop)
    outcomes: Counter[str] = Counter()
    started = last_report = time.monotonic()
    rounds = 0
    # The baseline is taken after a first round, once loops have been created
    # and collected: what they open is then counted on both sides.
    run_round(loops[0], one_round(rng, outcomes, []))
    gc.collect()
    baseline_threads = threading.active_count()
    baseline_descriptors = open_descriptors()
    print("elapsed_s rounds ok cancelled refused rss_mb threads fds")
    while time.monotonic() - started < arguments.seconds:
        limiters: list[CapacityLimiter] = []
        run_round(loops[rounds % len(loops)], one_round(rng, outcomes, limiters))
        rounds += 1
        left = settle(registry)  # every thread of the round has ended: the books must balance
        assert not any(left.values()), f"round {rounds}: gauges not back to zero: {left}"
        for limiter in limiters:
            assert limiter.borrowed_tokens == 0, f"round {rounds}: places held: {limiter!r}"
            assert limiter.waiting == 0, f"round {rounds}: callers still waiting: {limiter!r}"
        now = time.monotonic()
        if now - last_report >= arguments.interval:
            last_report = now
            print(
                f"{now - started:9.0f} {rounds:6d} {outcomes['ok']:6d} {outcomes['cancelled']:9d} "
                f"{outcomes['refused']:7d} {rss_megabytes():6.1f} {threading.active_count():7d} "
                f"{open_descriptors():4d}",
                flush=True,
            )
    gc.collect()  # closed loops sit in reference cycles until collected
    extra_threads = threading.active_count() - baseline_threads
    extra_descriptors = open_descriptors() - baseline_descriptors
    print(f"rounds={rounds} outcomes={dict(outcomes)} extra_threads={extra_threads} "
          f"extra_fds={extra_descriptors}")  # fmt: skip
    assert extra_threads <= 2, "threads keep growing"
    assert extra_descriptors <= 10, "file descriptors keep growing"


if __name__ == "__main__":
    main()
