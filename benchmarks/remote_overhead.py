"""What aiothreads adds over ``loop.run_in_executor`` on executors whose work leaves the process.

Run: ``python -m benchmarks.remote_overhead [--rounds R] [--repeats K] [--pin] [--calls N]
[--loops L,L] [--engines E,E] [--output F]``

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
* ``aiothreads, metrics + trace context``: with Prometheus metrics and
  OpenTelemetry on (the SDK, a ``BatchSpanProcessor`` exporting nowhere), the
  calls made inside a request whose trace is not sampled, as most requests are
  under head sampling: each call carries the W3C trace context to the worker
  (whose OpenTelemetry API makes it current there), and no span is recorded;
* ``aiothreads, metrics + traces``: the same inside a sampled request, so that
  every call also records a span of its own (the workers have no SDK, so they
  record none).

Each round measures every mode ``--repeats`` times, the modes taking turns,
and keeps the median of each. With ``--pin`` (where the system allows it) the
calling process runs on the first CPU and the engines' worker processes on
the others, so that what the caller does is not slowed by a worker that the
scheduler happened to put beside it: aiothreads' cost is all in the caller.

The same N calls are also made one after another (``--sequential`` of them),
for the latency each call gets. Every mode runs with the SDK installed and
inside a request span, sampled or not as the mode says, so that only
aiothreads' own work differs. Each loop of ``--loops`` (asyncio and uvloop by
default) gets its rounds in the same run, on the same engines. The report
gives, per loop, engine and work, the median time per call over the rounds
and the median of its ratios to ``run_in_executor`` round by round (the same
round's bare calls), so that drift in the machine's speed cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
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

MODES = (
    "run_in_executor",
    "aiothreads, off",
    "aiothreads, metrics + trace context",
    "aiothreads, metrics + traces",
)
TARGETED = ("aiothreads, metrics + trace context",)
"""The modes held to ``TARGET``: metrics and trace propagation on.

Not the sampled mode: recording a span for every call adds the OpenTelemetry
SDK's own price for a span, which ``run_in_executor`` never pays; its rows
show what that costs."""
SAMPLED = {mode: mode != "aiothreads, metrics + trace context" for mode in MODES}
"""Whether the request the mode's calls are made in is sampled (its calls record spans)."""
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
"""The most aiothreads may take, as a ratio to ``run_in_executor``, in the ``TARGETED`` modes."""
UNSAMPLED_REQUEST = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
"""Trace and span id of the request the unsampled mode's calls are made in."""

Call = Callable[[int], Awaitable[Any]]


def pin(cpus: frozenset[int]) -> None:
    """Run this process (its calling thread, and the threads it starts later) on ``cpus``."""
    os.sched_setaffinity(0, cpus)


def split_cpus() -> tuple[frozenset[int], frozenset[int]] | None:
    """Return the CPUs for the caller (the first) and for the workers (the rest), if two or more."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return frozenset(cpus[:1]), frozenset(cpus[1:])


ENGINES = ("process pool", "loky", "dask")


@contextlib.contextmanager
def engines(
    workers: int, worker_cpus: frozenset[int] | None = None, chosen: Sequence[str] = ENGINES
) -> Iterator[dict[str, Executor]]:
    """Start the ``chosen`` engines that are installed, with ``workers`` worker processes each.

    They are shut down after. With ``worker_cpus``, every worker process runs
    on those CPUs.
    """
    initializer = None if worker_cpus is None else pin
    initargs = () if worker_cpus is None else (worker_cpus,)
    with contextlib.ExitStack() as stack:
        spawn = multiprocessing.get_context("spawn")
        found: dict[str, Executor] = {}
        if "process pool" in chosen:
            found["process pool"] = stack.enter_context(
                ProcessPoolExecutor(
                    workers, mp_context=spawn, initializer=initializer, initargs=initargs
                )
            )
        if "loky" in chosen:
            with contextlib.suppress(ImportError):
                import loky

                executor = loky.get_reusable_executor(
                    max_workers=workers, initializer=initializer, initargs=initargs
                )
                stack.callback(executor.shutdown, wait=True)
                found["loky"] = executor
        if "dask" in chosen:
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
                if worker_cpus is not None:
                    client.run(pin, worker_cpus)
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


Samples = dict[tuple[str, str, str, str], list[tuple[float, float, float]]]
"""(loop, engine, work, mode) -> seconds per call (gathered, its CPU, sequential), per round."""


@contextlib.contextmanager
def request(tracer: Any, sampled: bool) -> Iterator[None]:
    """Be inside a request's span: a recording one if ``sampled``, else one its trace left out."""
    from opentelemetry import trace

    if sampled:
        with tracer.start_as_current_span("request"):
            yield
        return
    trace_id, span_id = UNSAMPLED_REQUEST
    context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(0))
    with trace.use_span(trace.NonRecordingSpan(context)):
        yield


