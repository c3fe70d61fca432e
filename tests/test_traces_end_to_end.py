"""The demo's traces on the wire: OTLP over HTTP to a receiver this test runs on 127.0.0.1.

The demo is started with OpenTelemetry's standard environment variables
(``OTEL_TRACES_EXPORTER=otlp``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``); the receiver decodes each ``ExportTraceServiceRequest``
with ``opentelemetry-proto``. Once every kind of span has arrived the demo is
sent SIGTERM, and the spans it exported must equal the calls it counted.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "orders-demo"
KINDS = ("threaded", "separate", "iterable", "iterable_separate", "sync_await")
STATUS_ERROR = 2
WAIT = 90.0
"""Seconds the demo gets to show every kind of span (a hang guard: it takes a few)."""


@dataclass
class Span:
    name: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    status: int
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    service: str


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass
class Received:
    """Every span the receiver decoded; ``complete`` is set once every kind arrived."""

    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    complete: threading.Event = field(default_factory=threading.Event)
    requests: int = 0

    def add(self, request: Any) -> None:
        with self.lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            Span(
                                name=span.name,
                                trace_id=span.trace_id,
                                span_id=span.span_id,
                                parent_span_id=span.parent_span_id,
                                status=span.status.code,
                                status_message=span.status.message,
                                attributes=_attributes(span.attributes),
                                events=[(e.name, _attributes(e.attributes)) for e in span.events],
                                service=str(service),
                            )
                        )
            kinds = {span.name.split(" ", 1)[0] for span in self.spans}
            failed = any(
                span.status == STATUS_ERROR and span.name.startswith("threaded ")
                for span in self.spans
            )
            if kinds >= set(KINDS) and failed:
                self.complete.set()


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = trace_service.ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.add(request)
            answer = trace_service.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


@dataclass
class Run:
    spans: list[Span]
    counted: dict[str, float]
    output: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def run() -> Run:
    received = Received()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    serving = threading.Thread(target=receiver.serve_forever, name="otlp-receiver")
    serving.start()
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_SERVICE_NAME": SERVICE,
        "AIOTHREADS_INSTRUMENTATION": "auto",
    }
    env.pop("OTEL_BSP_MAX_QUEUE_SIZE", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "aiothreads.demo", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        arrived = received.complete.wait(WAIT)
        demo.send_signal(signal.SIGTERM)
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
        receiver.shutdown()
        receiver.server_close()
        serving.join()
    assert arrived, f"not every kind of span arrived: {received.requests} requests\n{output}"
    assert demo.returncode == 0, output
    line = next(text for text in output.splitlines() if text.startswith("calls finished: "))
    counted = json.loads(line.removeprefix("calls finished: "))
    return Run(list(received.spans), counted, output)


def test_every_kind_of_call_is_traced(run: Run) -> None:
    kinds = {span.name.split(" ", 1)[0] for span in run.spans}
    assert kinds >= set(KINDS)
    assert {span.service for span in run.spans} == {SERVICE}


def test_spans_exported_equal_the_calls_counted(run: Run) -> None:
    exported = collections.Counter(
        span.name for span in run.spans if span.name.split(" ", 1)[0] in KINDS
    )
    assert dict(exported) == {name: int(count) for name, count in run.counted.items()}


def _by_id(run: Run) -> dict[bytes, Span]:
    return {span.span_id: span for span in run.spans}


def test_spans_made_in_a_threaded_call_are_its_children(run: Run) -> None:
    spans = _by_id(run)
    queries = [span for span in run.spans if span.name == "db.query"]
    assert queries
    for query in queries:
        parent = spans[query.parent_span_id]
        assert parent.name in {
            "threaded aiothreads.demo.load_customer",
            "threaded aiothreads.demo.enrich_order",
        }
        assert parent.trace_id == query.trace_id


def test_a_coroutine_awaited_from_a_thread_is_a_child_of_the_thread_call(run: Run) -> None:
    spans = _by_id(run)
    awaited = [span for span in run.spans if span.name.startswith("sync_await ")]
    assert awaited
    for span in awaited:
        assert spans[span.parent_span_id].name == "threaded aiothreads.demo.enrich_order"


def test_failed_calls_carry_error_status_type_and_exception(run: Run) -> None:
    ours = [span for span in run.spans if span.name.split(" ", 1)[0] in KINDS]
    failed = [span for span in ours if span.status == STATUS_ERROR]
    assert failed
    for span in failed:
        assert span.attributes["error.type"] in {
            "aiothreads.demo.CustomerNotFound",
            "ConnectionError",
        }, span
        assert any(name == "exception" for name, _ in span.events)


def test_iterator_spans_carry_items_and_why_they_stopped(run: Run) -> None:
    iterators = [span for span in run.spans if span.name.startswith("iterable")]
    assert all("aiothreads.items" in span.attributes for span in iterators)
    reasons = {
        attributes.get("reason")
        for span in iterators
        for name, attributes in span.events
        if name == "cancelled"
    }
    assert reasons & {"break", "closed", "cancelled", "collected"}
