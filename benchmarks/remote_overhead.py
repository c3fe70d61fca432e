"""What aiothreads adds over ``loop.run_in_executor`` on executors whose work leaves the process.

Run: ``python -m benchmarks.remote_overhead [--rounds R] [--calls N] [--loop L] [--output F]``

The engines are started once, each with two worker processes: a
``ProcessPoolExecutor`` (spawned), loky's reusable executor and a dask
``LocalCluster`` (one thread per worker, reached through
``Client.get_executor(pure=False)``), the last two when installed. Per engine
and round, in turns whose order changes every round, the wall time of ``N``
calls gathered at once is measured, for two kinds of work: ``operator.mul``
(nothing: the cost of the way there and back alone) and ``multiply_after_work``
(about a millisecond of pure-Python CPU first, the smallest work worth
sending to another process):

* ``run_in_executor``: ``loop.run_in_executor(executor, function, i, 2)``;
* ``aiothreads, off``: the same through ``@threaded(executor=...)`` with
  instrumentation off;
* ``aiothreads, metrics + traces``: with Prometheus metrics and OpenTelemetry
  spans on (the SDK, a ``BatchSpanProcessor`` exporting nowhere), the calls
  made inside a span, so that every call opens a span of its own and carries
  its W3C trace context to the worker (whose OpenTelemetry API makes it
  current there; the workers have no SDK, so they record no spans).

The same N calls are also made one after another (``--sequential`` of them),
for the latency each call gets. Every mode runs with the SDK installed and
inside the same span, so that only aiothreads' own work differs. The report
gives, per engine, the median time per call over the rounds and its ratio to
``run_in_executor``'s median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import operator
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

MODES = ("run_in_executor", "aiothreads, off", "aiothreads, metrics + traces")
WORK_LOOPS = 40_000
"""Iterations of ``multiply_after_work``'s empty loop: about a millisecond on CPython 3.11."""


def multiply_after_work(number: int, factor: int) -> int:
    """Spin ``WORK_LOOPS`` times, then return ``number * factor``: a small piece of real work."""
    for _ in range(WORK_LOOPS):
        pass
    return number * factor


WORKLOADS: dict[str, Callable[[int, int], int]] = {
    "nothing (operator.mul)": operator.mul,
    "~1 ms of CPU": multiply_after_work,
}
TARGET = 1.05
"""The most aiothreads may take, as a ratio to ``run_in_executor``, with metrics and traces on."""

Call = Callable[[int], Awaitable[Any]]


@contextlib.contextmanager
def engines(workers: int) -> Iterator[dict[str, Executor]]:
    """Start every installed engine with ``workers`` worker processes; shut them down after."""
    with contextlib.ExitStack() as stack:
        spawn = multiprocessing.get_context("spawn")
        found: dict[str, Executor] = {
            "process pool": stack.enter_context(ProcessPoolExecutor(workers, mp_context=spawn))
        }
        with contextlib.suppress(ImportError):
            import loky

            executor = loky.get_reusable_executor(max_workers=workers)
            stack.callback(executor.shutdown, wait=True)
            found["loky"] = executor
        with contextlib.suppress(ImportError):
            import distributed

            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
            found["dask"] = client.get_executor(pure=False)
        yield found


def install_sdk() -> Any:
    """Install an SDK tracer provider that exports to nowhere; return it."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)
    return provider


def calls_for(
    mode: str,
    executor: Executor,
    registry: Any,
    provider: Any,
    function: Callable[[int, int], int] = operator.mul,
) -> Call:
    """Return how ``mode`` makes one call, with aiothreads' instrumentation set up for it."""
    from aiothreads import instrumentation, threaded

    if mode == "run_in_executor":

        def bare(number: int) -> Awaitable[Any]:
            return asyncio.get_running_loop().run_in_executor(executor, function, number, 2)

        return bare
    if mode == "aiothreads, off":
        instrumentation.configure(enabled=False)
    else:
        instrumentation.configure(
            registry=registry, tracer_provider=provider, prometheus=True, opentelemetry=True
        )
    multiply = threaded(executor=executor)(function)

    def decorated(number: int) -> Awaitable[Any]:
        return multiply(number, 2)

    return decorated