async def run_rounds(
    loop_name: str,
    executors: dict[str, Executor],
    rounds: int,
    calls: int,
    sequential: int,
    samples: Samples,
    repeats: int = 1,
) -> None:
    """Measure every mode ``rounds`` times on the running loop, into ``samples``.

    In a round, each mode is measured ``repeats`` times, the modes taking
    turns; the round keeps the median of each measure.
    """
    from opentelemetry import trace
    from prometheus_client import CollectorRegistry

    from aiothreads import instrumentation

    provider = install_sdk()
    registry = CollectorRegistry()
    tracer = trace.get_tracer("benchmark")
    try:
        for round_number in range(rounds):
            order = MODES[round_number % len(MODES) :] + MODES[: round_number % len(MODES)]
            for engine, executor in executors.items():
                for work, function in WORKLOADS.items():
                    in_round: dict[str, list[tuple[float, float, float]]] = {}
                    for mode in ("warm-up", *order * repeats):
                        measured_mode = (
                            "aiothreads, metrics + traces" if mode == "warm-up" else mode
                        )
                        call = calls_for(measured_mode, executor, registry, provider, function)
                        settle(provider)
                        with request(tracer, SAMPLED[measured_mode]):
                            measured = await measure(call, calls, sequential)
                        if mode != "warm-up":
                            in_round.setdefault(mode, []).append(measured)
                    for mode, measures in in_round.items():
                        samples.setdefault((loop_name, engine, work, mode), []).append(
                            median_of(measures)
                        )
            print(f"{loop_name}: round {round_number + 1}/{rounds} done", file=sys.stderr)
    finally:
        instrumentation.reset()
        provider.shutdown()


def settle(provider: Any) -> None:
    """Leave nothing of the last measure to the next: its spans exported, its garbage collected."""
    provider.force_flush()
    gc.collect()


