"""Executors whose work leaves the process: dask.distributed, loky and the stdlib's process pool.

The engines, shared by the module (every async test runs on asyncio's loop and
on uvloop, see ``conftest.py``):

* ``dask``: a ``LocalCluster`` of two worker processes (one thread each) on
  127.0.0.1 without a dashboard, reached through ``Client.get_executor()``;
* ``loky``: ``loky.get_reusable_executor()`` with one worker;
* ``process_pool``: a ``concurrent.futures.ProcessPoolExecutor`` with one
  spawned worker.

Workers run the functions of ``tests.remote_work`` and tell the test where they
are over sockets, so nothing here waits for a clock. Faults that break an
engine (a worker killed, a cluster closed) get an engine of their own.

Every call is checked against the same books as the thread executors': calls
finished by outcome and spans ended with it, nothing left queued or in flight,
and the ``limit=`` place given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import gzip
import itertools
import multiprocessing
import operator
import os
import pickle
import signal
import socket
import sys
import threading
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

import aiothreads
from aiothreads import (
    CapacityLimiter,
    ExecutorRefused,
    IteratorWrapper,
    _executor,
    instrumentation,
    runs_in_threads,
    threaded,
    threaded_iterable,
)
from aiothreads._pool import WorkerPool
from aiothreads._pool_state import pool_name, pool_states
from aiothreads._remote import (
    Carried,
    _Unpickled,
    carried_call,
    check_picklable,
    runs_elsewhere,
)
from tests import remote_work
from tests.metrics_alone import count_calls_only
from tests.waiting import turns_until

try:  # the engines and the telemetry libraries come with the test extra
    import distributed
    import loky
    import opentelemetry.exporter.otlp.proto.http  # noqa: F401 - the workers export with it
    from opentelemetry import baggage, context, trace
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
    from prometheus_client import CollectorRegistry
except ImportError as missing:  # the core suite, without extras
    pytest.skip(f"needs the test extra ({missing.name})", allow_module_level=True)

T = TypeVar("T")

# loky's own pickling now and then lets a BytesIO be collected while a view of its buffer
# is still alive (BufferError); Python reports it as unraisable, in 3.14's words or in
# those of earlier versions. Nothing of ours holds such a view (aiothreads pickles into a
# sink with no buffer).
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Exception ignored while finalizing file <_io.BytesIO"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <_io.BytesIO:pytest.PytestUnraisableExceptionWarning"
    ),
]

HANG_GUARD = 30.0
"""Seconds any single wait may take. Only a safety net: a test that needs it fails."""

ENGINES = ("process_pool", "loky", "dask")


# -- the engines ---------------------------------------------------------------------------------


def spawned_pool(workers: int = 1, **options: Any) -> ProcessPoolExecutor:
    # spawn: fork is unsafe in a process with threads, and deprecated there from 3.12 on
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), **options)


def local_cluster(workers: int, *, asynchronous: bool = False) -> Any:
    """A cluster of ``workers`` processes; ``asynchronous``: run on the running event loop.

    A cluster and client of a test's own run on its loop: a client that loses its
    scheduler closes without stopping the thread of its own loop (dask/distributed#4072).
    """
    return distributed.LocalCluster(
        asynchronous=asynchronous,
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # The scheduler serves /metrics even without a dashboard, on 8787 unless told
        # otherwise: another cluster (here, or another test run) may hold that port.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )


@dataclass(frozen=True)
class Engine:
    name: str
    executor: Executor
    pickles_by_value: bool
    """Whether it pickles functions by value (cloudpickle), so that a lambda runs there."""
    keeps_the_place_of_cancelled_work: bool
    """Whether a call cancelled while it runs keeps its ``limit=`` place until its worker
    finishes (the engine's future cannot be cancelled once running)."""


@dataclass
class Engines:
    dask_client: Any
    loky: Executor
    process_pool: ProcessPoolExecutor

    def get(self, name: str) -> Engine:
        if name == "dask":
            # pure=False: every call runs (and is traced) on its own; with dask's default,
            # calls with equal arguments share one task and its result.
            return Engine(name, self.dask_client.get_executor(pure=False), True, False)
        if name == "loky":
            return Engine(name, self.loky, True, True)
        return Engine(name, self.process_pool, False, True)


@pytest.fixture(scope="module")
def engines() -> Iterator[Engines]:
    """Every engine, started and warmed up before any test takes its count of threads."""
    with (
        local_cluster(2) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = loky.get_reusable_executor(max_workers=1)
        pool = spawned_pool()
        try:
            for warm in (client.get_executor(pure=False), executor, pool):
                assert warm.submit(remote_work.multiply, 2, 3).result(HANG_GUARD) == 6
            yield Engines(client, executor, pool)
        finally:
            pool.shutdown(wait=True)
            executor.shutdown(wait=True)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, engines: Engines) -> Engine:
    return engines.get(request.param)


# -- the books -----------------------------------------------------------------------------------

GAUGES = ("aiothreads_calls_queued", "aiothreads_calls_in_flight")


def read_metrics(registry: CollectorRegistry) -> Counter[str]:
    totals: Counter[str] = Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "aiothreads_calls_finished_total":
                totals[f"finished {sample.labels['outcome']}"] += int(sample.value)
            elif sample.name in GAUGES:
                totals[sample.name] += int(sample.value)
    return totals


class Books:
    """What a test's calls changed in the metrics and spans, from where the test started."""

    def __init__(
        self, registry: CollectorRegistry, spans: InMemorySpanExporter, provider: TracerProvider
    ) -> None:
        self.registry = registry
        self.spans = spans
        self.provider = provider
        self._metrics = read_metrics(registry)
        self._spans = len(spans.get_finished_spans())

    def new_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans()[self._spans :])

    def span(self, name: str) -> ReadableSpan:
        (found,) = [span for span in self.new_spans() if span.name == name]
        return found

    def settled(self, limiter: CapacityLimiter | None = None) -> dict[str, int]:
        """Calls finished by outcome; fails if anything is still queued, in flight or held."""
        change = read_metrics(self.registry)
        change.subtract(self._metrics)
        for gauge in GAUGES:
            assert change.pop(gauge, 0) == 0, f"{gauge} is not back where it was"
        if limiter is not None:
            assert limiter.borrowed_tokens == 0
            assert limiter.waiting == 0
        finished = {key.removeprefix("finished "): value for key, value in change.items() if value}
        ended = Counter(
            str((span.attributes or {}).get("aiothreads.outcome"))
            for span in self.new_spans()
            if span.name.startswith("threaded ")
        )
        assert dict(ended) == finished, "every call ends exactly one span, with its outcome"
        return finished


@pytest.fixture(autouse=True)
def workers_look_up_afresh() -> Iterator[None]:
    """This process, where carried calls are also rebuilt, looks its telemetry up as a new
    worker process would, once per test: what it found for another test stays there."""
    from aiothreads.instrumentation import _carried

    _carried._find_worker.cache_clear()
    yield
    _carried._find_worker.cache_clear()


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(scope="module")
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@pytest.fixture
def books(
    registry: CollectorRegistry,
    span_exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
) -> Iterator[Books]:
    """Prometheus metrics and OpenTelemetry spans on for the test."""
    instrumentation.configure(
        registry=registry,
        tracer_provider=tracer_provider,
        prometheus=True,
        opentelemetry=True,
        structlog=False,
    )
    try:
        yield Books(registry, span_exporter, tracer_provider)
    finally:
        instrumentation.reset()


# -- talking to workers --------------------------------------------------------------------------


async def in_own_thread(function: Callable[[], T]) -> T:
    """Run a blocking helper on a thread of its own, never on an executor under test."""
    with ThreadPoolExecutor(1, thread_name_prefix="test-helper") as helper:
        return await asyncio.get_running_loop().run_in_executor(helper, function)


class Reports:
    """A socket on 127.0.0.1 that calls in workers report to; holds the calls that wait."""

    def __init__(self, server: socket.socket) -> None:
        self.server = server
        self.port: int = server.getsockname()[1]
        self._held: list[socket.socket] = []

    async def running(self) -> int:
        """Wait for a ``report_then_wait`` call to start; return its worker's pid."""
        connection, _ = await in_own_thread(self.server.accept)
        self._held.append(connection)
        word = await in_own_thread(functools.partial(connection.recv, 8))
        return int(word.strip())

    async def word(self, size: int) -> bytes:
        """Wait for a ``report`` call; return its word."""
        connection, _ = await in_own_thread(self.server.accept)
        with connection:
            return await in_own_thread(functools.partial(connection.recv, size))

    def release(self) -> None:
        """Let every held call return."""
        held, self._held = self._held, []
        for connection in held:
            with connection, contextlib.suppress(OSError):  # its worker may be gone
                connection.sendall(b"!")

    def nobody_else_reported(self) -> bool:
        self.server.setblocking(False)
        try:
            self.server.accept()[0].close()
        except BlockingIOError:
            return True
        finally:
            self.server.settimeout(HANG_GUARD)
        return False


@contextlib.asynccontextmanager
async def reports() -> AsyncIterator[Reports]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(HANG_GUARD)
        reporting = Reports(server)
        try:
            yield reporting
        finally:
            reporting.release()


async def outcome_of(call: Awaitable[Any]) -> Any:
    """Return what awaiting ``call`` returned or raised (without cancelling it on a hang)."""
    try:
        return await asyncio.wait_for(asyncio.shield(call), HANG_GUARD)
    except BaseException as exc:
        return exc


def submitted(call: Awaitable[T]) -> asyncio.Future[T]:
    """The future a decorated function returns when called inside a running loop."""
    assert isinstance(call, asyncio.Future)
    return call


# -- which executors run work here ---------------------------------------------------------------


class AioMiscLikePool(ThreadPoolExecutor):
    """A thread pool of another library that derives from the stdlib's (as aiomisc's does)."""


class InlineExecutor(Executor):
    """Runs work in the calling thread: in this process, but not declared so."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@runs_in_threads
class DeclaredInlineExecutor(InlineExecutor):
    """The same, declared to run work in this process."""


class DeclaredSubclass(DeclaredInlineExecutor):
    """Inherits the declaration."""


def test_thread_pools_and_their_subclasses_run_work_in_this_process() -> None:
    for executor in (ThreadPoolExecutor(1), AioMiscLikePool(1), WorkerPool(1)):
        with executor:
            assert not runs_elsewhere(executor), type(executor).__name__


def test_process_pools_loky_and_dask_run_work_elsewhere(engines: Engines) -> None:
    for name in ENGINES:
        assert runs_elsewhere(engines.get(name).executor), name
    assert runs_elsewhere(InlineExecutor()), "an executor nobody declared counts as remote"


def test_a_declared_executor_and_its_subclasses_run_work_in_this_process() -> None:
    assert not runs_elsewhere(DeclaredInlineExecutor())
    assert not runs_elsewhere(DeclaredSubclass())


def test_a_declaration_made_after_first_use_counts() -> None:
    class LateDeclared(InlineExecutor):
        pass

    assert runs_elsewhere(LateDeclared())
    assert runs_in_threads(LateDeclared) is LateDeclared
    assert not runs_elsewhere(LateDeclared())


CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
"""Trace and span id of the caller whose context the carried calls below hold."""


def carried_from_the_caller(func: Callable[..., Any], function: str) -> Carried:
    """``func`` as a traced call hands it to a remote executor, in ``CALLER_TRACE``."""
    trace_id, span_id = CALLER_TRACE
    headers = {"traceparent": f"00-{trace_id}-{span_id}-01", "baggage": "tenant=acme"}
    return Carried(func, "threaded", function, headers)


def test_a_carried_call_rebuilt_in_a_process_with_aiothreads_runs_in_the_callers_context() -> None:
    # Unpickling is what a worker does; copying does the same, in this process.
    carried = carried_from_the_caller(remote_work.trace_seen, "trace_seen")
    for rebuilt in (pickle.loads(pickle.dumps(carried)), copy.copy(carried), carried):
        assert rebuilt() == (*CALLER_TRACE, {"tenant": "acme"})


def test_a_carried_call_gets_exactly_its_arguments_and_its_functions_names() -> None:
    carried = carried_from_the_caller(functools.partial(remote_work.echo, key=2), "echo")
    for rebuilt in (pickle.loads(pickle.dumps(carried)), copy.deepcopy(carried), carried):
        assert rebuilt(1, 3) == ((1, 3), {"key": 2})
    assert (carried.__name__, carried.__qualname__) == ("echo", "echo")


def test_a_call_made_while_unpickling_is_rebuilt_as_its_function_of_its_arguments() -> None:
    # What a carried call is rebuilt from in a worker: a small program of such calls.
    program = _Unpickled(operator.add, 2, _Unpickled(operator.mul, 3, 4))
    assert pickle.loads(pickle.dumps(program)) == 2 + 3 * 4


def test_dask_keys_a_pure_carried_call_by_its_function_not_its_trace() -> None:
    from dask.base import tokenize

    one = carried_from_the_caller(remote_work.echo, "echo")
    other = Carried(
        remote_work.echo,
        "threaded",
        "echo",
        {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    )
    assert tokenize(one) == tokenize(other)
    assert tokenize(one) != tokenize(carried_from_the_caller(remote_work.multiply, "multiply"))


def test_a_carried_partial_is_named_after_the_function_inside_as_dask_shows_it() -> None:
    inner = functools.partial(functools.partial(remote_work.echo, 1), key=2)
    carried = carried_from_the_caller(inner, "tests.remote_work.echo")  # as a call carries it
    assert (carried.__name__, carried.__qualname__) == ("echo", "echo")
    assert carried(3) == ((1, 3), {"key": 2})


UNSAMPLED_REQUEST = {"traceparent": f"00-{CALLER_TRACE[0]}-{CALLER_TRACE[1]}-00"}
"""The headers every call of one request carries when its trace records no span for them."""


@pytest.fixture
def idle_pool() -> Iterator[ProcessPoolExecutor]:
    """A stdlib process pool that never starts a worker: nothing is submitted to it."""
    pool = ProcessPoolExecutor(1)
    try:
        yield pool
    finally:
        pool.shutdown()


def carried_in_turn(executor: Executor, turns: int, **differs: Any) -> list[Carried]:
    """``turns`` calls of ``remote_work.trace_seen`` as one request carries them, in turn."""
    call: dict[str, Any] = {
        "func": remote_work.trace_seen,
        "kind": "threaded",
        "function": "tests.remote_work.trace_seen",
        "headers": UNSAMPLED_REQUEST,
        **differs,
    }
    check_picklable(executor, call["func"], (), {})  # as every remote call is, before this
    return [carried_call(executor, **call) for _ in range(turns)]


def test_the_calls_of_one_request_to_a_process_pool_are_pickled_once(
    idle_pool: ProcessPoolExecutor,
) -> None:
    first, second, *later = carried_in_turn(idle_pool, 4)
    assert first is not second
    assert all(carried is second for carried in later)
    rebuilt = pickle.loads(pickle.dumps(later[-1]))
    assert rebuilt() == (*CALLER_TRACE, {})


@pytest.mark.parametrize(
    "differs",
    [
        {"func": remote_work.trace_context_seen},
        {"headers": {"traceparent": f"00-{'1' * 32}-{'2' * 16}-00"}},
        {"kind": "threaded_separate"},
        {"function": "renamed"},
    ],
    ids=["function", "headers", "kind", "name"],
)
def test_a_call_unlike_the_kept_one_carries_what_it_was_given(
    idle_pool: ProcessPoolExecutor, differs: dict[str, Any]
) -> None:
    kept = carried_in_turn(idle_pool, 2)[-1]
    (carried,) = carried_in_turn(idle_pool, 1, **differs)
    assert carried is not kept
    expected = {
        "func": remote_work.trace_seen,
        "kind": "threaded",
        "function": "tests.remote_work.trace_seen",
        "headers": UNSAMPLED_REQUEST,
        **differs,
    }
    rebuilt = pickle.loads(pickle.dumps(carried))
    assert rebuilt.args == (
        (expected["kind"], expected["function"], expected["headers"]),
        expected["func"],
    )


@pytest.mark.parametrize("kept", [False, True], ids=["pickled-per-call", "pickled-ahead"])
def test_a_carried_call_rebuilt_where_aiothreads_cannot_be_imported_is_its_bare_function(
    idle_pool: ProcessPoolExecutor, monkeypatch: pytest.MonkeyPatch, kept: bool
) -> None:
    carried = carried_in_turn(idle_pool, 2 if kept else 1)[-1]
    pickled = pickle.dumps(carried)
    monkeypatch.setitem(sys.modules, "aiothreads", None)  # as in a worker without it
    rebuilt = pickle.loads(pickled)
    monkeypatch.undo()
    assert rebuilt is remote_work.trace_seen


def test_calls_to_an_engine_that_pickles_otherwise_are_never_kept(
    idle_pool: ProcessPoolExecutor,
) -> None:
    carried_in_turn(idle_pool, 2)
    with ThreadPoolExecutor(1) as elsewhere:  # stands for loky's or dask's, which cloudpickle
        carried = carried_in_turn(elsewhere, 3)
    assert len({id(each) for each in carried}) == 3
    assert pickle.loads(pickle.dumps(carried[-1]))() == (*CALLER_TRACE, {})


def test_calls_of_a_function_pickle_cannot_take_by_name_are_never_kept(
    idle_pool: ProcessPoolExecutor,
) -> None:
    bound = functools.partial(remote_work.echo, key=1)
    carried = carried_in_turn(idle_pool, 3, func=bound)
    assert len({id(each) for each in carried}) == 3
    assert pickle.loads(pickle.dumps(carried[-1]))(2) == ((2,), {"key": 1})


def worker_traced_by(books: Books, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process a worker whose OpenTelemetry SDK records into ``books``."""
    from aiothreads.instrumentation import _otel

    traced = functools.partial(_otel.OpenTelemetryTracing, books.provider)
    monkeypatch.setattr(_otel, "OpenTelemetryTracing", traced)


def test_a_worker_with_an_sdk_runs_a_carried_call_in_a_span_of_its_own(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_traced_by(books, monkeypatch)
    carried = carried_from_the_caller(remote_work.current_span_id, "current_span_id")
    current = carried()

    (span,) = [span for span in books.new_spans() if span.name == "worker current_span_id"]
    assert format(span.context.span_id, "016x") == current
    assert format(span.context.trace_id, "032x") == CALLER_TRACE[0]
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == CALLER_TRACE[1]


def test_a_worker_whose_environment_leaves_opentelemetry_out_records_no_span_of_its_own(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_traced_by(books, monkeypatch)
    monkeypatch.setenv("AIOTHREADS_INSTRUMENTATION", "prometheus")
    carried = carried_from_the_caller(remote_work.trace_seen, "trace_seen")
    assert carried() == (*CALLER_TRACE, {"tenant": "acme"})  # the context is still current
    assert [span.name for span in books.new_spans() if span.name.startswith("worker ")] == []


class TelemetryBroke(Exception):
    """What a broken worker-side telemetry raises."""


def break_worker_telemetry(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Make the worker's ``enter`` (before the carried context is current) or ``leave``
    (once it is not) raise: a broken backend, not a context left behind."""
    from aiothreads.instrumentation import _carried

    done = getattr(_carried._Worker, where)

    def broken(*args: Any) -> None:
        if where == "leave":
            done(*args)
        raise TelemetryBroke(where)

    monkeypatch.setattr(_carried._Worker, where, broken)


@pytest.mark.parametrize("where", ["enter", "leave"])
def test_a_carried_call_runs_once_and_returns_its_result_when_worker_telemetry_raises(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    calls: list[tuple[Any, ...]] = []

    def work(*args: Any) -> str:
        calls.append(args)
        return "done"

    carried = carried_from_the_caller(work, "work")
    break_worker_telemetry(monkeypatch, where)
    assert carried(1, 2) == "done"
    assert calls == [(1, 2)]


@pytest.mark.parametrize("where", ["enter", "leave"])
def test_a_carried_calls_own_exception_passes_unchanged_when_worker_telemetry_raises(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    carried = carried_from_the_caller(remote_work.fail, "fail")
    break_worker_telemetry(monkeypatch, where)
    with pytest.raises(remote_work.RemoteFailure, match="from the worker") as raised:
        carried("from the worker")
    assert raised.value.__context__ is None


def test_a_carried_call_ended_by_system_exit_leaves_no_caller_context_in_its_thread() -> None:
    """The caller's trace and baggage are current only while the function runs, however it ends.

    A worker's thread goes on to run other work, and logs between calls: none of that may
    look as if it belonged to the caller's trace.
    """
    carried = carried_from_the_caller(sys.exit, "sys.exit")

    def in_a_workers_thread() -> dict[str, object]:
        with pytest.raises(SystemExit):
            carried(3)
        return dict(context.get_current())

    with ThreadPoolExecutor(1, thread_name_prefix="test-worker") as worker:
        assert worker.submit(in_a_workers_thread).result(HANG_GUARD) == {}


@pytest.mark.parametrize("not_an_executor_class", [ThreadPoolExecutor(1), int, "pool"])
def test_runs_in_threads_takes_only_executor_classes(not_an_executor_class: object) -> None:
    with pytest.raises(TypeError, match=r"concurrent\.futures\.Executor subclass"):
        runs_in_threads(not_an_executor_class)  # type: ignore[type-var]
    if isinstance(not_an_executor_class, Executor):
        not_an_executor_class.shutdown()


@pytest.mark.asyncio
async def test_a_declared_executor_is_handed_the_call_itself(books: Books) -> None:
    seen: list[object] = []

    @threaded(executor=DeclaredInlineExecutor())
    def inside() -> str:
        seen.append(aiothreads.EVENT_LOOP.get(None))  # set only where aiothreads runs the call
        return "ran here"

    assert await inside() == "ran here"
    assert seen == [asyncio.get_running_loop()]
    assert books.settled() == {"ok": 1}


@pytest.mark.asyncio
async def test_an_undeclared_executor_gets_only_picklable_work_and_is_told_how_to_declare(
    books: Books,
) -> None:
    run = threaded(executor=InlineExecutor())
    assert await run(remote_work.multiply)(6, b=7) == 42

    outcome = await outcome_of(run(remote_work.multiply)(threading.Lock(), 2))  # type: ignore[arg-type]
    assert isinstance(outcome, ExecutorRefused)
    assert "cannot run on InlineExecutor" in str(outcome)
    assert str(outcome).endswith(
        "if InlineExecutor runs work in this process's threads, declare it with "
        "aiothreads.runs_in_threads(InlineExecutor)"
    )
    assert books.settled() == {"ok": 1, "error": 1}


@pytest.mark.asyncio
async def test_a_refusal_names_what_cloudpickle_could_not_pickle_once_pickle_failed(
    books: Books,
) -> None:
    """pickle cannot take a local function at all; cloudpickle can, but not the lock it holds.

    The refusal gives cloudpickle's reason, the last one tried: the lock is what to change.
    """
    pytest.importorskip("cloudpickle")  # loaded: an undeclared executor is offered it
    lock = threading.Lock()

    def holds_a_lock() -> bool:
        return lock.locked()

    outcome = await outcome_of(threaded(executor=InlineExecutor())(holds_a_lock)())

    assert isinstance(outcome, ExecutorRefused)
    assert "cannot pickle '_thread.lock' object" in str(outcome)
    assert isinstance(outcome.__cause__, TypeError)
    assert "_thread.lock" in str(outcome.__cause__)
    assert books.settled() == {"error": 1}


# -- every engine keeps the caller's promises ----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("instrument", [True, False], ids=["traced", "plain"])
async def test_a_call_returns_its_result_and_sees_exactly_its_arguments(
    engine: Engine, books: Books, instrument: bool
) -> None:
    # Keyword arguments named like options of the engines' own submit() stay the function's.
    call = threaded(executor=engine.executor, instrument=instrument)(remote_work.echo)
    kwargs = {"key": "k", "pure": False, "workers": "w", "priority": 3, "func": "f"}

    assert await call(1, "two", **kwargs) == ((1, "two"), kwargs)
    assert books.settled() == ({"ok": 1} if instrument else {})


@pytest.mark.asyncio
async def test_with_metrics_alone_a_remote_call_is_counted_until_it_comes_back(
    engine: Engine, registry: CollectorRegistry
) -> None:
    """A call that nothing but metrics records (no span, no log at DEBUG) keeps its books."""
    count_calls_only(registry)
    try:
        before = read_metrics(registry)
        call = threaded(executor=engine.executor)(remote_work.echo)
        assert await call(1) == ((1,), {})
        change = read_metrics(registry)
    finally:
        instrumentation.reset()
    change.subtract(before)
    assert +change == Counter({"finished ok": 1})  # and nothing left queued or in flight


@pytest.mark.asyncio
async def test_a_remote_exception_reaches_the_caller_with_its_traceback(
    engine: Engine, books: Books
) -> None:
    outcome = await outcome_of(threaded(executor=engine.executor)(remote_work.fail)("no rows"))

    assert isinstance(outcome, remote_work.RemoteFailure)
    assert str(outcome) == "no rows"
    assert "raise RemoteFailure(message)" in "".join(traceback.format_exception(outcome))
    assert books.settled() == {"error": 1}
    span = books.span("threaded tests.remote_work.fail")
    assert span.attributes is not None
    assert span.attributes["error.type"] == "tests.remote_work.RemoteFailure"


@pytest.mark.asyncio
@pytest.mark.parametrize("passed", ["positionally", "by keyword"])
async def test_an_unpicklable_argument_fails_at_once_and_gives_the_place_back(
    engine: Engine, books: Books, passed: str
) -> None:
    limiter = CapacityLimiter(1)
    function = remote_work.multiply if passed == "positionally" else remote_work.echo
    call = threaded(limit=limiter, executor=engine.executor)(function)

    if passed == "positionally":
        future = submitted(call(threading.Lock(), 2))
    else:
        future = submitted(call(1, key=threading.Lock()))

    assert future.done(), "the refusal should be known at once, before anything is submitted"
    outcome = await outcome_of(future)
    assert isinstance(outcome, ExecutorRefused)
    assert outcome.__cause__ is not None, "the pickling error should be the __cause__"
    assert f"tests.remote_work.{function.__name__} cannot run on" in str(outcome)
    name = type(engine.executor).__name__
    if type(engine.executor) is ProcessPoolExecutor:  # surely remote: nothing to declare
        assert str(outcome).endswith(", or a module-level function with picklable arguments")
    else:
        assert str(outcome).endswith(f"declare it with aiothreads.runs_in_threads({name})")
    assert books.settled(limiter) == {"error": 1}


@pytest.mark.asyncio
async def test_a_function_that_ran_before_is_refused_at_once_with_an_unpicklable_argument(
    engines: Engines, books: Books
) -> None:
    """A function known to pickle spares the trial only while all its arguments always pickle."""
    call = threaded(executor=engines.process_pool)(remote_work.echo)
    assert await call(1, "two", b"3", 4.0, None, key=True) == (
        (1, "two", b"3", 4.0, None),
        {"key": True},
    )

    for refused in (
        call(1, threading.Lock()),
        call(1, key=threading.Lock()),
        call([{1: threading.Lock()}]),
    ):
        future = submitted(refused)
        assert future.done(), "the refusal should be known at once, before anything is submitted"
        assert isinstance(await outcome_of(future), ExecutorRefused)
    assert books.settled() == {"ok": 1, "error": 3}


@pytest.mark.asyncio
async def test_a_callable_object_that_pickled_before_is_tried_again(
    engines: Engines, books: Books
) -> None:
    """Its state may change between calls, and with it whether it pickles."""
    scale = remote_work.Scale(2)
    call = threaded(executor=engines.process_pool)(scale)
    assert await call(21) == 42

    scale.factor = threading.Lock()
    future = submitted(call(21))

    assert future.done(), "the refusal should be known at once, before anything is submitted"
    assert isinstance(await outcome_of(future), ExecutorRefused)
    assert books.settled() == {"ok": 1, "error": 1}


@pytest.mark.asyncio
async def test_a_function_refused_once_is_tried_again_and_refused_again(books: Books) -> None:
    """Only a function that pickled is spared the trial: one that did not never is."""
    engine = HoldingExecutor()
    lock = threading.Lock()

    def holds_a_lock(number: int) -> bool:  # pickle refuses it by name, cloudpickle for its lock
        return lock.locked() or number > 0

    call = threaded(executor=engine)(holds_a_lock)
    futures: list[asyncio.Future[bool]] = []
    try:
        for _ in range(2):
            future = submitted(call(1))
            futures.append(future)
            assert future.done(), "the refusal should be known at once, before any submit"
            assert isinstance(await outcome_of(future), ExecutorRefused)
    finally:  # a call handed over by mistake is cancelled, so that it outlives no test
        for future in futures:
            future.cancel()
        await turns_until(lambda: not aiothreads.snapshot(), "every call settled")
    assert engine.futures == [], "nothing should reach the executor"
    assert books.settled() == {"error": 2}


@pytest.mark.asyncio
async def test_an_unpicklable_call_counts_as_no_refusal_of_the_engines_pool(
    engine: Engine, books: Books
) -> None:
    """Nothing was submitted: the engine refused nothing, so no pool's refusals count it.

    The pool refusal counts are those of executors that run work in this process's threads.
    """
    name = pool_name(engine.executor)
    before = {state.name: dict(state.refused) for state in pool_states()}.get(name, {})

    call = threaded(executor=engine.executor)(remote_work.multiply)
    outcome = await outcome_of(call(threading.Lock(), 2))  # type: ignore[arg-type]

    assert isinstance(outcome, ExecutorRefused)
    after = {state.name: dict(state.refused) for state in pool_states()}.get(name, {})
    assert after == before
    assert books.settled() == {"error": 1}


@pytest.mark.asyncio
async def test_a_lambda_runs_where_the_engine_pickles_functions_by_value(
    engine: Engine, books: Books
) -> None:
    outcome = await outcome_of(threaded(executor=engine.executor)(lambda x: x + 1)(1))

    if engine.pickles_by_value:
        assert outcome == 2
        assert books.settled() == {"ok": 1}
    else:
        assert isinstance(outcome, ExecutorRefused)
        assert books.settled() == {"error": 1}


@pytest.mark.asyncio
async def test_a_remote_call_holds_its_place_and_shows_in_snapshot_while_it_runs(
    engine: Engine, books: Books
) -> None:
    limiter = CapacityLimiter(1)
    run = threaded(limit=limiter, executor=engine.executor)
    async with reports() as reporting:
        first = run(remote_work.report_then_wait)(reporting.port)
        pid = await reporting.running()
        second = asyncio.ensure_future(run(remote_work.multiply)(3, 4))
        await turns_until(lambda: limiter.waiting == 1, "the second call waiting for the place")

        (seen,) = aiothreads.snapshot(stacks=True)
        assert seen.function == "tests.remote_work.report_then_wait"
        assert seen.kind == "threaded"
        assert seen.executor == type(engine.executor).__name__
        assert (seen.thread_name, seen.thread_id, seen.stack) == ("", 0, ())
        assert seen.trace_id is not None
        assert seen.running_for >= 0
        assert not second.done()

        reporting.release()
        assert await outcome_of(first) == pid
        assert await outcome_of(second) == 12
    assert pid != os.getpid()
    assert aiothreads.snapshot() == []
    assert books.settled(limiter) == {"ok": 2}


@pytest.mark.asyncio
async def test_a_call_cancelled_while_it_runs_is_counted_cancelled(
    engine: Engine, books: Books
) -> None:
    limiter = CapacityLimiter(1)
    async with reports() as reporting:
        call = threaded(limit=limiter, executor=engine.executor)(remote_work.report_then_wait)
        running = submitted(call(reporting.port))
        await reporting.running()

        running.cancel()  # best effort: the worker goes on, the caller stops waiting at once

        assert isinstance(await outcome_of(running), asyncio.CancelledError)
        if engine.keeps_the_place_of_cancelled_work:
            assert limiter.borrowed_tokens == 1, "the place is held until its worker finishes"
        reporting.release()
        await turns_until(lambda: limiter.borrowed_tokens == 0, "the place given back")
    assert books.settled(limiter) == {"cancelled": 1}


class HoldingExecutor(Executor):
    """Runs nothing: keeps each call's future pending, as a remote engine's queue would."""

    def __init__(self) -> None:
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self.futures.append(future)
        return future

    async def hand_over(self, call: Awaitable[T]) -> tuple[asyncio.Future[T], Future[Any]]:
        """Return ``call`` once it is handed here, with the future this executor gave it."""
        made = submitted(call)
        await turns_until(lambda: bool(self.futures), "the call handed to the executor")
        (work,) = self.futures
        return made, work


@pytest.mark.asyncio
async def test_cancelling_a_remote_call_cancels_its_work_before_cancel_returns(
    books: Books,
) -> None:
    """No loop turn passes in between, in which a worker could take the work."""
    engine = HoldingExecutor()
    limiter = CapacityLimiter(1)
    call, work = await engine.hand_over(
        threaded(limit=limiter, executor=engine)(remote_work.multiply)(2, 3)
    )

    assert call.cancel()

    assert work.cancelled()
    assert isinstance(await outcome_of(call), asyncio.CancelledError)
    assert not call.cancel()  # once only
    await turns_until(lambda: limiter.borrowed_tokens == 0, "the cancelled work settled")
    assert books.settled(limiter) == {"cancelled": 1}


def test_work_that_comes_back_after_its_loop_closed_settles_its_books(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], books: Books
) -> None:
    """Nobody is left to receive the outcome, but the call is counted and its place given back."""
    engine = HoldingExecutor()
    limiter = CapacityLimiter(1)

    async def hand_over() -> Future[Any]:
        _, work = await engine.hand_over(
            threaded(limit=limiter, executor=engine)(remote_work.multiply)(2, 3)
        )
        return work

    loop = loop_factory()
    try:
        work = loop.run_until_complete(hand_over())
    finally:
        loop.close()
    assert limiter.borrowed_tokens == 1

    work.set_result(6)  # in this thread, with the loop gone

    assert aiothreads.snapshot() == []
    assert books.settled(limiter) == {"ok": 1}


class StartedExecutor(HoldingExecutor):
    """Takes each call as a worker would at once: its future runs, and cannot be cancelled."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        assert future.set_running_or_notify_cancel()
        return future


@pytest.mark.asyncio
async def test_with_metrics_alone_a_call_cancelled_while_it_runs_is_counted_cancelled(
    registry: CollectorRegistry,
) -> None:
    engine = StartedExecutor()
    limiter = CapacityLimiter(1)
    count_calls_only(registry)
    try:
        before = read_metrics(registry)
        call, work = await engine.hand_over(
            threaded(limit=limiter, executor=engine)(remote_work.multiply)(2, 3)
        )

        assert call.cancel()
        assert isinstance(await outcome_of(call), asyncio.CancelledError)
        assert limiter.borrowed_tokens == 1, "the place is held until its worker finishes"

        work.set_result(6)  # the worker finished it all the same: the outcome is dropped
        await turns_until(lambda: limiter.borrowed_tokens == 0, "the place given back")
        change = read_metrics(registry)
    finally:
        instrumentation.reset()
    change.subtract(before)
    assert +change == Counter({"finished cancelled": 1})


class _Clock:
    """What calls counted without a probe read as ``time.perf_counter()``: moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowToTakeExecutor(HoldingExecutor):
    """Takes ``taking`` seconds of ``clock`` to accept each call."""

    def __init__(self, clock: _Clock, taking: float) -> None:
        super().__init__()
        self._clock = clock
        self._taking = taking

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self._clock.now += self._taking
        return super().submit(fn, *args, **kwargs)


@pytest.mark.asyncio
async def test_with_metrics_alone_a_remote_call_waits_until_its_executor_takes_it(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its wait ends as the executor accepts it; its duration runs from then until it is back."""
    clock = _Clock()
    monkeypatch.setattr(_executor, "_perf_counter", clock)
    engine = SlowToTakeExecutor(clock, taking=2.0)
    labels = {"function": "tests.remote_work.multiply", "kind": "threaded"}
    count_calls_only(registry)
    try:
        waited_before = registry.get_sample_value("aiothreads_call_wait_seconds_sum", labels) or 0
        ran_before = registry.get_sample_value("aiothreads_call_duration_seconds_sum", labels) or 0
        call, work = await engine.hand_over(threaded(executor=engine)(remote_work.multiply)(2, 3))
        clock.now += 3.0
        work.set_result(6)
        assert await outcome_of(call) == 6
        waited = registry.get_sample_value("aiothreads_call_wait_seconds_sum", labels)
        ran = registry.get_sample_value("aiothreads_call_duration_seconds_sum", labels)
    finally:
        instrumentation.reset()
    assert (waited, ran) == pytest.approx((waited_before + 2.0, ran_before + 3.0))


class KeepingExecutor(HoldingExecutor):
    """Keeps what each call hands it, too."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[Callable[..., Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.handed.append(fn)
        return super().submit(fn, *args, **kwargs)


@pytest.mark.asyncio
async def test_a_traced_call_carries_the_name_it_was_given_to_its_worker(books: Books) -> None:
    """The worker's span is named as the caller's is: after ``name=``, not the function's own."""
    engine = KeepingExecutor()
    echo = threaded(executor=engine, name="orders.checksum")(remote_work.echo)
    call, work = await engine.hand_over(echo(1, key=2))
    (handed,) = engine.handed

    kind, function, headers = pickle.loads(pickle.dumps(handed)).args[0]

    assert (kind, function) == ("threaded", "orders.checksum")
    work.set_result(((1,), {"key": 2}))
    assert await outcome_of(call) == ((1,), {"key": 2})
    assert books.settled() == {"ok": 1}
    span_id = books.span("threaded orders.checksum").context.span_id
    assert headers["traceparent"].split("-")[2] == format(span_id, "016x")


@pytest.fixture
def one_worker(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """A pool of the engine named by the test's parameter, with one worker, for this test alone."""
    if request.param == "loky":
        executor: Executor = loky.ProcessPoolExecutor(1)
    else:
        executor = spawned_pool()
    try:
        yield executor
    finally:
        executor.shutdown(wait=True)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "one_worker",
    [
        "process_pool",
        "loky",
    ],
    indirect=True,
)
async def test_a_call_cancelled_while_queued_never_runs(one_worker: Executor, books: Books) -> None:
    run = threaded(executor=one_worker)
    async with reports() as reporting:
        holder = run(remote_work.report_then_wait)(reporting.port)
        await reporting.running()
        # The pool hands a few calls to its worker ahead of time (up to 3 on loky's, 2 on the
        # stdlib's), which cannot be cancelled there any more; the rest stay with the pool.
        # Twice that many go first, so the one cancelled is with the pool on every Python.
        ahead = [run(remote_work.multiply)(2, factor) for factor in range(3, 9)]
        cancelled = submitted(run(remote_work.report)(reporting.port, b"cancelled"))
        after = run(remote_work.report)(reporting.port, b"after")

        cancelled.cancel()
        assert isinstance(await outcome_of(cancelled), asyncio.CancelledError)
        reporting.release()
        assert await reporting.word(9) == b"after"  # one worker, in order: it came first
        assert [await outcome_of(call) for call in (*ahead, after)] == [
            *(2 * factor for factor in range(3, 9)),
            None,
        ]
        await outcome_of(holder)
        assert reporting.nobody_else_reported()
    assert books.settled() == {"ok": 8, "cancelled": 1}


@pytest.mark.asyncio
async def test_a_dask_call_cancelled_while_queued_leaves_the_scheduler(
    engines: Engines, books: Books
) -> None:
    client = engines.dask_client
    nowhere = client.get_executor(resources={"nowhere": 1})  # no worker has it: the call waits
    queued = submitted(threaded(executor=nowhere)(remote_work.multiply)(2, 3))
    await scheduler_until(client, 1, "the call waiting on the scheduler")

    queued.cancel()

    assert isinstance(await outcome_of(queued), asyncio.CancelledError)
    await scheduler_until(client, 0, "the call gone from the scheduler")
    assert books.settled() == {"cancelled": 1}


async def scheduler_until(client: Any, waiting: int, what: str) -> None:
    """Ask the scheduler until ``waiting`` calls wait there for the resource no worker has."""
    look = functools.partial(client.run_on_scheduler, waiting_for_nowhere)
    for _ in range(200):  # each look is a round trip to the scheduler
        if await in_own_thread(look) == waiting:
            return
    raise AssertionError(f"never happened: {what}")


def waiting_for_nowhere(dask_scheduler: Any) -> int:
    """Run on the scheduler: the tasks it holds that wait for the resource no worker has."""
    return sum(bool(task.resource_restrictions) for task in dask_scheduler.tasks.values())


@pytest.mark.asyncio
async def test_the_trace_and_baggage_reach_the_worker(engine: Engine, books: Books) -> None:
    tracer = books.provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            trace_id, parent_id, carried = await threaded(executor=engine.executor)(
                remote_work.trace_seen
            )()
        finally:
            context.detach(token)

    call = books.span("threaded tests.remote_work.trace_seen")
    assert call.parent is not None
    assert call.parent.span_id == request.get_span_context().span_id
    assert trace_id == format(request.get_span_context().trace_id, "032x")
    assert parent_id == format(call.context.span_id, "016x")
    assert carried == {"tenant": "acme"}
    assert books.settled() == {"ok": 1}


def span_from_elsewhere(
    trace_id: int, span_id: int, *, sampled: bool = False, **trace_state: str
) -> trace.NonRecordingSpan:
    """A span of another process (as a request's headers bring it in), to make current."""
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id,
            span_id,
            is_remote=True,
            trace_flags=flags,
            trace_state=trace.TraceState(list(trace_state.items())),
        )
    )


@pytest.mark.asyncio
async def test_a_request_left_out_of_its_trace_carries_that_trace_to_the_worker(
    engine: Engine, books: Books
) -> None:
    """Head sampling left the request out: the worker sees its context as it is, unsampled."""
    request = span_from_elsewhere(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, vendor="opaque"
    )
    with trace.use_span(request):
        seen = await threaded(executor=engine.executor)(remote_work.trace_context_seen)()

    assert seen == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", False, "vendor=opaque")
    assert books.new_spans() == []


@pytest.mark.asyncio
async def test_each_request_left_out_of_its_trace_carries_its_own_context(
    engines: Engines, books: Books
) -> None:
    """Calls in turn from two such requests, then with baggage added: each carries its own."""
    seen = threaded(executor=engines.process_pool)(remote_work.trace_seen)
    first, second = (span_from_elsewhere(0xA1, 0xB1), span_from_elsewhere(0xA2, 0xB2))
    with trace.use_span(first):
        in_first = [await seen(), await seen()]
    with trace.use_span(second):
        in_second = await seen()
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with_baggage = await seen()
        finally:
            context.detach(token)

    first_seen = (format(0xA1, "032x"), format(0xB1, "016x"), {})
    assert in_first == [first_seen, first_seen]
    assert in_second == (format(0xA2, "032x"), format(0xB2, "016x"), {})
    assert with_baggage == (format(0xA2, "032x"), format(0xB2, "016x"), {"tenant": "acme"})


class _EverySecondSpan:
    """A sampler of its own: it records every second span, whatever the parent."""

    def __init__(self) -> None:
        self._asked = itertools.count()

    def should_sample(self, parent_context: Any, *args: Any, **kwargs: Any) -> Any:
        decide = ALWAYS_ON if next(self._asked) % 2 else ALWAYS_OFF
        return decide.should_sample(parent_context, *args, **kwargs)

    def get_description(self) -> str:
        return "EverySecondSpan"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "under",
    ["an unsampled request, a sampler of its own", "no span, a parent-based sampler's root"],
)
async def test_a_sampler_deciding_call_by_call_is_asked_for_each_remote_call(
    engines: Engines, registry: CollectorRegistry, under: str
) -> None:
    """Calls in one context in turn: a sampler that may decide otherwise is asked each time."""
    exporter = InMemorySpanExporter()
    if under.startswith("no span"):
        sampler: Any = ParentBased(_EverySecondSpan())  # type: ignore[arg-type]
        request: Any = trace.INVALID_SPAN
        parent_id = "0" * 16
    else:
        sampler = _EverySecondSpan()
        request = span_from_elsewhere(0xA1, 0xB1)
        parent_id = format(0xB1, "016x")
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation.configure(
        registry=registry, tracer_provider=provider, opentelemetry=True, structlog=False
    )
    try:
        seen = threaded(executor=engines.process_pool)(remote_work.trace_seen)
        with trace.use_span(request):
            parents = [(await seen())[1] for _ in range(4)]
    finally:
        instrumentation.reset()
        provider.shutdown()

    recorded = [format(span.context.span_id, "016x") for span in exporter.get_finished_spans()]
    assert len(recorded) == 2
    assert parents == [parent_id, recorded[0], parent_id, recorded[1]]


@pytest.mark.asyncio
async def test_a_request_whose_thread_call_came_first_carries_its_own_trace_to_the_worker(
    engines: Engines, books: Books
) -> None:
    """Each unsampled request: a call to a thread first, then one to another process."""
    assert await requests_calling_a_thread_first(engines.process_pool) == TWO_REQUESTS_SEEN
    assert books.new_spans() == []


async def requests_calling_a_thread_first(executor: Executor) -> list[Any]:
    """Two unsampled requests in turn, each calling a thread, then ``executor``'s worker.

    Returns the trace each worker call saw.
    """
    seen = threaded(executor=executor)(remote_work.trace_seen)
    in_thread = threaded(remote_work.trace_seen)
    carried = []
    for request in (span_from_elsewhere(0xA1, 0xB1), span_from_elsewhere(0xA2, 0xB2)):
        with trace.use_span(request):
            await in_thread()
            carried.append(await seen())
    return carried


TWO_REQUESTS_SEEN = [
    (format(0xA1, "032x"), format(0xB1, "016x"), {}),
    (format(0xA2, "032x"), format(0xB2, "016x"), {}),
]


@pytest.mark.asyncio
async def test_with_spans_alone_each_request_whose_thread_call_came_first_carries_its_own_trace(
    engines: Engines,
) -> None:
    """With no metrics each call has a probe: the one to another process opens no span either."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation.configure(
        tracer_provider=provider,
        opentelemetry=True,
        prometheus=False,
        opentelemetry_metrics=False,
        structlog=False,
    )
    try:
        carried = await requests_calling_a_thread_first(engines.process_pool)
    finally:
        instrumentation.reset()
        provider.shutdown()
    assert carried == TWO_REQUESTS_SEEN
    assert exporter.get_finished_spans() == ()


@pytest.mark.asyncio
async def test_a_sampler_put_on_the_tracer_later_is_asked_for_the_next_remote_call(
    engines: Engines, registry: CollectorRegistry
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation.configure(
        registry=registry, tracer_provider=provider, opentelemetry=True, structlog=False
    )
    seen = threaded(executor=engines.process_pool)(remote_work.trace_seen)
    try:
        with trace.use_span(span_from_elsewhere(0xA1, 0xB1)):
            before = [(await seen())[1] for _ in range(2)]
            provider.get_tracer("aiothreads", aiothreads.__version__).sampler = ALWAYS_ON
            after = (await seen())[1]
    finally:
        instrumentation.reset()
        provider.shutdown()

    assert before == [format(0xB1, "016x")] * 2
    (recorded,) = exporter.get_finished_spans()
    assert after == format(recorded.context.span_id, "016x")


@pytest.mark.asyncio
async def test_the_baggage_of_a_request_with_no_span_reaches_the_worker(
    engines: Engines, registry: CollectorRegistry
) -> None:
    """Sampled out, the call opens no span, and no span is current: the baggage goes alone."""
    instrumentation.configure(
        registry=registry,
        tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
        prometheus=True,
        opentelemetry=True,
        structlog=False,
    )
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        seen = await threaded(executor=engines.process_pool)(remote_work.trace_seen)()
    finally:
        context.detach(token)
        instrumentation.reset()

    assert seen == ("0" * 32, "0" * 16, {"tenant": "acme"})


@pytest.mark.asyncio
async def test_the_trace_state_and_sampled_flag_of_the_calls_span_reach_the_worker(
    engines: Engines, books: Books
) -> None:
    parent = span_from_elsewhere(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        sampled=True,
        congo="t61rcWkgMzE",
        rojo="00f067aa0ba902b7",
    )
    with trace.use_span(parent):
        trace_id, span_id, sampled, trace_state = await threaded(executor=engines.process_pool)(
            remote_work.trace_context_seen
        )()

    call = books.span("threaded tests.remote_work.trace_context_seen")
    assert (trace_id, span_id) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        format(call.context.span_id, "016x"),
    )
    assert sampled is True
    assert trace_state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


@pytest.mark.asyncio
async def test_the_workers_structlog_events_carry_the_callers_trace_id(
    engines: Engines, books: Books
) -> None:
    pytest.importorskip("structlog")
    tracer = books.provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        events = await threaded(executor=engines.process_pool)(remote_work.structlog_events)()

    assert events == [
        {
            "event": "crunched",
            "rows": 3,
            "trace_id": format(request.get_span_context().trace_id, "032x"),
        }
    ]


@pytest.fixture
def pool_without_aiothreads() -> Iterator[ProcessPoolExecutor]:
    pool = spawned_pool(initializer=remote_work.hide_aiothreads)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)


@pytest.mark.asyncio
async def test_a_worker_without_aiothreads_just_runs_a_traced_call(
    pool_without_aiothreads: ProcessPoolExecutor, books: Books
) -> None:
    tracer = books.provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        run = threaded(executor=pool_without_aiothreads)
        hidden = await run(remote_work.aiothreads_hidden)()
        assert await run(remote_work.echo)(1, key=2) == ((1,), {"key": 2})

    assert hidden, "the worker never imported aiothreads"
    assert books.settled() == {"ok": 2}


@pytest.mark.asyncio
async def test_a_worker_without_aiothreads_runs_the_calls_of_a_request_left_out_of_its_trace(
    pool_without_aiothreads: ProcessPoolExecutor, books: Books
) -> None:
    """Calls pickled once for the whole request (see ``carried_call``) rebuild there too."""
    request = span_from_elsewhere(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    run = threaded(executor=pool_without_aiothreads)(remote_work.aiothreads_hidden)
    with trace.use_span(request):
        hidden = [await run() for _ in range(3)]

    assert hidden == [True, True, True]
    assert books.new_spans() == []


# -- faults that break an engine -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def dask_of_its_own(workers: int) -> AsyncIterator[tuple[Any, Any]]:
    """A cluster and its client for one test, on the test's loop: ``(cluster, client)``."""
    async with (
        local_cluster(workers, asynchronous=True) as cluster,
        distributed.Client(cluster, asynchronous=True) as client,
    ):
        yield cluster, client


@contextlib.asynccontextmanager
async def broken_engine(name: str) -> AsyncIterator[Executor]:
    """An engine of the test's own, with one worker (two for dask), shut down on exit."""
    if name == "dask":
        async with dask_of_its_own(2) as (_, client):
            yield client.get_executor(pure=False)
            # A worker's nanny starts it again once it was killed: closing the cluster
            # meanwhile waits for timeouts, closing it once it is back does not.
            await client.wait_for_workers(2, timeout=HANG_GUARD)
    elif name == "loky":
        executor = loky.ProcessPoolExecutor(1)
        try:
            yield executor
        finally:
            await in_own_thread(functools.partial(executor.shutdown, wait=True))
    else:
        pool = spawned_pool()
        try:
            yield pool
        finally:
            await in_own_thread(functools.partial(pool.shutdown, wait=True))


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.usefixtures("engines")  # dask's client threads are started once, by the module
async def test_a_worker_killed_mid_call_gives_the_engines_outcome(name: str, books: Books) -> None:
    limiter = CapacityLimiter(1)
    async with broken_engine(name) as executor, reports() as reporting:
        call = threaded(limit=limiter, executor=executor)(remote_work.report_then_wait)
        running = call(reporting.port)
        killed = await reporting.running()
        os.kill(killed, signal.SIGKILL)
        if name == "dask":  # dask runs the task again on another worker
            rerun = await reporting.running()
            reporting.release()
            assert await outcome_of(running) == rerun != killed
        else:
            outcome = await outcome_of(running)
            broken = (
                BrokenProcessPool
                if name == "process_pool"
                else loky.process_executor.TerminatedWorkerError
            )
            assert isinstance(outcome, broken), repr(outcome)
    assert books.settled(limiter) == ({"ok": 1} if name == "dask" else {"error": 1})


@pytest.mark.asyncio
@pytest.mark.usefixtures("engines")  # dask's client threads are started once, by the module
async def test_closing_the_cluster_cancels_the_calls_that_wait(books: Books) -> None:
    limiter = CapacityLimiter(3)
    async with dask_of_its_own(1) as (cluster, client):
        nowhere = client.get_executor(resources={"nowhere": 1})  # no worker has it
        run = threaded(limit=limiter, executor=nowhere)(remote_work.multiply)
        waiting = [run(2, factor) for factor in range(3)]
        await turns_until(lambda: len(aiothreads.snapshot()) == 3, "the calls handed to dask")

        await cluster.close()

        for call in waiting:
            assert isinstance(await outcome_of(call), asyncio.CancelledError)
    assert books.settled(limiter) == {"cancelled": 3}


# -- generators ----------------------------------------------------------------------------------


def rows(count: int) -> Generator[int, None, None]:
    yield from range(count)


def test_a_generator_is_refused_on_a_remote_executor_when_decorated(engine: Engine) -> None:
    executor = engine.executor
    decorations: tuple[Callable[[], object], ...] = (
        lambda: threaded_iterable(executor=executor),  # refused before it sees the function
        lambda: threaded_iterable(rows, executor=executor),
        lambda: threaded(executor=executor)(rows),
        lambda: IteratorWrapper(functools.partial(rows, 3), executor=executor),
    )
    for decorate in decorations:
        with pytest.raises(TypeError) as refused:
            decorate()
        message = str(refused.value)
        assert f"{type(engine.executor).__name__} runs work in other processes" in message
        assert "a @threaded function that returns a list" in message
        assert "aiothreads.runs_in_threads(" in message


# -- dask: names and traces ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_dask_names_a_traced_task_after_the_users_function(
    engines: Engines, books: Books
) -> None:
    client = engines.dask_client
    async with reports() as reporting:
        running = threaded(executor=client.get_executor())(remote_work.report_then_wait)(
            reporting.port
        )
        await reporting.running()
        keys = await in_own_thread(functools.partial(client.run_on_scheduler, task_keys))
        reporting.release()
        await outcome_of(running)
    assert [key.rsplit("-", 1)[0] for key in keys] == ["report_then_wait"]
    assert books.settled() == {"ok": 1}


