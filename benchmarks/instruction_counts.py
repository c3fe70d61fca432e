"""Instructions each instrumentation mode adds to a threaded call, counted by valgrind.

Run: ``python -m benchmarks.instruction_counts [--calls N] [--repeats R] [--modes M;M]
[--loops asyncio,uvloop] [--output F]`` (needs valgrind: ``apt-get install valgrind``)

On a shared machine the CPU time of a call varies by a microsecond or more
from one round of ``benchmarks.instrumentation_overhead`` to the next, more
than the differences its targets are about. The instructions a process
executes barely vary: valgrind's callgrind counts them, running the threads
one at a time. For each mode (set up as in ``instrumentation_overhead``: by
its environment, in a fresh process), a process makes the warm-up calls
alone, and another the warm-up and then ``N`` calls of a trivial
``@threaded`` function gathered at once; the difference, divided by ``N``,
is what one call executes.

The report gives, per loop, the instructions per call of each mode (the
median of the repeats, with the lowest and highest), what the mode adds to
``off``, and that as a share of ``off``: where ``off`` takes ``T`` µs per
call, the mode adds about ``share x T`` µs (instructions are not all alike,
so this is an estimate, not a timing). Under valgrind a process runs some
fifty times slower; ``--calls 10000`` takes about 15 s per process.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.instrumentation_overhead import (
    MODES,
    chosen_modes,
    run_in_this_mode,
)

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 2_000
"""Calls gathered twice before those counted: threads, series and imports are made then."""
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


async def make_calls(calls: int) -> None:
    """Gather ``WARM_UP`` calls twice, then ``calls`` calls at once."""
    from aiothreads import threaded

    @threaded
    def trivial() -> int:
        return 1

    for _ in range(2):
        await asyncio.gather(*(trivial() for _ in range(WARM_UP)))
    if calls:
        await asyncio.gather(*(trivial() for _ in range(calls)))


def child(loop_kind: str, calls: int) -> None:
    """Set this process's mode up from its environment and make the calls."""
    run_in_this_mode(loop_kind, functools.partial(make_calls, calls))


def instructions(loop_kind: str, mode: str, calls: int) -> int:
    """Return the instructions a process of ``mode`` executed making ``calls`` calls."""
    env = {k: v for k, v in os.environ.items() if k != "AIOTHREADS_INSTRUMENTATION"}
    env.update(MODES[mode])
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--fair-sched=yes",
            f"--callgrind-out-file={scratch}/callgrind.out",
            sys.executable,
            "-m",
            "benchmarks.instruction_counts",
            "--child",
            loop_kind,
            "--calls",
            str(calls),
        ]
        completed = subprocess.run(
            command, capture_output=True, text=True, check=True, cwd=ROOT, env=env
        )
    found = _COLLECTED.findall(completed.stderr)
    if len(found) != 1:
        raise RuntimeError(f"callgrind reported no single total:\n{completed.stderr[-2000:]}")
    return int(found[0])


def per_call(loop_kind: str, mode: str, calls: int) -> float:
    """Return the instructions one call of ``mode`` executes (the warm-up subtracted)."""
    return (instructions(loop_kind, mode, calls) - instructions(loop_kind, mode, 0)) / calls


def render(counts: dict[tuple[str, str], list[float]], calls: int, repeats: int) -> str:
    """Return the Markdown tables: per loop, every mode against ``off``."""
    loops = list(dict.fromkeys(loop for loop, _ in counts))
    modes = list(dict.fromkeys(mode for _, mode in counts))
    lines = [
        f"Python {sys.version.split()[0]}; instructions per call counted by valgrind's "
        f"callgrind, {calls:,} calls of a trivial `@threaded` function gathered at once, "
        f"median of {repeats} process pair(s) per mode with the lowest and highest.",
        "",
    ]
    for loop_kind in loops:
        off = statistics.median(counts[(loop_kind, "off")])
        lines += [
            f"**{loop_kind}**",
            "",
            "| mode | instructions per call | added | share of off |",
            "| --- | ---: | ---: | ---: |",
        ]
        for mode in modes:
            values = counts[(loop_kind, mode)]
            median = statistics.median(values)
            spread = f"{median:,.0f} ({min(values):,.0f} to {max(values):,.0f})"
            added = median - off
            lines.append(f"| {mode} | {spread} | {added:+,.0f} | {added / off:+.0%} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loops", default="asyncio")
    parser.add_argument(
        "--modes",
        default="prometheus;auto, default install;opentelemetry, API only",
        help="these modes, separated by ';' (off is always counted: the rest add to it)",
    )
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--child", metavar="LOOP", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        child(arguments.child, arguments.calls)
        return
    if arguments.calls <= 0 or arguments.repeats <= 0:
        parser.error("--calls and --repeats must be positive")
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind (Debian: apt-get install valgrind)")
    modes = chosen_modes(parser, arguments.modes)
    loops = [kind for kind in arguments.loops.split(",") if kind]
    counts: dict[tuple[str, str], list[float]] = {}
    for repeat in range(arguments.repeats):
        for loop_kind in loops:
            for mode in modes:
                counts.setdefault((loop_kind, mode), []).append(
                    per_call(loop_kind, mode, arguments.calls)
                )
        print(f"repeat {repeat + 1}/{arguments.repeats} done", file=sys.stderr)
    report = render(counts, arguments.calls, arguments.repeats)
    print(report)
    if arguments.output is not None:
        arguments.output.write_text(report)


if __name__ == "__main__":
    main()
