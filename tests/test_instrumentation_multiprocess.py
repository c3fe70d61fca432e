"""prometheus-client's multiprocess mode: real worker processes, one aggregated scrape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
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


def output_in_multiprocess_mode(
    folder: Path, source: str, timeout: float = 60, environment: Mapping[str, str] | None = None
) -> str:
    """Run ``source`` in ``folder`` with a metrics directory of its own; return what it printed.

    ``environment`` adds to (or overrides) the variables the script runs with.
    """
    directory = folder / "metrics"
    directory.mkdir()
    script = folder / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "AIOTHREADS_INSTRUMENTATION": "prometheus",
        **(environment or {}),
    }
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=folder,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@dataclass
class Service:
    values: list[list[str]]
    scrape: Path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    """Run two workers, kill one in a call, scrape the survivor and the dead one's counts."""
    folder = tmp_path_factory.mktemp("service")
    printed = output_in_multiprocess_mode(folder, SCRIPT, timeout=120)
    values = [line.rsplit(" ", 1) for line in printed.splitlines()]
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
    # Busy and idle threads and waiting calls are written too (the values: below).
    assert 'aiothreads_pool_threads{pool="default",state="busy"}' in scrape
    assert 'aiothreads_pool_queued{pool="default"}' in scrape


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


POOLS_SCRIPT = """
import asyncio, faulthandler, multiprocessing, threading
from concurrent.futures import ThreadPoolExecutor
import aiothreads
from aiothreads import _pool_state

faulthandler.dump_traceback_later(40, exit=True)  # a hang prints every thread's stack

DEFAULT_CALLS, CRUNCH_CALLS = 3, 3

def default_pool_threads():
    return sum(1 for t in threading.enumerate() if t.name.startswith("aiothreads_"))

def worker(go, burst, scraped, quiet, rescraped, truths):
    gate = threading.Event()
    crunch = ThreadPoolExecutor(2, thread_name_prefix="crunch")

    @aiothreads.threaded
    def held(entered):
        entered.set()
        gate.wait(60)

    @aiothreads.threaded(executor=crunch)
    def crunched(entered):
        entered.set()
        gate.wait(60)

    @aiothreads.threaded_separate
    def wait_for(*events):
        return all(event.wait(60) for event in events)

    async def main():
        assert await wait_for(go)
        publisher = _pool_state._observer.publisher
        entered = [threading.Event() for _ in range(DEFAULT_CALLS + CRUNCH_CALLS)]
        calls = [asyncio.ensure_future(held(e)) for e in entered[:DEFAULT_CALLS]]
        calls += [asyncio.ensure_future(crunched(e)) for e in entered[DEFAULT_CALLS:]]
        # All held calls and two crunch calls run; the third crunch call waits.
        assert await wait_for(*entered[: DEFAULT_CALLS + 2])
        # Two writes more: the files go on following a burst longer than one interval.
        assert publisher.wait_for(after=publisher.writes + 1, timeout=10)
        truths.put(("burst", default_pool_threads()))
        burst.set()
        assert await wait_for(scraped)
        gate.set()
        await asyncio.gather(*calls)
        assert publisher.wait_for(after=publisher.writes, quiet=True, timeout=10)
        truths.put(("quiet", default_pool_threads()))
        quiet.set()
        assert await wait_for(rescraped)
        crunch.shutdown()

    asyncio.run(main())

if __name__ == "__main__":
    from prometheus_client import CollectorRegistry, multiprocess

    def scrape(moment, threads):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        print(moment, "default pool threads", threads)
        for name, labels in (
            ("aiothreads_pool_threads", {"pool": "default", "state": "busy"}),
            ("aiothreads_pool_threads", {"pool": "default", "state": "idle"}),
            ("aiothreads_pool_queued", {"pool": "default"}),
            ("aiothreads_pool_threads", {"pool": "crunch", "state": "busy"}),
            ("aiothreads_pool_threads", {"pool": "crunch", "state": "idle"}),
            ("aiothreads_pool_queued", {"pool": "crunch"}),
            ("aiothreads_pool_threads_max", {"pool": "crunch"}),
        ):
            value = registry.get_sample_value(name, labels)
            print(moment, name, "/".join(labels.values()), value)

    context = multiprocessing.get_context("spawn")
    go, burst, scraped, quiet, rescraped = (context.Event() for _ in range(5))
    bursts, quiets = [], []
    truths = context.Queue()
    workers = []
    for _ in range(2):
        events = [context.Event() for _ in range(4)]
        workers.append((context.Process(target=worker, args=(go, *events, truths)), events))
    for process, _ in workers:
        process.start()
    go.set()
    for _, (burst, _, _, _) in workers:
        assert burst.wait(60)
    scrape("burst", sum(truths.get(timeout=60)[1] for _ in workers))
    for _, (_, scraped, _, _) in workers:
        scraped.set()
    for _, (_, _, quiet, _) in workers:
        assert quiet.wait(60)
    scrape("quiet", sum(truths.get(timeout=60)[1] for _ in workers))
    for process, (_, _, _, rescraped) in workers:
        rescraped.set()
        process.join(60)
        assert process.exitcode == 0
"""


