"""A demo service that exercises every aiothreads feature and serves its metrics.

Run it with ``python -m aiothreads.demo`` (needs ``pip install 'aiothreads[prometheus]'``)
and point Prometheus at ``http://127.0.0.1:9464/metrics``; the dashboard in
``grafana/`` shows what it does. It stops on Ctrl-C (or SIGTERM), or after
``--duration`` seconds. It serves on 127.0.0.1 unless ``--host`` says otherwise:
``/debug/threads`` shows where its code is, which is not for the public.

The workload is an imaginary order service:

* ``load_customer`` -- pooled blocking calls of varying latency, a few of which
  (3%; a quarter under ``--overload``) fail, in bursts that sometimes saturate
  the pool;
* ``enrich_order`` -- pooled calls that call back into the loop with ``sync_await``;
* ``render_invoice`` -- pooled calls limited to three at once (``limit=3``);
* ``tail_audit_log`` -- long calls on dedicated threads;
* ``scan_orders`` -- a paginated generator with backpressure, consumed slowly,
  left early (``break``), closed, cancelled, dropped, or failing;
* ``watch_inventory`` -- a generator on a dedicated thread that runs until it
  is cancelled;
* ``export_report`` -- under ``--overload`` only, a call on a dedicated thread
  that hangs well past the slow-call threshold now and then;
* ``checksum_orders`` -- CPU-heavy calls, in batches of four, on the executor
  ``--executor`` names: ``threads`` (the default pool), ``processes`` (a
  process pool) or ``dask`` (a local dask.distributed cluster, with
  ``pip install 'aiothreads[dask]'``). Their work leaves the process; the
  metrics, ``/debug/threads`` and the traces still show it.

With ``OTEL_TRACES_EXPORTER`` set (``console``, or ``otlp`` with
``OTEL_EXPORTER_OTLP_ENDPOINT``) it also exports traces, configured by
OpenTelemetry's standard environment variables (``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``); look-ups
and enrichments then have a child span, ``db.query``, made in their thread.

``--overload`` runs the same service hot enough to trip every alert rule
shipped in ``grafana/alerts.yml``. The slow-call watchdog is on (5 seconds,
or ``--slow-call-threshold``, or ``AIOTHREADS_SLOW_CALL_THRESHOLD``), and
``/debug/threads`` beside ``/metrics`` shows what runs in threads now: a page
that refreshes itself in a browser, JSON for ``Accept: application/json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import json
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

try:
    import prometheus_client
except ImportError as missing:  # pragma: no cover - depends on the install
    raise SystemExit(
        "the demo serves Prometheus metrics: pip install 'aiothreads[prometheus]'"
    ) from missing

from aiothreads import (
    instrumentation,
    snapshot,
    sync_await,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
)
from aiothreads.demo._http import METRICS_PATH, THREADS_PATH, Endpoint
from aiothreads.demo._remote_work import EXECUTORS, checksum_orders, start_executor
from aiothreads.demo._tracing import set_up_tracing
from aiothreads.instrumentation._config import threshold_from_environment

_trace: Any
try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - depends on the install
    _trace = None

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from concurrent.futures import Executor

__all__ = ["main"]


class CustomerNotFound(Exception):
    """The imaginary database has no such customer."""


@dataclass
class Settings:
    """How hard the demo works."""

    overload: bool = False
    burst: int = 20
    separate_threads: int = 3
    stream_consumers: int = 1
    slow_consumer_delay: float = 0.01
    customer_failure_ratio: float = 0.03
    """How often the imaginary database fails a customer look-up."""
    scan_failure_every: int = 20
    """One scan in this many rounds of stream endings fails (``1``: every round)."""
    hang_every: float | None = None
    """Seconds between exports that hang past the slow-call threshold (``None``: never)."""

    @classmethod
    def for_mode(cls, overload: bool) -> Settings:
        """Return the normal settings, or ones that trip every alert."""
        if overload:
            return cls(
                overload=True,
                burst=400,
                separate_threads=60,
                stream_consumers=24,
                customer_failure_ratio=0.25,
                scan_failure_every=1,
                hang_every=20.0,
            )
        return cls()


@dataclass
class Progress:
    """Counts what the demo did, for the terminal status line."""

    calls: int = 0
    errors: int = 0
    items: int = 0
    streams: int = 0
    started: float = field(default_factory=time.monotonic)


def _span(name: str) -> contextlib.AbstractContextManager[object]:
    """Return a span made in the calling thread, when OpenTelemetry is installed."""
    if _trace is None:
        return contextlib.nullcontext()
    span: contextlib.AbstractContextManager[object] = _trace.get_tracer(
        "aiothreads.demo"
    ).start_as_current_span(name)
    return span


@threaded
def load_customer(customer_id: int, failure_ratio: float = 0.03) -> dict[str, Any]:
    """Pretend to query a database: blocks for 2-40 ms, fails ``failure_ratio`` of the time."""
    with _span("db.query"):  # a child of this call's span: the thread runs in its context
        time.sleep(random.uniform(0.002, 0.04))
        if random.random() < failure_ratio:
            raise CustomerNotFound(customer_id)
    return {"id": customer_id, "tier": random.choice(["gold", "silver"])}


async def price_for(tier: str) -> float:
    """Look a price up asynchronously; the threads call back into this."""
    await asyncio.sleep(0.001)
    return 10.0 if tier == "gold" else 12.5


@threaded
def enrich_order(order_id: int, tier: str) -> dict[str, Any]:
    """Blocking work that needs an async service: calls back with ``sync_await``."""
    with _span("db.query"):  # reading the order, in this thread
        time.sleep(0.002)
    return {"order": order_id, "price": sync_await(price_for, tier)}


@threaded(limit=3)
def render_invoice(order_id: int) -> bytes:
    """Render a PDF: CPU-heavy, so at most three at once (``limit=3``)."""
    time.sleep(random.uniform(0.005, 0.02))
    return f"invoice {order_id}".encode()


@threaded_separate
def tail_audit_log(seconds: float) -> int:
    """Read a log for ``seconds``: long blocking work that must not hold a pool worker."""
    deadline = time.monotonic() + seconds
    lines = 0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        lines += 1
    return lines


@threaded_iterable(max_size=16)
def scan_orders(pages: int, fail_at: int | None = None) -> Generator[dict[str, int], None, None]:
    """Page through orders; the consumer is slower, so backpressure kicks in."""
    for page in range(pages):
        time.sleep(0.002)  # fetching a page
        for row in range(20):
            if fail_at is not None and page * 20 + row == fail_at:
                raise ConnectionError("the database went away")
            yield {"page": page, "row": row}


scan_orders_separate = threaded_iterable_separate(scan_orders.func, max_size=16)
"""The same scan on dedicated threads: under overload the pool is saturated."""


@threaded_iterable_separate(max_size=4)
def watch_inventory() -> Generator[int, None, None]:
    """Feed inventory levels forever from a dedicated thread."""
    level = 100
    while True:
        time.sleep(0.02)
        level += random.randint(-3, 3)
        yield level


@threaded_separate
def export_report(hang_for: float, stop: threading.Event) -> bool:
    """Wait on a remote service that stopped answering, for ``hang_for`` seconds.

    Returns whether the demo stopped meanwhile.
    """
    return stop.wait(hang_for)  # where the watchdog's stack points


class Demo:
    """Runs the workloads until stopped; CPU-heavy calls go to ``executor`` (default: the pool)."""

    def __init__(
        self,
        settings: Settings,
        slow_call_threshold: float = 5.0,
        executor: Executor | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.slow_call_threshold = slow_call_threshold
        self.progress = Progress()
        self.stopping = asyncio.Event() if stopping is None else stopping
        self.stop_hanging = threading.Event()
        self.scan = scan_orders_separate if settings.overload else scan_orders
        self.checksum: Callable[[int, int], Awaitable[str]] = threaded(executor=executor)(
            checksum_orders
        )

    async def run(self) -> None:
        """Run every workload until ``stopping`` is set."""
        workers = [
            self._calls(),
            self._enrichment(),
            self._invoices(),
            self._inventory(),
            self._checksums(),
        ]
        if self.settings.hang_every is not None:
            workers.append(self._hanging_exports(self.settings.hang_every))
        workers += [self._separate_thread() for _ in range(self.settings.separate_threads)]
        workers += [self._streams() for _ in range(self.settings.stream_consumers)]
        tasks = [asyncio.create_task(worker) for worker in workers]
        try:
            await self.stopping.wait()
        finally:  # also when this task is cancelled: no workload outlives it
            self.stop_hanging.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _calls(self) -> None:
        while not self.stopping.is_set():
            failure_ratio = self.settings.customer_failure_ratio
            burst = [
                load_customer(random.randint(1, 10_000), failure_ratio)
                for _ in range(self.settings.burst)
            ]
            for outcome in await asyncio.gather(*burst, return_exceptions=True):
                self.progress.calls += 1
                if isinstance(outcome, Exception):
                    self.progress.errors += 1
            await self._pause(0.0 if self.settings.overload else 0.2)

    async def _hanging_exports(self, every: float) -> None:
        """Now and then, a call that hangs until the watchdog reports it."""
        while not self.stopping.is_set():
            await export_report(2.5 * self.slow_call_threshold, self.stop_hanging)
            self.progress.calls += 1
            await self._pause(every)

    async def _enrichment(self) -> None:
        order = 0
        while not self.stopping.is_set():
            order += 1
            await enrich_order(order, random.choice(["gold", "silver"]))
            self.progress.calls += 1
            await self._pause(0.05)

    async def _invoices(self) -> None:
        order = 0
        while not self.stopping.is_set():
            batch = [render_invoice(order + offset) for offset in range(10)]
            order += 10
            await asyncio.gather(*batch)
            self.progress.calls += len(batch)
            await self._pause(0.2)

    async def _checksums(self) -> None:
        while not self.stopping.is_set():
            batch = [self.checksum(random.randint(50, 200), 20) for _ in range(4)]
            await asyncio.gather(*batch)
            self.progress.calls += len(batch)
            await self._pause(0.1 if self.settings.overload else 0.5)

    async def _separate_thread(self) -> None:
        while not self.stopping.is_set():
            await tail_audit_log(random.uniform(0.5, 2.0))
            self.progress.calls += 1

    async def _streams(self) -> None:
        """Consume scans in every way that can stop a generator."""
        endings = ["exhaust", "break", "close", "cancel", "drop", "fail"]
        rounds = 0
        while not self.stopping.is_set():
            rounds += 1
            for ending in endings:
                if ending == "fail" and rounds % self.settings.scan_failure_every:
                    continue
                await getattr(self, f"_scan_{ending}")()
                self.progress.streams += 1
            await self._pause(0.1)

    async def _consume(self, items: Any, limit: int | None = None) -> None:
        taken = 0
        async for _ in items:
            taken += 1
            self.progress.items += 1
            await asyncio.sleep(self.settings.slow_consumer_delay)
            if limit is not None and taken >= limit:
                break

    async def _scan_exhaust(self) -> None:
        # Short scans stay on the pool even under overload, so both kinds show.
        await self._consume(scan_orders(2))

    async def _scan_break(self) -> None:
        await self._consume(self.scan(50), limit=random.randint(5, 30))

    async def _scan_close(self) -> None:
        async with self.scan(50) as rows:
            await self._consume(rows, limit=3)

    async def _scan_cancel(self) -> None:
        task = asyncio.create_task(self._consume(self.scan(50)))
        await self._pause(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _scan_drop(self) -> None:
        rows = self.scan(50)
        await rows.__anext__()
        self.progress.items += 1
        del rows
        gc.collect()

    async def _scan_fail(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._consume(self.scan(5, fail_at=random.randint(1, 60)))

    async def _inventory(self) -> None:
        """Keep one long-lived stream open, restarting it now and then."""
        while not self.stopping.is_set():
            async with watch_inventory() as levels:
                deadline = time.monotonic() + 5
                async for _ in levels:
                    self.progress.items += 1
                    await asyncio.sleep(0.05)  # slower than the feed: it stays full
                    if time.monotonic() > deadline or self.stopping.is_set():
                        break


def _status(progress: Progress) -> str:
    elapsed = time.monotonic() - progress.started
    threads = threading.active_count()
    return (
        f"{elapsed:6.1f}s  calls {progress.calls:7d}  errors {progress.errors:5d}  "
        f"items {progress.items:8d}  streams {progress.streams:5d}  threads {threads:3d}"
    )


async def _report(demo: Demo, interactive: bool) -> None:
    while not demo.stopping.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(demo.stopping.wait(), 1.0 if interactive else 5.0)
        line = _status(demo.progress)
        if interactive:
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)


async def serve(
    host: str,
    port: int,
    duration: float | None,
    settings: Settings,
    *,
    slow_call_threshold: float | None = None,
    executor: str = "threads",
) -> Progress:
    """Serve metrics on ``host:port`` and run the demo until stopped; return its progress.

    The slow-call watchdog uses ``slow_call_threshold`` seconds, else what
    ``AIOTHREADS_SLOW_CALL_THRESHOLD`` says, else 5. CPU-heavy calls run on
    ``executor`` (one of ``EXECUTORS``). SIGINT and SIGTERM stop it from
    before the banner is printed on, and a second one while it stops changes
    nothing: it waits for the work in its threads, then returns.

    Raises:
        SystemExit: ``host:port`` cannot be served, the traces the
            environment asks for cannot be exported, or the executor cannot
            be started (a one-line message).
    """
    if slow_call_threshold is None:
        slow_call_threshold = threshold_from_environment() or 5.0
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(signum, stopping.set)
    stop_tracing = set_up_tracing()
    tracing = stop_tracing is not None
    with contextlib.ExitStack() as stack:
        if stop_tracing is not None:
            stack.callback(stop_tracing)  # exports every span still queued
        metrics_app = prometheus_client.make_wsgi_app()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType] - untyped WSGI app
        try:
            endpoint = Endpoint(host, port, metrics_app, slow_after=slow_call_threshold)  # pyright: ignore[reportUnknownArgumentType]
        except OSError as error:
            raise SystemExit(_cannot_serve(host, port, error)) from None
        stack.callback(endpoint.close)
        if executor != "threads":
            print(f"aiothreads demo: starting {executor} for the CPU-heavy calls ...", flush=True)
        pool, stop_pool, described = await _in_a_thread(start_executor, executor, tracing)
        stack.callback(stop_pool)
        if stopping.is_set():  # stopped while the executor started
            return Progress()
        demo = Demo(settings, slow_call_threshold, pool, stopping)
        url = f"http://{host}:{endpoint.port}"
        return await _run_demo(demo, url, duration, executor=described, tracing=tracing)
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


async def _in_a_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run blocking set-up in a thread of its own, so signals are still handled meanwhile."""
    return await threaded_separate(function)(*args)


