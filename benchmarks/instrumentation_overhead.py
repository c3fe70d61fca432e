"""What instrumentation costs per threaded call, mode by mode, on asyncio and uvloop.

Run: ``python -m benchmarks.instrumentation_overhead [--rounds R] [--calls N] [--modes M;M]
[--output F]``

Each mode runs in a fresh process (so it is set up the way a service sets it
up: by what is installed, the environment and a global tracer provider), and
the modes take turns round by round, so that drift in machine speed hits them
alike. A process measures, after a warm-up:

* CPU time per call, over all threads, of ``N`` calls of a trivial
  ``@threaded`` function gathered at once, and of the same calls gathered 100
  at a time;
* wall time per call of calls awaited one after another;
* items per second of a ``@threaded_iterable`` generator streaming 200,000
  integers.

Every mode imports prometheus-client and the OpenTelemetry SDK first, as a
service with the extras installed does, so that the garbage collector walks
heaps of the same size and only aiothreads' own work differs.

Two modes keep idle workers (``WorkerPool(idle_timeout=None)`` as the loop's
default executor, as 1.1 did), off and with Prometheus: against ``off`` and
``prometheus``, what letting idle workers exit costs a call at steady load.

Two modes trace by hand instead (``off``, and a span opened with
``start_as_current_span`` inside the function): what the SDK itself costs for
the least tracing a user could write, the floor under the SDK modes.

The report gives the median of the rounds with the lowest and highest round,
and what each mode adds over ``off`` (the same run's median).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

MODES: dict[str, dict[str, str]] = {
    "off": {"AIOTHREADS_INSTRUMENTATION": "off"},
    "prometheus": {"AIOTHREADS_INSTRUMENTATION": "prometheus"},
    "opentelemetry, API only": {"AIOTHREADS_INSTRUMENTATION": "opentelemetry"},
    "auto, default install": {},
    "opentelemetry + SDK, BatchSpanProcessor": {
        "AIOTHREADS_INSTRUMENTATION": "opentelemetry",
        "BENCH_SDK": "all",
    },
    "opentelemetry + SDK, 1% sampled": {
        "AIOTHREADS_INSTRUMENTATION": "opentelemetry",
        "BENCH_SDK": "0.01",
    },
    "off + span written in the function, BatchSpanProcessor": {
        "AIOTHREADS_INSTRUMENTATION": "off",
        "BENCH_SDK": "all",
        "BENCH_SPAN_BY_HAND": "1",
    },
    "off + span written in the function, 1% sampled": {
        "AIOTHREADS_INSTRUMENTATION": "off",
        "BENCH_SDK": "0.01",
        "BENCH_SPAN_BY_HAND": "1",
    },
    "auto + SDK, BatchSpanProcessor": {"BENCH_SDK": "all"},
    "auto, function opted out": {"BENCH_OPTED_OUT": "1"},
    "off, slow-call watchdog on": {
        "AIOTHREADS_INSTRUMENTATION": "off",
        "AIOTHREADS_SLOW_CALL_THRESHOLD": "60",
    },
    "auto, slow-call watchdog on": {"AIOTHREADS_SLOW_CALL_THRESHOLD": "60"},
    "off, idle workers kept": {"AIOTHREADS_INSTRUMENTATION": "off", "BENCH_IDLE_TIMEOUT": "none"},
    "prometheus, idle workers kept": {
        "AIOTHREADS_INSTRUMENTATION": "prometheus",
        "BENCH_IDLE_TIMEOUT": "none",
    },
}
"""Mode name -> environment of its process (``AIOTHREADS_INSTRUMENTATION`` unset: auto)."""

TARGETS: dict[str, float] = {
    "prometheus": 1.5,
    "opentelemetry, API only": 0.7,
    "auto, default install": 2.0,
    "opentelemetry + SDK, BatchSpanProcessor": 20.0,
    "opentelemetry + SDK, 1% sampled": 3.0,
    "auto, function opted out": 0.3,
    "off, slow-call watchdog on": 0.3,
}
"""Mode -> the most CPU it may add per call over ``off``, in µs (10,000 in flight)."""

STREAM_ITEMS = 200_000
SEQUENTIAL_CALLS = 2_000


def install_sdk(sampling: str) -> Callable[[], None]:
    """Install an SDK tracer provider that exports to nowhere; returns its shutdown."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if sampling == "all":
        provider = TracerProvider()
    else:
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(float(sampling))))
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