def test_pool_threads_and_queue_follow_a_burst_in_every_worker(tmp_path: Path) -> None:
    """Busy, idle and queued are written by each worker and add up while it lives."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    script = tmp_path / "pools.py"
    script.write_text(textwrap.dedent(POOLS_SCRIPT))
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
    lines = completed.stdout.splitlines()
    threads = {line.split()[0]: float(line.split()[-1]) for line in lines if "pool threads" in line}
    values = [line.split(" ", 1)[1].rsplit(" ", 1) for line in lines if "pool threads" not in line]
    moments = [line.split()[0] for line in lines if "pool threads" not in line]
    burst = [value for moment, value in zip(moments, values, strict=True) if moment == "burst"]
    quiet = [value for moment, value in zip(moments, values, strict=True) if moment == "quiet"]
    assert burst == [
        # Two workers, each with three calls held on its default pool ...
        ["aiothreads_pool_threads default/busy", "6.0"],
        ["aiothreads_pool_threads default/idle", str(threads["burst"] - 6)],
        ["aiothreads_pool_queued default", "0.0"],
        # ... and three on a pool of two threads: two run, one waits.
        ["aiothreads_pool_threads crunch/busy", "4.0"],
        ["aiothreads_pool_threads crunch/idle", "0.0"],
        ["aiothreads_pool_queued crunch", "2.0"],
        ["aiothreads_pool_threads_max crunch", "4.0"],
    ]
    assert quiet == [
        # After the burst every thread is idle and nothing waits.
        ["aiothreads_pool_threads default/busy", "0.0"],
        ["aiothreads_pool_threads default/idle", str(threads["quiet"])],
        ["aiothreads_pool_queued default", "0.0"],
        ["aiothreads_pool_threads crunch/busy", "0.0"],
        ["aiothreads_pool_threads crunch/idle", "4.0"],
        ["aiothreads_pool_queued crunch", "0.0"],
        ["aiothreads_pool_threads_max crunch", "4.0"],
    ]


def printed_in_multiprocess_mode(tmp_path: Path, source: str) -> list[str]:
    """Run ``source`` alone in multiprocess mode; return the words it printed."""
    return output_in_multiprocess_mode(tmp_path, source).split()


SKIPPED_SCRIPT = """
import asyncio, threading
from concurrent.futures import ThreadPoolExecutor
import aiothreads
from prometheus_client import CollectorRegistry, multiprocess

release = threading.Event()

@aiothreads.threaded
def hold():
    release.wait(10)

@aiothreads.threaded
def never():
    raise AssertionError("must not run")

