"""The demo behaves like a service: its paths, its page of threads, its start and its stop.

Each test that runs ``python -m aiothreads.demo`` does so in a subprocess on a
free port of 127.0.0.1 (``--port 0``) and waits for what it prints, never for
a fixed time. The page of ``/debug/threads`` is also loaded in headless
Chromium, from a small service that serves it with a call stuck in a thread;
without Chromium that test is skipped, and under ``CI`` it fails instead.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from aiothreads.demo._http import threads_page, wants_html
from aiothreads.demo._remote_work import start_executor

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="signals and select() on pipes are POSIX"
)

ROOT = Path(__file__).resolve().parents[1]
BANNER = re.compile(r"^aiothreads demo: metrics on http://127\.0\.0\.1:(\d+)/metrics")
"""The first line the demo prints once it serves, on 127.0.0.1 unless told otherwise."""
START_GUARD = 30.0
"""Seconds after which a demo that printed no banner counts as hung."""
STOP_GUARD = 30.0
"""Seconds after which a demo that was asked to stop counts as hung."""
CHROMIUM_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
needs_prometheus = pytest.mark.skipif(
    importlib.util.find_spec("prometheus_client") is None,
    reason="the demo serves Prometheus metrics: pip install 'aiothreads[prometheus]'",
)


@dataclass
class Output:
    """A subprocess's standard output, read line by line against a deadline."""

    stream: IO[bytes]
    lines: list[str] = field(default_factory=list)
    pending: bytes = b""

    def until(self, pattern: re.Pattern[str], seconds: float) -> re.Match[str] | None:
        """Read until a line matches ``pattern``; ``None`` at its end or after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                self.lines.append(line.decode(errors="replace"))
                found = pattern.search(self.lines[-1])
                if found:
                    return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if select.select([self.stream], [], [], remaining)[0]:
                chunk = os.read(self.stream.fileno(), 65536)
                if not chunk:
                    return None
                self.pending += chunk


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    output: Output
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, how: signal.Signals = signal.SIGTERM, times: int = 1) -> tuple[str, str]:
        """Send ``how`` ``times`` over, wait for the exit and return its stdout and stderr."""
        for _ in range(times):
            self.process.send_signal(how)
        try:
            rest, errors = self.process.communicate(timeout=STOP_GUARD)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, errors = self.process.communicate()
            pytest.fail(f"the demo did not stop on {how.name}: {errors.decode()[-2000:]}")
        return "\n".join([*self.output.lines, rest.decode()]), errors.decode()


def demo_environment() -> dict[str, str]:
    """This environment, less what would make the demo export traces."""
    return {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}


def start_demo(*arguments: str, own_group: bool = False) -> Demo:
    """Start the demo on a free port and return it once its banner is printed.

    With ``own_group``, it leads a process group of its own, as a shell's
    foreground job does, which a terminal's Ctrl-C signals whole.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "aiothreads.demo", "--port", "0", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=demo_environment(),
        start_new_session=own_group,
    )
    assert process.stdout is not None
    output = Output(process.stdout)
    banner = output.until(BANNER, START_GUARD)
    if banner is None:
        process.kill()
        _, errors = process.communicate()
        pytest.fail(f"no banner; it printed {output.lines} and {errors.decode()[-2000:]}")
    return Demo(process, output, int(banner[1]))


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    running = start_demo()
    try:
        yield running
    finally:
        running.stop()  # a signal only if it still runs; its pipes are closed either way