def task_keys(dask_scheduler: Any) -> list[str]:
    """Run on the scheduler: the keys of the tasks its workers run now."""
    return [str(key) for key, task in dask_scheduler.tasks.items() if task.state == "processing"]


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    status: int
    attributes: dict[str, Any]
    events: list[str]
    service: str


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 that keeps every span it decodes."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="otlp-receiver"
        )

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _add(self, request: Any) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            status=span.status.code,
                            attributes=_attributes(span.attributes),
                            events=[event.name for event in span.events],
                            service=str(service),
                        )
                        for span in scope_spans.spans
                    )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                answer = trace_service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


@pytest.mark.asyncio
async def test_dask_workers_export_spans_that_are_children_of_the_callers(
    engines: Engines, books: Books
) -> None:
    client = engines.dask_client
    tracer = books.provider.get_tracer("test")
    run = threaded(executor=client.get_executor(pure=False))
    requests: list[tuple[str, str]] = []
    with Receiver() as receiver:
        await in_own_thread(
            functools.partial(client.run, remote_work.export_spans_to, receiver.endpoint)
        )
        try:
            for number in range(3):
                with tracer.start_as_current_span(f"request {number}") as request:
                    assert await run(remote_work.multiply)(number, 2) == number * 2
                ids = request.get_span_context()
                requests.append((format(ids.trace_id, "032x"), format(ids.span_id, "016x")))
            with tracer.start_as_current_span("failing request") as request:
                assert isinstance(
                    await outcome_of(run(remote_work.fail)("no")), remote_work.RemoteFailure
                )
            ids = request.get_span_context()
            requests.append((format(ids.trace_id, "032x"), format(ids.span_id, "016x")))
        finally:
            await in_own_thread(functools.partial(client.run, remote_work.stop_exporting_spans))
        received = list(receiver.spans)  # exported as each ended, before its result returned

    callers = {
        format(span.context.trace_id, "032x"): span
        for span in books.new_spans()
        if span.name.startswith("threaded ")
    }
    worker_spans = [span for span in received if span.name.startswith("worker ")]
    assert Counter(span.trace_id for span in worker_spans) == Counter(
        trace_id for trace_id, _ in requests
    ), "one trace per request, with one worker span in it"
    for trace_id, request_span_id in requests:
        (worker,) = [span for span in worker_spans if span.trace_id == trace_id]
        caller = callers[trace_id]
        assert caller.parent is not None
        assert format(caller.parent.span_id, "016x") == request_span_id
        assert worker.parent_span_id == format(caller.context.span_id, "016x")
        assert worker.service == "dask-worker"
        assert worker.attributes["process.pid"] != os.getpid()
    failed = [span for span in worker_spans if span.name == "worker tests.remote_work.fail"]
    (failure,) = failed
    assert failure.attributes["aiothreads.outcome"] == "error"
    assert failure.attributes["error.type"] == "tests.remote_work.RemoteFailure"
    assert failure.events == ["exception"]
    assert books.settled() == {"ok": 3, "error": 1}