async def main():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    blocker, queued = hold(), never()
    queued.cancel()  # ends before a thread picked it up
    release.set()
    await blocker
    await loop.run_in_executor(None, lambda: None)  # the queue drained

asyncio.run(main())
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
labels = {"function": "__main__.never", "kind": "threaded"}
cancelled = {**labels, "outcome": "cancelled"}
print(registry.get_sample_value("aiothreads_calls_queued", labels))
print(registry.get_sample_value("aiothreads_calls_finished_total", cancelled))
"""


def test_a_call_cancelled_before_it_ran_is_no_longer_queued_in_multiprocess_mode(
    tmp_path: Path,
) -> None:
    printed = printed_in_multiprocess_mode(tmp_path, SKIPPED_SCRIPT)
    assert printed == ["0.0", "1.0"]


DEPTH_SCRIPT = """
import asyncio, itertools, threading
import aiothreads
from prometheus_client import CollectorRegistry, multiprocess

filled, produced = threading.Event(), threading.Event()

@aiothreads.threaded_iterable(max_size=4)
def held():
    for number in itertools.count():
        yield number
        if number == 4:
            filled.set()  # items 1 to 4 fill the channel: the producer blocks next

@aiothreads.threaded_iterable(max_size=8)
def short():
    yield 0
    yield 1
    yield 2
    produced.set()  # items 1 and 2 wait for the consumer as the generator ends

async def main():
    loop = asyncio.get_running_loop()
    full = held()
    assert await full.__anext__() == 0
    assert await loop.run_in_executor(None, filled.wait, 10)
    items = short()
    assert await items.__anext__() == 0
    assert await loop.run_in_executor(None, produced.wait, 10)
    assert [item async for item in items] == [1, 2]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    labels = {"function": "__main__.short", "kind": "iterable"}
    print(registry.get_sample_value("aiothreads_channel_depth", labels))
    await full.aclose()
    await full.wait_closed()

asyncio.run(main())
"""


def test_in_multiprocess_mode_channel_depth_is_zero_once_the_iterator_ended_beside_a_full_one(
    tmp_path: Path,
) -> None:
    printed = printed_in_multiprocess_mode(tmp_path, DEPTH_SCRIPT)
    # Neither the items it left buffered as it ended, nor those of the other function's
    # channel, which stays full meanwhile.
    assert printed == ["0.0"]


BUCKETS_SCRIPT = """
import asyncio, json
import aiothreads
from prometheus_client import CollectorRegistry, multiprocess

@aiothreads.threaded(limit=1)
def limited():
    return 1

assert asyncio.run(limited()) == 1
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)

def bounds(histogram):
    return sorted(
        {
            sample.labels["le"]
            for family in registry.collect()
            for sample in family.samples
            if sample.name == histogram + "_bucket"
            and sample.labels["function"] == "__main__.limited"
        },
        key=float,
    )

print(json.dumps([bounds(name) for name in (
    "aiothreads_call_duration_seconds",
    "aiothreads_call_wait_seconds",
    "aiothreads_limit_wait_seconds",
)]))
"""


def test_in_multiprocess_mode_the_limit_wait_has_the_buckets_of_the_other_durations(
    tmp_path: Path,
) -> None:
    """Waits for a place, for a thread, and runs are counted against the same bounds."""
    duration, wait, limit_wait = json.loads(output_in_multiprocess_mode(tmp_path, BUCKETS_SCRIPT))
    assert "0.0001" in duration  # aiothreads' own buckets, not prometheus-client's default
    assert wait == duration
    assert limit_wait == duration


FOREIGN_POOL_SCRIPT = """
import asyncio, json
from concurrent.futures import Executor, Future
import aiothreads
from prometheus_client import CollectorRegistry, multiprocess

class Inline(Executor):
    \"\"\"Runs each call as it is submitted: a pool whose threads and queue nobody can read.\"\"\"

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future

aiothreads.runs_in_threads(Inline)

@aiothreads.threaded(executor=Inline())
def inline():
    return 1

