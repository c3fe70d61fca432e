"""Run every benchmark side by side and write the results table (and chart).

Usage::

    pip install -e . --group bench           # pip 25.1 or later
    python -m benchmarks.run                 # full run, writes docs/benchmarks.md and .png
    python -m benchmarks.run --quick         # tiny sizes, one round: a smoke test

Each round measures every implementation of every scenario once, in turn, each
in a fresh process on a fresh event loop (after a short warm-up on it), so that
drift in machine speed hits them alike and no case inherits another's threads
or heap; the table shows the median of the rounds. aiothreads 1.1.4 is
installed into ``benchmarks/.peers`` and put first on its process's path, so
the two versions never shadow each other.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks import cases, memory

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / ".peers"
OLD_RELEASE = PEERS / "aiothreads-1.1.4"

TARGETS = [
    ("stream ints, max_size=1024", cases.OLD, 10.0),
    ("stream ints, max_size=1024", "culsans", 3.0),
    ("FromThreadChannel put/get", cases.OLD, 5.0),
    ("sequential call", "asyncio.to_thread", 1.3),
    ("10,000 concurrent calls", "loop.run_in_executor", 5.0),
    ("sync_await round trip", cases.OLD, 1.5),
]
"""(scenario, peer, minimum speed-up of aiothreads over the peer)."""


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a new-loop factory for ``asyncio`` or ``uvloop``."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_case(case: cases.Case, n: int, kind: str) -> float:
    """Warm ``case`` up on a fresh loop, then time it there; returns seconds."""
    loop = loop_factory(kind)()
    try:
        loop.run_until_complete(case(max(1, n // 20)))
        return loop.run_until_complete(case(n))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def ensure_old_release() -> bool:
    """Install aiothreads 1.1.4 into its own folder if needed; False if impossible."""
    if (OLD_RELEASE / "aiothreads" / "__init__.py").exists():
        return True
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(OLD_RELEASE),
            "aiothreads==1.1.4",
        ],
        check=False,
    )
    return completed.returncode == 0


def run_isolated(
    scenario: str, implementation: str, n: int, kind: str, old_release: Path | None = None
) -> float:
    """Time one case in a fresh process (on aiothreads 1.1.4 with ``old_release``)."""
    command = [sys.executable, "-m", "benchmarks.child", scenario, implementation, str(n), kind]
    if old_release is not None:
        command.append(str(old_release))
    completed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return float(completed.stdout.strip().splitlines()[-1])


def available(implementation: str) -> bool:
    """Whether the peer library behind ``implementation`` is installed."""
    modules = {
        "anyio.to_thread.run_sync": "anyio",
        "asgiref sync_to_async": "asgiref",
        "culsans": "culsans",
        "janus": "janus",
    }
    module = modules.get(implementation)
    return module is None or importlib.util.find_spec(module) is not None


Results = dict[str, dict[str, dict[str, float]]]
"""loop kind -> scenario -> implementation -> throughput (operations per second)."""

Samples = dict[tuple[str, str, str], list[float]]
"""(loop kind, scenario, implementation) -> throughput in each round, in round order."""


def measure(rounds: int, scale: float, loops: list[str], with_old: bool) -> Samples:
    """Run every case ``rounds`` times, interleaved; return each round's throughput."""
    samples: Samples = {}
    for round_number in range(rounds):
        for kind in loops:
            for scenario, (_, size, implementations) in cases.SCENARIOS.items():
                n = max(10, int(size * scale))
                for implementation in implementations:
                    if not available(implementation):
                        continue
                    count = n // cases.SLOW_PEERS.get(implementation, 1)
                    seconds = run_isolated(scenario, implementation, count, kind)
                    samples.setdefault((kind, scenario, implementation), []).append(count / seconds)
                if with_old and scenario in cases.OLD_RELEASE_SCENARIOS:
                    seconds = run_isolated(scenario, cases.AIOTHREADS, n, kind, OLD_RELEASE)
                    samples.setdefault((kind, scenario, cases.OLD), []).append(n / seconds)
        print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
    return samples


def medians(samples: Samples) -> Results:
    """Return the median throughput of every case."""
    results: Results = {}
    for (kind, scenario, implementation), values in samples.items():
        results.setdefault(kind, {}).setdefault(scenario, {})[implementation] = statistics.median(
            values
        )
    return results