async def _run_demo(
    demo: Demo, url: str, duration: float | None, *, executor: str, tracing: bool
) -> Progress:
    """Configure the instrumentation, print the banner and run ``demo`` until it stops."""
    loop = asyncio.get_running_loop()
    instrumentation.configure(prometheus=True, slow_call_threshold=demo.slow_call_threshold)
    print(_banner(url, tracing), flush=True)
    print(f"  CPU-heavy calls run on {executor}", flush=True)
    if duration is not None:
        loop.call_later(duration, demo.stopping.set)
    reporter = asyncio.create_task(_report(demo, sys.stdout.isatty()))
    try:
        await demo.run()
    finally:
        demo.stopping.set()  # when cancelled instead, the reporter must end too
        await reporter
        await _drain()
        print(f"\nstopped: {_status(demo.progress)}", flush=True)
        print(f"calls finished: {json.dumps(_finished_calls())}", flush=True)
        instrumentation.reset()  # stops the watchdog, whatever the environment says
    return demo.progress


async def _drain(patience: float = 15.0) -> None:
    """Wait for the work the demo gave up on to end in its threads (a while at most).

    Dedicated threads are joined; the pool is shut down, which waits for its
    running calls. So the counts printed next, and the spans, are final.
    """
    running = {work.thread_id for work in snapshot() if work.kind.endswith("separate")}
    dedicated = [thread for thread in threading.enumerate() if thread.ident in running]

    def join() -> None:
        deadline = time.monotonic() + patience
        for thread in dedicated:
            thread.join(max(0.0, deadline - time.monotonic()))

    with ThreadPoolExecutor(1, thread_name_prefix="demo-drain") as joiner:
        await asyncio.get_running_loop().run_in_executor(joiner, join)
    await asyncio.get_running_loop().shutdown_default_executor()
    left = snapshot()
    if left:
        print(f"\nstill running after {patience} s: {left}", flush=True)