@pytest.mark.asyncio
async def test_a_dask_workers_span_is_current_while_the_function_runs(
    engines: Engines, books: Books
) -> None:
    client = engines.dask_client
    tracer = books.provider.get_tracer("test")
    run = threaded(executor=client.get_executor(pure=False))
    with Receiver() as receiver:
        await in_own_thread(
            functools.partial(client.run, remote_work.export_spans_to, receiver.endpoint)
        )
        try:
            with tracer.start_as_current_span("request"):
                current = await run(remote_work.current_span_id)()
        finally:
            await in_own_thread(functools.partial(client.run, remote_work.stop_exporting_spans))
        received = list(receiver.spans)  # exported as it ended, before the result returned

    (worker,) = [span for span in received if span.name.startswith("worker ")]
    assert worker.name == "worker tests.remote_work.current_span_id"
    assert current == worker.span_id, "spans the function opens must be children of its own"
    assert books.settled() == {"ok": 1}


@contextlib.asynccontextmanager
async def dask_workers_exporting_spans(client: Any) -> AsyncIterator[Receiver]:
    """Every dask worker records spans and exports them to the receiver while the block runs."""
    with Receiver() as receiver:
        await in_own_thread(
            functools.partial(client.run, remote_work.export_spans_to, receiver.endpoint)
        )
        try:
            yield receiver
        finally:
            await in_own_thread(functools.partial(client.run, remote_work.stop_exporting_spans))