def get(url: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """Return the status, headers and body of a GET, whatever the status."""
    request = urllib.request.Request(url, headers={} if accept is None else {"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@needs_prometheus
@pytest.mark.parametrize(
    "path", ["/nonexistent", "/healthz", "/debug/threads/", "/metrics/", "/debug"]
)
def test_unknown_paths_answer_404(demo: Demo, path: str) -> None:
    status, _, body = get(demo.url + path)
    assert status == 404
    assert b"/metrics" in body
    assert b"aiothreads_" not in body  # not the metrics, as every path used to answer


@needs_prometheus
def test_metrics_and_an_index_of_the_paths_are_served(demo: Demo) -> None:
    status, headers, body = get(demo.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"aiothreads_calls_finished_total" in body
    status, headers, body = get(demo.url + "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'href="/metrics"' in body
    assert b'href="/debug/threads"' in body


@needs_prometheus
@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/json, text/html;q=0.5"]
)
def test_debug_threads_answers_json_to_programs(demo: Demo, accept: str | None) -> None:
    status, headers, body = get(demo.url + "/debug/threads", accept)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Vary"] == "Accept"
    document = json.loads(body)
    assert isinstance(document["taken_at"], float)
    for work in document["running"]:
        assert {"function", "kind", "thread_name", "running_for", "trace_id"} <= set(work)
        assert all(isinstance(frame, str) for frame in work["stack"])


@needs_prometheus
@pytest.mark.parametrize("accept", [CHROMIUM_ACCEPT, "text/html"])
def test_debug_threads_answers_a_page_to_browsers(demo: Demo, accept: str) -> None:
    status, headers, body = get(demo.url + "/debug/threads", accept)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Vary"] == "Accept"
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    page = body.decode()
    assert "<title>aiothreads demo: threads</title>" in page
    assert "running in threads at" in page
    for heading in ("Function", "Kind", "Thread", "Running for", "Awaiting task", "Top frame"):
        assert f"<th>{heading}</th>" in page or "Nothing runs in threads now" in page


@needs_prometheus
@pytest.mark.parametrize("path", ["/", "/debug/threads", "/nonexistent"])
def test_a_head_request_gets_the_headers_and_no_body(demo: Demo, path: str) -> None:
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as connection:
        connection.sendall(f"HEAD {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        reply = b""
        while chunk := connection.recv(65536):  # HTTP/1.0: the server closes when done
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].split()[1] in {b"200", b"404"}
    assert b"Content-Length: " in head
    assert body == b""


@needs_prometheus
def test_the_status_line_shows_each_count_under_its_own_name() -> None:
    from aiothreads.demo import Progress, _status

    line = _status(Progress(calls=1, errors=2, items=3, streams=4))
    counts = dict(re.findall(r"([a-z]+) +(\d+)", line))
    assert {name: counts[name] for name in ("calls", "errors", "items", "streams")} == {
        "calls": "1",
        "errors": "2",
        "items": "3",
        "streams": "4",
    }


@needs_prometheus
def test_a_second_demo_on_the_same_port_says_so_in_one_line(demo: Demo) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "aiothreads.demo", "--port", str(demo.port)],
        capture_output=True,
        text=True,
        timeout=START_GUARD,
        cwd=ROOT,
        env=demo_environment(),
        check=False,
    )
    assert second.returncode != 0
    assert "Traceback" not in second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert "--port" in line
    assert str(demo.port) in line
    assert "in use" in line
    assert not BANNER.search(second.stdout)


@needs_prometheus
@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_right_after_the_banner_stops_it_cleanly(
    how: signal.Signals, attempt: int
) -> None:
    started = start_demo()
    output, errors = started.stop(how)  # at once: the banner promises the handlers are in place
    assert started.process.returncode == 0, errors
    assert "Traceback" not in errors
    assert "stopped:" in output
    assert "calls finished: " in output


def skip_unless_installed(executor: str) -> None:
    """Skip the test if ``--executor`` names an engine that is not installed here."""
    if executor == "dask" and importlib.util.find_spec("distributed") is None:
        pytest.skip("--executor dask needs aiothreads[dask]")


@needs_prometheus
@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_ctrl_c_in_a_terminal_stops_the_demo_and_its_workers_quietly(executor: str) -> None:
    """Ctrl-C signals the demo's whole process group, its worker processes too."""
    skip_unless_installed(executor)
    started = start_demo("--executor", executor, own_group=True)
    try:
        assert started.output.until(re.compile("CPU-heavy calls run on "), 60) is not None
        assert started.output.until(re.compile(r"^ +\d+\.\ds +calls"), 30) is not None
        _, _, metrics = get(f"{started.url}/metrics")  # 5 s on: the workers have run calls
        ran = re.search(
            rb'finished_total\{function="[\w.]+checksum_orders",.*outcome="ok"\} [1-9]', metrics
        )
        assert ran is not None
        os.killpg(started.process.pid, signal.SIGINT)
        output, errors = started.stop(how=signal.SIGINT, times=0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.process.pid, signal.SIGKILL)  # only what is left of it
    assert started.process.returncode == 0, errors
    assert "Traceback" not in errors, errors[-3000:]
    assert "KeyboardInterrupt" not in errors
    assert "calls finished: " in output


@pytest.mark.parametrize("tracing", [False, True], ids=["untraced", "traced"])
def test_the_demos_process_pool_workers_leave_ctrl_c_to_the_demo(
    tracing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker ignores SIGINT from its start, whether it exports traces or not."""
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)  # traced, but exported nowhere
    executor, stop, _ = start_executor("processes", tracing)
    assert executor is not None
    try:
        handler = executor.submit(signal.getsignal, signal.SIGINT).result(START_GUARD)
    finally:
        stop()
    assert handler == signal.SIG_IGN


@needs_prometheus
def test_a_second_signal_while_it_stops_changes_nothing() -> None:
    started = start_demo()
    output, errors = started.stop(signal.SIGINT, times=2)
    assert started.process.returncode == 0, errors
    assert "Traceback" not in errors
    assert "calls finished: " in output


def console_spans(output: str) -> list[dict[str, Any]]:
    """Return the spans OpenTelemetry's console exporter printed, in any process, as JSON."""
    decoder = json.JSONDecoder()
    spans = []
    start = output.find("{\n")
    while start >= 0:
        try:
            span, end = decoder.raw_decode(output, start)
        except ValueError:
            end = start + 1
        else:
            if isinstance(span, dict) and "context" in span:
                spans.append(span)
        start = output.find("{\n", end)
    return spans


needs_sdk = pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.sdk") is None,
    reason="traces need opentelemetry-sdk",
)


@needs_prometheus
@needs_sdk
@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_cpu_work_leaves_the_process_and_its_trace_follows(executor: str) -> None:
    """``--executor``: the checksums run in worker processes, each in its caller's trace."""
    skip_unless_installed(executor)
    arguments = ["--port", "0", "--duration", "3", "--executor", executor]
    process = subprocess.Popen(
        [sys.executable, "-m", "aiothreads.demo", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**demo_environment(), "OTEL_TRACES_EXPORTER": "console"},
    )
    try:
        stdout, stderr = process.communicate(timeout=100)
    finally:
        process.kill()  # only if it did not stop
    assert process.returncode == 0, stderr[-3000:]
    assert "CPU-heavy calls run on a " in stdout
    counts = json.loads(stdout.split("calls finished: ", 1)[1].splitlines()[0])
    function = "aiothreads.demo._remote_work.checksum_orders"
    assert counts[f"threaded {function}"] >= 4
    spans = console_spans(stdout)
    callers = {
        span["context"]["span_id"]: span for span in spans if span["name"] == f"threaded {function}"
    }
    workers = [span for span in spans if span["name"] == f"worker {function}"]
    assert len(callers) == counts[f"threaded {function}"]
    # Calls still queued when the demo stops are cancelled and never reach a
    # worker; every call that ran has the span its worker process exported.
    ran = {key for key, span in callers.items() if span["attributes"]["aiothreads.outcome"] == "ok"}
    assert len(ran) >= 4
    assert ran <= {worker["parent_id"] for worker in workers}
    assert len(workers) == len({worker["parent_id"] for worker in workers})  # one each
    for worker in workers:
        caller = callers[worker["parent_id"]]
        assert worker["context"]["trace_id"] == caller["context"]["trace_id"]
        assert worker["attributes"]["aiothreads.outcome"] == "ok"
    assert process.pid not in {span["attributes"]["process.pid"] for span in workers}


@needs_prometheus
def test_help_is_plain_text() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "aiothreads.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=START_GUARD,
        cwd=ROOT,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "``" not in shown.stdout
    assert "--port" in shown.stdout
    assert "OTEL_TRACES_EXPORTER=console" in shown.stdout


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/*", False),
        ("text/html", True),
        ("text/*", True),
        (CHROMIUM_ACCEPT, True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # Firefox
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.5, application/json;q=0.4", True),
        ("text/html;q=0, */*", False),
        ("TEXT/HTML", True),
    ],
)
def test_the_page_goes_to_whoever_ranks_html_above_json(accept: str, page: bool) -> None:
    assert wants_html(accept) is page