def _finished_calls() -> dict[str, float]:
    """Count the calls (and iterators) that ended, per ``kind function``: a span each."""
    finished: dict[str, float] = {}
    for family in prometheus_client.REGISTRY.collect():
        if family.name != "aiothreads_calls_finished":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = f"{sample.labels['kind']} {sample.labels['function']}"
                finished[key] = finished.get(key, 0.0) + sample.value
    return finished


def _banner(base_url: str, tracing: bool) -> str:
    """Return what the demo prints once it serves: where to look, and how to see more."""
    return "\n".join(
        [
            f"aiothreads demo: metrics on {base_url}{METRICS_PATH}, threads on "
            f"{base_url}{THREADS_PATH} (Ctrl-C stops)",
            *_next_steps(f"{base_url}{METRICS_PATH}", tracing),
        ]
    )


def _next_steps(metrics_url: str, tracing: bool) -> list[str]:
    """Say how to see the dashboard and the traces (``tracing``: they are exported now)."""
    if tracing:
        traces = ["  traces: exported as OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_* say"]
    else:
        traces = [
            "  traces: pip install opentelemetry-sdk and run it with OTEL_TRACES_EXPORTER=console;",
            "    for OTLP, also pip install opentelemetry-exporter-otlp-proto-http and set",
            "    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318",
        ]
    return [
        f"  dashboard: have Prometheus scrape {metrics_url} and import",
        "    grafana/aiothreads.json into Grafana; or, from a clone, with Debian's prometheus:",
        "    python grafana/preview.py --output dashboard.png (runs its own demo for a minute)",
        *traces,
    ]