assert asyncio.run(inline()) == 1
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
print(json.dumps(sorted(
    sample.name + " " + ",".join(sorted(sample.labels.values()))
    for family in registry.collect()
    for sample in family.samples
    if sample.name.startswith("aiothreads_pool") and sample.labels.get("pool") == "Inline"
)))
"""


def test_in_multiprocess_mode_a_pool_whose_numbers_are_unknown_exports_only_its_refusals(
    tmp_path: Path,
) -> None:
    """Threads, maximum and queue are left out, not shown as 0: nothing is known of them."""
    exported = json.loads(output_in_multiprocess_mode(tmp_path, FOREIGN_POOL_SCRIPT))
    assert exported == [
        "aiothreads_pool_refused_total Inline,dropped",
        "aiothreads_pool_refused_total Inline,rejected",
        "aiothreads_pool_refused_total Inline,shut_down",
    ]


DEPTHS_SCRIPT = """
import asyncio, threading
import aiothreads
from prometheus_client import CollectorRegistry, multiprocess

@aiothreads.threaded_iterable(max_size=4)
def numbers(filled, stop):
    for number in range(stop):
        yield number
        if number == 4:
            filled.set()  # items 1 to 4 fill the channel: the producer blocks next

async def main():
    loop = asyncio.get_running_loop()
    fills = [threading.Event(), threading.Event()]
    full = [numbers(filled, 1_000_000) for filled in fills]
    for iterator, filled in zip(full, fills):
        assert await iterator.__anext__() == 0
        assert await loop.run_in_executor(None, filled.wait, 10)
    single = numbers(threading.Event(), 1)
    assert [item async for item in single] == [0]
    await single.wait_closed()  # its end writes the depth of the function's open channels
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    labels = {"function": "__main__.numbers", "kind": "iterable"}
    print(registry.get_sample_value("aiothreads_channel_depth", labels))
    for iterator in full:
        await iterator.aclose()
        await iterator.wait_closed()

asyncio.run(main())
"""


def test_in_multiprocess_mode_channel_depth_adds_up_the_open_channels_of_a_function(
    tmp_path: Path,
) -> None:
    """Two iterators of one function hold four items each: the process buffers eight."""
    printed = printed_in_multiprocess_mode(tmp_path, DEPTHS_SCRIPT)
    assert printed == ["8.0"]


BUSY_AMONG_IDLE_SCRIPT = """
import asyncio, threading
from concurrent.futures import ThreadPoolExecutor
import aiothreads
from aiothreads import _pool_state

gate = threading.Event()
busy = ThreadPoolExecutor(1, thread_name_prefix="busy")
idle = [ThreadPoolExecutor(1, thread_name_prefix=f"idle-{number}") for number in range(8)]

def one():
    return 1

@aiothreads.threaded(executor=busy)
def held(entered):
    entered.set()
    gate.wait(60)

async def main():
    for pool in idle:  # watched, and idle from then on
        assert await aiothreads.threaded(executor=pool)(one)() == 1
    entered = threading.Event()
    call = asyncio.ensure_future(held(entered))
    assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
    publisher = _pool_state._observer.publisher
    # No call comes or goes from here on: only the busy worker keeps the writer writing.
    print(publisher.wait_for(after=publisher.writes + 3, timeout=30))
    gate.set()
    await call
    for pool in (busy, *idle):
        pool.shutdown()

asyncio.run(main())
"""


def test_in_multiprocess_mode_one_busy_pool_among_idle_ones_keeps_the_pools_written(
    tmp_path: Path,
) -> None:
    """The writer follows the pools while any of them has a busy worker, whichever it is."""
    # One hash seed: every run walks the pools' names in the same order.
    printed = output_in_multiprocess_mode(
        tmp_path, BUSY_AMONG_IDLE_SCRIPT, environment={"PYTHONHASHSEED": "0"}
    )
    assert printed.split() == ["True"]