async def measure_here(calls: int) -> dict[str, float]:
    """Measure this process's mode on the running loop."""
    from aiothreads import threaded, threaded_iterable

    instrument = os.environ.get("BENCH_OPTED_OUT") != "1"

    if os.environ.get("BENCH_SPAN_BY_HAND") == "1":
        # The least a user could write to trace each call: the SDK's own floor.
        from opentelemetry import trace

        tracer = trace.get_tracer("benchmark")
        attributes = {"code.function.name": "trivial", "aiothreads.kind": "threaded"}

        @threaded(instrument=instrument)
        def trivial() -> int:
            with tracer.start_as_current_span("threaded trivial", attributes=attributes):
                return 1

    else:

        @threaded(instrument=instrument)
        def trivial() -> int:
            return 1

    @threaded_iterable(max_size=1024)
    def numbers(count: int) -> Iterator[int]:
        yield from range(count)

    async def gathered(total: int, batch: int) -> float:
        started = time.process_time()
        for _ in range(total // batch):
            await asyncio.gather(*(trivial() for _ in range(batch)))
        return (time.process_time() - started) / total

    async def sequential(total: int) -> float:
        started = time.perf_counter()
        for _ in range(total):
            await trivial()
        return (time.perf_counter() - started) / total

    async def stream(total: int) -> float:
        started = time.perf_counter()
        async for _ in numbers(total):
            pass
        return total / (time.perf_counter() - started)

    await gathered(calls // 10, calls // 10)  # warm-up: threads, series, imports
    await sequential(SEQUENTIAL_CALLS // 10)
    await stream(STREAM_ITEMS // 10)
    return {
        "cpu_all": await gathered(calls, calls),
        "cpu_100": await gathered(calls, 100),
        "sequential": await sequential(SEQUENTIAL_CALLS),
        "stream": await stream(STREAM_ITEMS),
    }


def import_every_backend() -> None:
    """Import the backends' libraries in every mode, so that all heaps are alike.

    A service that has the extras installed imports them for its own use
    too; what differs between modes is only what aiothreads does per call.
    """
    import opentelemetry.sdk.trace
    import opentelemetry.trace
    import prometheus_client

    del opentelemetry, prometheus_client


def run_in_this_mode(loop_kind: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Set this process's mode up from its environment; run ``work()`` on a new loop."""
    import_every_backend()
    shutdown = None
    if "BENCH_SDK" in os.environ:
        shutdown = install_sdk(os.environ["BENCH_SDK"])
    if loop_kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    if os.environ.get("BENCH_IDLE_TIMEOUT") == "none":
        # As 1.1 did: no worker exits when idle, the pool never waits with a timeout.
        from aiothreads import WorkerPool

        loop.set_default_executor(WorkerPool(idle_timeout=None))
    try:
        result = loop.run_until_complete(work())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    if shutdown is not None:
        shutdown()
    return result


def child(loop_kind: str, calls: int) -> None:
    """Set this process's mode up from its environment, measure, print JSON."""
    print(json.dumps(run_in_this_mode(loop_kind, functools.partial(measure_here, calls))))


Samples = dict[tuple[str, str], list[dict[str, float]]]
"""(loop kind, mode) -> one measurement per round."""


def run_rounds(rounds: int, calls: int, loops: list[str], modes: list[str]) -> Samples:
    """Run each of ``modes`` on every loop ``rounds`` times, interleaved."""
    samples: Samples = {}
    for round_number in range(rounds):
        for loop_kind in loops:
            for name in modes:
                environment = MODES[name]
                env = {k: v for k, v in os.environ.items() if k != "AIOTHREADS_INSTRUMENTATION"}
                env.update(environment)
                command = [sys.executable, "-m", "benchmarks.instrumentation_overhead"]
                command += ["--child", loop_kind, "--calls", str(calls)]
                completed = subprocess.run(
                    command, capture_output=True, text=True, check=True, cwd=ROOT, env=env
                )
                result = json.loads(completed.stdout.strip().splitlines()[-1])
                samples.setdefault((loop_kind, name), []).append(result)
        print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
    return samples


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float]) -> str:
    return f"{_median(values):.1f} ({min(values):.1f} to {max(values):.1f})"


def render(samples: Samples, rounds: int, calls: int, loops: list[str], modes: list[str]) -> str:
    """Return the Markdown tables: per loop, every mode against ``off``."""
    lines = [
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; each mode in a fresh "
        f"process, {rounds} interleaved rounds, median with the lowest and highest round. "
        f"CPU is per call over all threads, {calls:,} calls of a trivial `@threaded` "
        "function gathered at once (or 100 at a time); sequential is wall time per call "
        f"awaited one after another; streaming is {STREAM_ITEMS:,} items through "
        "`@threaded_iterable(max_size=1024)`.",
        "",
    ]
    for loop_kind in loops:
        off = samples[(loop_kind, "off")]
        off_all = _median([r["cpu_all"] for r in off])
        off_100 = _median([r["cpu_100"] for r in off])
        off_seq = _median([r["sequential"] for r in off])
        off_stream = _median([r["stream"] for r in off])
        lines += [
            f"**{loop_kind}**",
            "",
            "| mode | CPU µs/call, all in flight | added | CPU µs/call, 100 in flight "
            "| added | sequential vs off | streaming vs off | target (added, all in flight) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name in modes:
            results = samples[(loop_kind, name)]
            cpu_all = [r["cpu_all"] * 1e6 for r in results]
            cpu_100 = [r["cpu_100"] * 1e6 for r in results]
            added = _median(cpu_all) - off_all * 1e6
            added_100 = _median(cpu_100) - off_100 * 1e6
            sequential = _median([r["sequential"] for r in results]) / off_seq
            stream = _median([r["stream"] for r in results]) / off_stream
            target = TARGETS.get(name)
            verdict = ""
            if target is not None:
                verdict = f"≤ +{target} µs: {'met' if added <= target else 'NOT met'}"
            lines.append(
                f"| {name} | {_spread(cpu_all)} | {added:+.1f} | {_spread(cpu_100)} "
                f"| {added_100:+.1f} | {sequential:.2f}x | {stream:.2f}x | {verdict} |"
            )
        lines.append("")
    return "\n".join(lines)


def chosen_modes(parser: argparse.ArgumentParser, names: str | None) -> list[str]:
    """Return the modes named in ``names`` (separated by ';'), all if none, and ``off``."""
    if not names:
        return list(MODES)
    chosen = {name.strip() for name in names.split(";") if name.strip()}
    unknown = chosen - set(MODES)
    if unknown:
        parser.error(f"no such mode: {sorted(unknown)}; the modes are {list(MODES)}")
    return [name for name in MODES if name in chosen or name == "off"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument(
        "--modes",
        help="only these modes, separated by ';' (off is always measured: the rest add to it)",
    )
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--child", metavar="LOOP", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        child(arguments.child, arguments.calls)
        return
    loops = [kind for kind in arguments.loops.split(",") if kind]
    modes = chosen_modes(parser, arguments.modes)
    samples = run_rounds(arguments.rounds, arguments.calls, loops, modes)
    report = render(samples, arguments.rounds, arguments.calls, loops, modes)
    print(report)
    if arguments.output is not None:
        arguments.output.write_text(report)


if __name__ == "__main__":
    main()