def _cannot_serve(host: str, port: int, error: OSError) -> str:
    """Say in one line why ``host:port`` cannot be served, and which option to change."""
    if error.errno in {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)}:
        return (
            f"aiothreads demo: port {port} on {host} is in use (another demo?): "
            "choose another with --port (--port 0 picks a free one)"
        )
    reason = error.strerror or str(error)
    return f"aiothreads demo: cannot serve on {host}:{port} ({reason}): check --host and --port"


def _plain(text: str) -> str:
    """Return a docstring as ``--help`` shows it: without the double backticks around code."""
    return text.replace("``", "")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the demo."""
    parser = argparse.ArgumentParser(
        prog="python -m aiothreads.demo",
        description=_plain(__doc__ or ""),
        epilog="\n".join(_next_steps(f"http://127.0.0.1:9464{METRICS_PATH}", tracing=False)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1: keep /debug/threads private)",
    )
    parser.add_argument(
        "--port", type=int, default=9464, help="port to serve on (default 9464; 0: a free one)"
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    parser.add_argument("--overload", action="store_true", help="trip every alert rule")
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="threads",
        help="where the CPU-heavy calls run (default threads; dask needs aiothreads[dask])",
    )
    parser.add_argument(
        "--slow-call-threshold",
        type=float,
        default=None,
        help="seconds after which the watchdog reports a call (default 5)",
    )
    arguments = parser.parse_args(argv)
    if not 0 <= arguments.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if arguments.duration is not None and arguments.duration <= 0:
        parser.error("--duration must be positive")
    threshold = arguments.slow_call_threshold
    if threshold is not None and not threshold > 0:
        parser.error("--slow-call-threshold must be positive")
    settings = Settings.for_mode(arguments.overload)
    try:
        asyncio.run(
            serve(
                arguments.host,
                arguments.port,
                arguments.duration,
                settings,
                slow_call_threshold=threshold,
                executor=arguments.executor,
            )
        )
    except KeyboardInterrupt:  # only before serve() took SIGINT over: nothing ran yet
        raise SystemExit(130) from None