def median_of(measures: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Return the median of each measure (gathered, its CPU, sequential) over repeats."""
    gathered, cpu, one_by_one = (statistics.median(each) for each in zip(*measures, strict=True))
    return gathered, cpu, one_by_one


def render(
    samples: Samples,
    loops: list[str],
    engines: list[str],
    rounds: int,
    calls: int,
    sequential: int,
    repeats: int = 1,
    pinned: bool = False,
) -> str:
    """Return the Markdown tables: per loop, engine, work and mode, time per call and ratio."""
    placement = (
        "the calling process on one CPU and the workers on the other"
        if pinned
        else "the calling process and the workers sharing the CPUs"
    )
    lines = [
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, two worker processes per "
        f"engine, {placement}; {rounds} rounds, each measuring every mode back to back, "
        f"{repeats} times in turns, in an order that changes every round (a round keeps the "
        "median of its turns): time per call is the median over the rounds, a ratio the median "
        "of the rounds' own ratios (with the lowest and highest, gathered). Before each "
        "measure, the spans of the last one are exported and its garbage collected. "
        f"Gathered: {calls:,} calls in flight "
        "at once (wall time, and CPU time of the calling process over all its threads); one "
        f"by one: {sequential:,} calls awaited in turn. The work is nothing (`operator.mul`), "
        'or about a millisecond of CPU in the worker (`multiply_after_work`). "Trace '
        'context": the calls are made in a request whose trace is not sampled, and carry '
        'its context to the worker; "traces": in a sampled request, so that each call '
        f"also records a span. Target: within {TARGET:.2f}x of `run_in_executor`, gathered, "
        "with metrics and trace context; the traces rows add the OpenTelemetry SDK's own "
        "price for recording a span, and are shown beside them.",
    ]
    for loop_name in loops:
        lines += [
            "",
            f"**{loop_name}**",
            "",
            "| engine | work | mode | gathered µs/call | vs run_in_executor | CPU here µs/call "
            "| vs run_in_executor | one by one µs/call | vs run_in_executor |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for engine in engines:
            for work in WORKLOADS:
                lines += rows(samples, loop_name, engine, work)
    lines.append("")
    return "\n".join(lines)


def rows(samples: Samples, loop_name: str, engine: str, work: str) -> list[str]:
    """Return the table rows of one loop, engine and work: each mode against the bare one.

    A ratio is the median of the rounds' own ratios: each round measures
    every mode back to back, so a round that the machine slowed down slows
    the bare calls with it.
    """
    bare = samples[(loop_name, engine, work, "run_in_executor")]
    lines = []
    for mode in MODES:
        measured = samples[(loop_name, engine, work, mode)]
        values = [statistics.median(sample[index] for sample in measured) for index in range(3)]
        ratios = [paired_ratios(measured, bare, index) for index in range(3)]
        medians = [statistics.median(each) for each in ratios]
        verdict = ""
        if mode in TARGETED:
            verdict = " (met)" if medians[0] <= TARGET else " (NOT met)"
        lines.append(
            f"| {engine} | {work} | {mode} | {values[0] * 1e6:,.1f} "
            f"| {medians[0]:.3f}x{verdict} ({min(ratios[0]):.2f} to {max(ratios[0]):.2f}) "
            f"| {values[1] * 1e6:,.1f} | {medians[1]:.3f}x "
            f"| {values[2] * 1e6:,.1f} | {medians[2]:.3f}x |"
        )
    return lines


def paired_ratios(
    measured: list[tuple[float, float, float]], bare: list[tuple[float, float, float]], index: int
) -> list[float]:
    """Return, round by round, the ratio of a measure (``index``) to the bare calls' own."""
    return [mine[index] / base[index] for mine, base in zip(measured, bare, strict=True)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--engines", default=",".join(ENGINES), help="of: " + ", ".join(ENGINES))
    parser.add_argument("--repeats", type=int, default=3, help="turns of every mode per round")
    parser.add_argument(
        "--pin", action="store_true", help="the caller on the first CPU, the workers on the rest"
    )
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    arguments = parser.parse_args(argv)
    loops = [name.strip() for name in arguments.loops.split(",") if name.strip()]
    unknown = set(loops) - {"asyncio", "uvloop"}
    if unknown or not loops:
        parser.error(f"--loops takes asyncio and uvloop, not {sorted(unknown) or 'nothing'}")
    chosen = [name.strip() for name in arguments.engines.split(",") if name.strip()]
    if set(chosen) - set(ENGINES) or not chosen:
        parser.error(f"--engines takes {', '.join(ENGINES)}, not {arguments.engines!r}")
    if arguments.repeats < 1:
        parser.error("--repeats takes 1 or more")
    cpus = split_cpus() if arguments.pin else None
    if arguments.pin and cpus is None:
        parser.error("--pin needs two CPUs or more, and a system that can pin processes")
    worker_cpus = None
    if cpus is not None:
        caller_cpus, worker_cpus = cpus
        pin(caller_cpus)  # before any thread or process starts: they start here too
    samples: Samples = {}
    with engines(arguments.workers, worker_cpus, chosen) as executors:
        for loop_name in loops:
            loop: asyncio.AbstractEventLoop
            if loop_name == "uvloop":
                import uvloop

                loop = uvloop.new_event_loop()
            else:
                loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(
                    run_rounds(
                        loop_name,
                        executors,
                        arguments.rounds,
                        arguments.calls,
                        arguments.sequential,
                        samples,
                        arguments.repeats,
                    )
                )
            finally:
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()
    report = render(
        samples,
        loops,
        list(executors),
        arguments.rounds,
        arguments.calls,
        arguments.sequential,
        arguments.repeats,
        pinned=cpus is not None,
    )
    print(report)
    if arguments.output is not None:
        arguments.output.write_text(report)


if __name__ == "__main__":
    main()