@pytest.mark.asyncio
async def test_a_dask_worker_that_records_its_own_span_still_sees_the_callers_baggage(
    engines: Engines, books: Books
) -> None:
    """The worker's span is set into the carried context, which keeps the caller's baggage.

    The span names the function and its kind, as the caller's does.
    """
    client = engines.dask_client
    tracer = books.provider.get_tracer("test")
    run = threaded(executor=client.get_executor(pure=False))
    async with dask_workers_exporting_spans(client) as receiver:
        with tracer.start_as_current_span("request"):
            token = context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                trace_id, parent_id, carried = await run(remote_work.trace_seen)()
            finally:
                context.detach(token)
        received = list(receiver.spans)  # exported as it ended, before the result returned

    (worker,) = [span for span in received if span.name.startswith("worker ")]
    call = books.span("threaded tests.remote_work.trace_seen")
    assert worker.trace_id == trace_id == format(call.context.trace_id, "032x")
    assert parent_id == worker.parent_span_id == format(call.context.span_id, "016x")
    assert carried == {"tenant": "acme"}
    assert worker.name == "worker tests.remote_work.trace_seen"
    assert worker.attributes["code.function.name"] == "tests.remote_work.trace_seen"
    assert worker.attributes["aiothreads.kind"] == "threaded"
    assert worker.attributes["aiothreads.outcome"] == "ok"
    assert books.settled() == {"ok": 1}
