"""prometheus-client's multiprocess mode: real worker processes, one aggregated scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import asyncio, multiprocessing, sys
import aiothreads

CALLS = 25

@aiothreads.threaded
def double(value):
    return value * 2

def worker(ready=None, done=None):
    async def main():
        assert [await double(value) for value in range(CALLS)] == [2 * v for v in range(CALLS)]
    asyncio.run(main())
    if ready is not None:
        ready.set()
        done.wait(60)

if __name__ == "__main__":
    from prometheus_client import CollectorRegistry, multiprocess

    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    live = context.Process(target=worker, args=(ready, done))
    live.start()
    exited = [context.Process(target=worker) for _ in range(2)]
    for process in exited:
        process.start()
    for process in exited:
        process.join()
        assert process.exitcode == 0
        multiprocess.mark_process_dead(process.pid)
    assert ready.wait(60)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    labels = {"function": "__mp_main__.double", "kind": "threaded"}
    for name, extra in (
        ("aiothreads_calls_started_total", {}),
        ("aiothreads_calls_finished_total", {"outcome": "ok"}),
        ("aiothreads_call_duration_seconds_count", {}),
        ("aiothreads_calls_in_flight", {}),
        ("aiothreads_calls_queued", {}),
    ):
        print(name, registry.get_sample_value(name, {**labels, **extra}))
    done.set()
    live.join()
    multiprocess.mark_process_dead(live.pid)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    after = registry.get_sample_value("aiothreads_calls_in_flight", labels)
    print("in_flight_after_all_exited", after)
"""


def test_worker_processes_add_up_in_one_scrape(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    script = tmp_path / "service.py"
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
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    values = dict(line.split() for line in completed.stdout.splitlines())
    assert values == {
        "aiothreads_calls_started_total": "75.0",
        "aiothreads_calls_finished_total": "75.0",
        "aiothreads_call_duration_seconds_count": "75.0",
        # Gauges add up over live workers only: the live one reports zero.
        "aiothreads_calls_in_flight": "0.0",
        "aiothreads_calls_queued": "0.0",
        # Once every worker exited, no stale gauge is left behind.
        "in_flight_after_all_exited": "None",
    }