def round_ratios(samples: Samples, kind: str, scenario: str, peer: str) -> list[float]:
    """Return how many times faster aiothreads was than ``peer`` in each round."""
    ours = samples.get((kind, scenario, cases.AIOTHREADS), [])
    theirs = samples.get((kind, scenario, peer), [])
    return [mine / other for mine, other in zip(ours, theirs, strict=True)]


def render(samples: Samples, rounds: int, scale: float, memory_report: str, chart_name: str) -> str:
    """Return the Markdown report; ``chart_name`` is the chart's file name beside it."""
    results = medians(samples)
    lines = [
        f"## Benchmarks on {platform.python_implementation()} {platform.python_version()}",
        "",
        f"`python -m benchmarks.run` on {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; median of {rounds} interleaved rounds"
        + (f", sizes scaled by {scale}" if scale != 1 else "")
        + ", instrumentation off (`AIOTHREADS_INSTRUMENTATION=off`, as without extras). "
        "Throughput is operations per second; the last column is how many times "
        "faster aiothreads is than the implementation in that row.",
        "",
        f"![aiothreads against its peers]({chart_name})",
        "",
    ]
    for kind, scenarios in results.items():
        lines += [f"### {kind} event loop", ""]
        lines += [
            "| scenario | implementation | throughput | aiothreads is |",
            "| --- | --- | ---: | ---: |",
        ]
        for scenario, implementations in scenarios.items():
            unit = cases.SCENARIOS[scenario][0]
            ours = implementations.get(cases.AIOTHREADS)
            for implementation, value in sorted(implementations.items(), key=lambda kv: -kv[1]):
                ratio = "" if ours is None else f"{ours / value:.2f}x"
                lines.append(f"| {scenario} | {implementation} | {value:,.0f} {unit} | {ratio} |")
        lines.append("")
    lines += [
        "### Targets (asyncio event loop)",
        "",
        "The measured ratio compares the medians; the range is the lowest and the",
        "highest ratio of the two within one round.",
        "",
        "| scenario | against | target | measured | range over rounds | met |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    default = results.get("asyncio", {})
    for scenario, peer, target in TARGETS:
        row = default.get(scenario, {})
        if cases.AIOTHREADS in row and peer in row:
            measured = row[cases.AIOTHREADS] / row[peer]
            ratios = round_ratios(samples, "asyncio", scenario, peer)
            lines.append(
                f"| {scenario} | {peer} | {target:.1f}x | {measured:.2f}x | "
                f"{min(ratios):.2f}x to {max(ratios):.2f}x | "
                f"{'yes' if measured >= target else 'no'} |"
            )
        else:
            lines.append(f"| {scenario} | {peer} | {target:.1f}x | not measured | | |")
    lines += ["", "### Memory", "", memory_report, ""]
    return "\n".join(lines)


def chart(results: Results, path: Path) -> bool:
    """Draw speed-ups over each peer as horizontal bars; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows: list[tuple[str, float]] = []
    for scenario, implementations in results.get("asyncio", {}).items():
        ours = implementations.get(cases.AIOTHREADS)
        if ours is None:
            continue
        for implementation, value in implementations.items():
            if implementation != cases.AIOTHREADS:
                rows.append((f"{scenario}\nvs {implementation}", ours / value))
    figure, axes = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.2))
    labels = [label for label, _ in rows]
    values = [value for _, value in rows]
    colors = ["#2a9d8f" if value >= 1 else "#e76f51" for value in values]
    axes.barh(labels, values, color=colors)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("times faster than the peer (log scale; asyncio event loop)")
    axes.invert_yaxis()
    axes.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main() -> None:
    # Measure the library as installed without extras; the cost of turning
    # instrumentation on is measured by benchmarks.instrumentation_overhead.
    os.environ.setdefault("AIOTHREADS_INSTRUMENTATION", "off")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--quick", action="store_true", help="scale 0.01, one round, no files")
    parser.add_argument("--no-old", action="store_true", help="skip aiothreads 1.1.4")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "benchmarks.png")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rounds, arguments.scale = 1, 0.01
    loops = [kind for kind in arguments.loops.split(",") if kind]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        loops.remove("uvloop")
    with_old = not arguments.no_old and ensure_old_release()
    samples = measure(arguments.rounds, arguments.scale, loops, with_old)
    memory_report = memory.report(scale=arguments.scale)
    report = render(samples, arguments.rounds, arguments.scale, memory_report, arguments.chart.name)
    print(report)
    if not arguments.quick:
        arguments.output.write_text(report)
        if chart(medians(samples), arguments.chart):
            print(f"chart: {arguments.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