HOSTILE = "<script>alert('x')</script>&amp;"


def hostile_work(**fields: Any) -> dict[str, Any]:
    """A snapshot entry whose every text is markup."""
    return {
        "function": HOSTILE,
        "kind": HOSTILE,
        "thread_name": HOSTILE,
        "thread_id": 1,
        "started": 0.0,
        "running_for": 90.0,
        "items": None,
        "waiting_for_room": None,
        "trace_id": HOSTILE,
        "executor": None,
        "stack": [f"{HOSTILE}:1 in f", f"{HOSTILE}:2 in g"],
        **fields,
    }


def test_the_page_escapes_every_value() -> None:
    task = {"name": HOSTILE, "stack": [f"{HOSTILE}:3 in h"]}
    page = threads_page(
        {"taken_at": 0.0, "running": [hostile_work(awaited_by=[task], waiting_on=task)]}
    )
    assert "<script>alert" not in page
    assert "&amp;amp;" in page
    escaped = html.escape(HOSTILE)
    # function, kind, thread, trace id, two frames (the top one twice), a task twice with its frame
    assert page.count(escaped) == 11


def test_the_page_shows_the_fields_a_snapshot_has_and_a_dash_for_the_others() -> None:
    older = hostile_work()  # a snapshot without awaited_by and waiting_on
    page = threads_page({"taken_at": 0.0, "running": [older]}, slow_after=60)
    assert page.count("<tr") == 2  # the headings and the one call
    assert '<tr class="slow">' in page  # running 90 s, past 60
    assert "1 min 30 s" in page
    assert threads_page({"taken_at": 0.0, "running": []}).count("Nothing runs in threads now") == 1


