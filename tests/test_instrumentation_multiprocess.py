"""prometheus-client's multiprocess mode: real worker processes, one aggregated scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, faulthandler, multiprocessing, os, signal, threading
import aiothreads
from aiothreads._pool import WorkerPool

faulthandler.dump_traceback_later(40, exit=True)  # a hang prints every thread's stack

CALLS = 25

@aiothreads.threaded
def double(value):
    return value * 2

@aiothreads.threaded
def hang(started):
    started.set()
    threading.Event().wait()

@aiothreads.threaded_iterable(max_size=8)
def numbers():
    yield from range(1_000_000)

def killed_in_a_call(started):
    async def main():
        assert [await double(v) for v in range(CALLS)] == [2 * v for v in range(CALLS)]
        await hang(started)
    asyncio.run(main())

def live(ready, done):
    async def main():
        assert [await double(v) for v in range(CALLS)] == [2 * v for v in range(CALLS)]
        closed = WorkerPool(max_workers=3, thread_name_prefix="closed")
        closed.shutdown()
        try:
            closed.submit(abs, -1)
        except RuntimeError:
            pass  # refused: counted under pool="closed", reason="shut_down"
        else:
            raise AssertionError("a pool shut down ran a call")
        stopped = numbers()
        async for _ in stopped:
            break  # one generator stopped early, for reason "break"
        await stopped.wait_closed()
        iterator = numbers()  # stays open, its producer blocked on a full channel
        await iterator.__anext__()
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 60)
        await iterator.aclose()
    asyncio.run(main())

if __name__ == "__main__":
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    context = multiprocessing.get_context("spawn")
    started, ready, done = context.Event(), context.Event(), context.Event()
    doomed = context.Process(target=killed_in_a_call, args=(started,))
    survivor = context.Process(target=live, args=(ready, done))
    doomed.start()
    survivor.start()
    assert started.wait(60) and ready.wait(60)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join()
    multiprocess.mark_process_dead(doomed.pid)  # what gunicorn's child_exit hook does
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    open("scrape.txt", "wb").write(generate_latest(registry))
    calls = {"function": "__mp_main__.double", "kind": "threaded"}
    hung = {"function": "__mp_main__.hang", "kind": "threaded"}
    stream = {"function": "__mp_main__.numbers", "kind": "iterable"}
    for name, labels in (
        ("aiothreads_calls_started_total", calls),
        ("aiothreads_calls_finished_total", {**calls, "outcome": "ok"}),
        ("aiothreads_call_duration_seconds_count", calls),
        ("aiothreads_calls_in_flight", calls),
        ("aiothreads_calls_queued", calls),
        ("aiothreads_calls_started_total", hung),
        ("aiothreads_calls_in_flight", hung),
        ("aiothreads_iterators_active", stream),
        ("aiothreads_channel_capacity", stream),
        ("aiothreads_generator_cancellations_total", {**stream, "reason": "break"}),
    ):
        print(name, labels["function"], registry.get_sample_value(name, labels))
    for name, labels in (
        ("aiothreads_pool_threads_max", {"pool": "default"}),
        ("aiothreads_pool_threads_max", {"pool": "closed"}),
        ("aiothreads_pool_refused_total", {"pool": "closed", "reason": "shut_down"}),
        ("aiothreads_pool_refused_total", {"pool": "default", "reason": "dropped"}),
    ):
        print(name, labels["pool"], registry.get_sample_value(name, labels))
    done.set()
    survivor.join()
    assert survivor.exitcode == 0
"""


@dataclass
class Service:
    values: list[list[str]]
    scrape: Path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    """Run two workers, kill one in a call, scrape the survivor and the dead one's counts."""
    folder = tmp_path_factory.mktemp("service")
    directory = folder / "metrics"
    directory.mkdir()
    script = folder / "service.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "AIOTHREADS_INSTRUMENTATION": "prometheus",
    }
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=folder,
    )
    assert completed.returncode == 0, completed.stderr
    values = [line.rsplit(" ", 1) for line in completed.stdout.splitlines()]
    return Service(values, folder / "scrape.txt")


def test_worker_processes_add_up_and_a_killed_one_leaves_no_stale_gauge(
    service: Service,
) -> None:
    values = service.values
    assert values[:10] == [
        # Counters and histograms add up over every worker, the killed one too.
        ["aiothreads_calls_started_total __mp_main__.double", "50.0"],
        ["aiothreads_calls_finished_total __mp_main__.double", "50.0"],
        ["aiothreads_call_duration_seconds_count __mp_main__.double", "50.0"],
        # Gauges add up over live workers only.
        ["aiothreads_calls_in_flight __mp_main__.double", "0.0"],
        ["aiothreads_calls_queued __mp_main__.double", "0.0"],
        # The call the killed worker was running was counted, and is no longer in flight.
        ["aiothreads_calls_started_total __mp_main__.hang", "1.0"],
        ["aiothreads_calls_in_flight __mp_main__.hang", "None"],
        # The survivor's open iterator: one active, its capacity, the one left by break.
        ["aiothreads_iterators_active __mp_main__.numbers", "1.0"],
        ["aiothreads_channel_capacity __mp_main__.numbers", "8.0"],
        ["aiothreads_generator_cancellations_total __mp_main__.numbers", "1.0"],
    ]
    maximum = values[10][1]
    assert values[10:] == [
        # The survivor's default pool only: the killed worker's maximum is gone.
        ["aiothreads_pool_threads_max default", maximum],
        # A pool shut down no longer counts towards the maximum, but its refusals do.
        ["aiothreads_pool_threads_max closed", "0.0"],
        ["aiothreads_pool_refused_total closed", "1.0"],
        ["aiothreads_pool_refused_total default", "0.0"],
    ]
    usable_cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    assert float(maximum) == min(32, usable_cpus + 4)
    scrape = service.scrape.read_text()
    for family in (
        "aiothreads_calls_started_total",
        "aiothreads_calls_finished_total",
        "aiothreads_call_duration_seconds",
        "aiothreads_call_wait_seconds",
        "aiothreads_calls_in_flight",
        "aiothreads_calls_queued",
        "aiothreads_items_yielded_total",
        "aiothreads_producer_blocked_seconds_total",
        "aiothreads_generator_cancellations_total",
        "aiothreads_channel_depth",
        "aiothreads_channel_capacity",
        "aiothreads_iterators_active",
        "aiothreads_pool_threads_max",
        "aiothreads_pool_refused_total",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in scrape, family
    # Busy and idle threads and waiting calls change with every call: not written here.
    assert "aiothreads_pool_threads{" not in scrape
    assert "aiothreads_pool_queued" not in scrape


@pytest.mark.e2e
def test_promtool_accepts_the_aggregated_scrape(service: Service) -> None:
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=service.scrape.read_bytes(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