async def measure(call: Call, calls: int, sequential: int) -> tuple[float, float, float]:
    """Return seconds per call: ``calls`` gathered (wall, CPU), and ``sequential`` one by one.

    CPU time is this process's, over all its threads (the loop's, and the
    executor's own in this process); the workers' is not in it.
    """
    started, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(call(number) for number in range(calls)))
    gathered = (time.perf_counter() - started) / calls
    gathered_cpu = (time.process_time() - cpu) / calls
    assert results == [number * 2 for number in range(calls)]
    started = time.perf_counter()
    for number in range(sequential):
        await call(number)
    return gathered, gathered_cpu, (time.perf_counter() - started) / sequential


Samples = dict[tuple[str, str, str], list[tuple[float, float, float]]]
"""(engine, work, mode) -> (gathered, gathered CPU, sequential) seconds per call, one per round."""


async def run_rounds(
    executors: dict[str, Executor], rounds: int, calls: int, sequential: int
) -> Samples:
    from opentelemetry import trace
    from prometheus_client import CollectorRegistry

    from aiothreads import instrumentation

    provider = install_sdk()
    registry = CollectorRegistry()
    tracer = trace.get_tracer("benchmark")
    samples: Samples = {}
    try:
        for round_number in range(rounds):
            order = MODES[round_number % len(MODES) :] + MODES[: round_number % len(MODES)]
            for engine, executor in executors.items():
                for work, function in WORKLOADS.items():
                    for mode in ("warm-up", *order):
                        call = calls_for(
                            "aiothreads, metrics + traces" if mode == "warm-up" else mode,
                            executor,
                            registry,
                            provider,
                            function,
                        )
                        with tracer.start_as_current_span("request"):
                            measured = await measure(call, calls, sequential)
                        if mode != "warm-up":
                            samples.setdefault((engine, work, mode), []).append(measured)
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
    finally:
        instrumentation.reset()
        provider.shutdown()
    return samples


def render(samples: Samples, engines: list[str], rounds: int, calls: int, sequential: int) -> str:
    """Return the Markdown table: per engine, work and mode, time per call and ratio to bare."""
    lines = [
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, two worker processes per "
        f"engine; median of {rounds} interleaved rounds. Gathered: {calls:,} calls in flight "
        "at once (wall time, and CPU time of the calling process over all its threads); one "
        f"by one: {sequential:,} calls awaited in turn. The work is nothing (`operator.mul`), "
        "or about a millisecond of CPU in the worker (`multiply_after_work`). Target: "
        f"aiothreads with metrics and traces within {TARGET:.2f}x of `run_in_executor`, "
        "gathered.",
        "",
        "| engine | work | mode | gathered µs/call | vs run_in_executor | CPU here µs/call "
        "| vs run_in_executor | one by one µs/call | vs run_in_executor |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for engine in engines:
        for work in WORKLOADS:
            bare = [
                statistics.median(
                    sample[index] for sample in samples[(engine, work, "run_in_executor")]
                )
                for index in range(3)
            ]
            for mode in MODES:
                measured = [
                    statistics.median(sample[index] for sample in samples[(engine, work, mode)])
                    for index in range(3)
                ]
                ratios = [value / base for value, base in zip(measured, bare, strict=True)]
                verdict = ""
                if mode == "aiothreads, metrics + traces":
                    verdict = " (met)" if ratios[0] <= TARGET else " (NOT met)"
                lines.append(
                    f"| {engine} | {work} | {mode} | {measured[0] * 1e6:,.1f} "
                    f"| {ratios[0]:.3f}x{verdict} "
                    f"| {measured[1] * 1e6:,.1f} | {ratios[1]:.3f}x "
                    f"| {measured[2] * 1e6:,.1f} | {ratios[2]:.3f}x |"
                )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    arguments = parser.parse_args(argv)
    with engines(arguments.workers) as executors:
        loop: asyncio.AbstractEventLoop
        if arguments.loop == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        try:
            samples = loop.run_until_complete(
                run_rounds(executors, arguments.rounds, arguments.calls, arguments.sequential)
            )
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
    report = render(
        samples, list(executors), arguments.rounds, arguments.calls, arguments.sequential
    )
    print(report)
    if arguments.output is not None:
        arguments.output.write_text(report)


if __name__ == "__main__":
    main()