def chromium() -> str:
    """Return the browser to run, or skip the test (fail it under CI) when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "needs chromium or google-chrome (Debian: apt-get install chromium)"
    if "CI" in os.environ:
        pytest.fail(message)
    pytest.skip(message)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--virtual-time-budget=3000",  # long enough for the page to refresh itself once
    "--dump-dom",
]

STUCK_SERVICE = textwrap.dedent(
    """
    import asyncio
    import sys
    import threading

    from aiothreads import threaded
    from aiothreads.demo import _http as _demo_http
    from aiothreads.demo._http import Endpoint

    started, release = threading.Event(), threading.Event()
    take_snapshot = _demo_http.threads_document


    def counted():
        print("snapshot taken", flush=True)  # the test counts the page's own refreshes
        return take_snapshot()


    _demo_http.threads_document = counted


    @threaded
    def blocking_driver_call(query):
        started.set()
        release.wait()  # the line the page must show


    def no_metrics(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]


    async def handle_request():
        await blocking_driver_call("SELECT secret_argument_value")


    async def main():
        endpoint = Endpoint("127.0.0.1", 0, no_metrics)
        request = asyncio.create_task(handle_request(), name="request-42")
        await asyncio.to_thread(started.wait)
        print(f"serving on {endpoint.port}", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # until the test closes stdin
        release.set()
        await request
        endpoint.close()


    asyncio.run(main())
    """
)


@pytest.mark.timeout(120)
def test_the_page_shows_a_stuck_call_in_a_browser() -> None:
    browser = chromium()
    service = subprocess.Popen(
        [sys.executable, "-c", STUCK_SERVICE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert service.stdout is not None
    try:
        output = Output(service.stdout)
        serving = output.until(re.compile(r"^serving on (\d+)$"), START_GUARD)
        assert serving is not None, "the service never started"
        url = f"http://127.0.0.1:{serving[1]}/debug/threads"
        _, _, body = get(url, "application/json")
        (work,) = json.loads(body)["running"]
        with tempfile.TemporaryDirectory(prefix="aiothreads-chromium-") as profile:
            shown = subprocess.run(
                [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )
    finally:
        try:  # closes its stdin: the service lets the call go and exits
            rest, errors = service.communicate(timeout=STOP_GUARD)
        except subprocess.TimeoutExpired:
            service.kill()
            rest, errors = service.communicate()
    assert service.returncode == 0, errors.decode()
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    assert "Content Security Policy" not in shown.stderr  # its own script and style may run
    taken = (output.pending + rest).decode().splitlines().count("snapshot taken")
    assert taken >= 3, f"the page did not refresh itself: {taken} snapshots (JSON, page, refresh)"
    row = re.search(r"<tr>(.*?)</tr>", dom.split("<tbody>", 1)[1])
    assert row is not None, dom
    assert work["function"].endswith("blocking_driver_call")
    assert work["kind"] == "threaded"
    stuck_at = next(frame for frame in work["stack"] if frame.endswith("in blocking_driver_call"))
    for shown_text in (
        work["function"],
        work["kind"],
        work["thread_name"],
        work["stack"][-1],  # the top frame, in the row
        stuck_at,  # in the stack folded beneath it
        *(task["name"] for task in work.get("awaited_by", [])),
    ):
        assert html.escape(shown_text, quote=False) in row[1], shown_text
    assert "<string>" not in dom  # the script's file name, shown as text, never as markup
    assert "secret_argument_value" not in dom
