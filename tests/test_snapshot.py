"""snapshot(): the calls and threaded generators running in threads, and where they are."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import inspect
import json
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import aiothreads
from aiothreads import (
    CapacityLimiter,
    CodeLocation,
    RunningWork,
    instrumentation,
    snapshot,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
)
from aiothreads._executor import ThreadCall
from aiothreads._inflight import (
    NOT_RUNNING,
    STACK_DEPTH,
    WAIT_CODES,
    WORK_CODES,
    WRAPPER_FILES,
    _task_waited_for,
    codes_running,
    running,
)
from tests.streams import one_ahead_of_its_consumer
from tests.waiting import queued_for_a_place, turns_until

MODULE = __name__
SECRET = "s3cr3t-argument-value"


async def in_own_thread(event: threading.Event) -> bool:
    with ThreadPoolExecutor(1) as waiter:
        return await asyncio.get_running_loop().run_in_executor(waiter, event.wait, 5)


def line_of(function: object, marker: str) -> int:
    """The line number of the first source line of ``function`` containing ``marker``."""
    lines, first = inspect.getsourcelines(function)  # type: ignore[arg-type]
    return first + next(index for index, line in enumerate(lines) if marker in line)


async def waiting_at(name: str, line: int) -> RunningWork:
    """The snapshot of ``name`` once its thread waits at ``line`` (it may still be on its way)."""

    def own_line() -> int | None:
        own = [frame for frame in only(name).stack if frame.file == __file__]
        return own[-1].line if own else None

    await turns_until(lambda: own_line() == line, f"{name} waits at line {line}")
    return only(name)


def only(name: str) -> RunningWork:
    found = [work for work in snapshot(stacks=True) if work.function.endswith(name)]
    assert len(found) == 1, found
    return found[0]


class Blocked:
    """A function that blocks on an event, and the events to watch and release it."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def block(self, secret: str) -> str:
        self.started.set()
        self.release.wait(5)  # <- the blocking line
        return secret


@pytest.mark.asyncio
async def test_nothing_runs_nothing_shows() -> None:
    assert snapshot() == []
    assert snapshot(stacks=True) == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("decorate", "kind"), [(threaded, "threaded"), (threaded_separate, "separate")]
)
async def test_a_blocked_call_shows_with_the_line_it_blocks_on(decorate: object, kind: str) -> None:
    blocked = Blocked()
    work = decorate(blocked.block, name="blocked_call")  # type: ignore[operator]
    call = work(SECRET)
    assert await in_own_thread(blocked.started)

    seen = await waiting_at("blocked_call", line_of(Blocked.block, "<- the blocking line"))
    assert seen.kind == kind
    assert seen.items is None
    assert seen.limit_wait is None
    assert seen.trace_id is None  # spans are off
    assert (
        seen.loop
        == f"{type(asyncio.get_running_loop()).__name__}@{id(asyncio.get_running_loop()):x}"
    )
    thread = next(t for t in threading.enumerate() if t.ident == seen.thread_id)
    assert seen.thread_name == thread.name
    assert seen.started >= seen.submitted
    assert seen.running_for >= 0
    # Wall-clock times, each read from the same clock as the others.
    before = time.time()
    (again,) = snapshot()
    after = time.time()
    assert before - 60 < again.submitted <= again.started <= after
    assert before <= again.started + again.running_for <= after
    assert again.queued_for == pytest.approx(again.started - again.submitted, abs=1e-6)
    assert seen.waiting_for_room is None
    innermost_own = [frame for frame in seen.stack if frame.file == __file__]
    assert innermost_own[-1].function == "block"
    assert innermost_own[-1].line == line_of(Blocked.block, "<- the blocking line")
    assert "threading.py" not in seen.stack[0].file  # the thread machinery is trimmed
    assert "/aiothreads/_" not in seen.stack[0].file

    blocked.release.set()
    assert await call == SECRET
    assert snapshot() == []


@pytest.mark.asyncio
async def test_the_longest_running_call_comes_first() -> None:
    older, newer = Blocked(), Blocked()
    calls = [threaded(older.block, name="older")(SECRET)]
    try:
        assert await in_own_thread(older.started)
        calls.append(threaded(newer.block, name="newer")(SECRET))
        assert await in_own_thread(newer.started)
        assert [work.function for work in snapshot()] == ["older", "newer"]
    finally:
        older.release.set()
        newer.release.set()
        assert await asyncio.gather(*calls) == [SECRET] * len(calls)


@pytest.mark.asyncio
async def test_a_call_is_running_only_between_its_start_and_its_end_in_a_thread() -> None:
    call = ThreadCall(asyncio.get_running_loop(), threading.get_ident)
    assert call.started_at == NOT_RUNNING  # made, not yet taken by a thread
    await asyncio.to_thread(call.run)
    assert await call != threading.get_ident()  # it ran in the other thread
    assert call.started_at == NOT_RUNNING  # ended


@pytest.mark.asyncio
async def test_stacks_only_on_request() -> None:
    blocked = Blocked()
    call = threaded(blocked.block)(SECRET)
    assert await in_own_thread(blocked.started)
    assert [work.stack for work in snapshot()] == [()]
    assert [work.as_dict()["where"] for work in snapshot()] == [None]  # no stack: nowhere
    blocked.release.set()
    await call


@pytest.mark.asyncio
async def test_nothing_sensitive_leaves_the_process() -> None:
    blocked = Blocked()
    call = threaded(blocked.block)(SECRET)
    assert await in_own_thread(blocked.started)
    dumped = json.dumps([work.as_dict() for work in snapshot(stacks=True)])
    blocked.release.set()
    assert await call == SECRET
    assert SECRET not in dumped
    assert set(json.loads(dumped)[0]) == {
        "function",
        "kind",
        "loop",
        "thread_name",
        "thread_id",
        "submitted",
        "started",
        "running_for",
        "queued_for",
        "limit_wait",
        "items",
        "waiting_for_room",
        "trace_id",
        "stack",
        "executor",
        "awaited_by",
        "waiting_on",
        "where",
    }


@pytest.mark.asyncio
async def test_a_limited_call_shows_its_limit_wait() -> None:
    limiter = CapacityLimiter(1)
    first, second = Blocked(), Blocked()
    holder = threaded(first.block, limit=limiter, name="holder")(SECRET)
    assert await in_own_thread(first.started)
    waiter = threaded(second.block, limit=limiter, name="waiter")(SECRET)
    assert only("holder").limit_wait is None  # it took a free place at once
    first.release.set()
    assert await in_own_thread(second.started)
    assert only("waiter").limit_wait is not None
    assert only("waiter").limit_wait >= 0  # type: ignore[operator]
    second.release.set()
    await asyncio.gather(holder, waiter)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("decorate", "kind"),
    [(threaded_iterable, "iterable"), (threaded_iterable_separate, "iterable_separate")],
)
async def test_a_generator_shows_its_items_and_whether_it_waits_for_room(
    decorate: object, kind: str
) -> None:
    stalled, release = threading.Event(), threading.Event()

    def numbers() -> Generator[int, None, None]:
        yield 1
        yield 2
        stalled.set()
        release.wait(5)  # <- the stalled line
        yield 3

    stream = decorate(numbers, max_size=1, name="numbers")  # type: ignore[operator]
    iterator = stream()
    assert await iterator.__anext__() == 1
    assert await in_own_thread(stalled)
    seen = await waiting_at("numbers", line_of(numbers, "<- the stalled line"))
    assert seen.kind == kind
    assert seen.items == 2
    assert seen.waiting_for_room is False
    assert seen.stack[-1].file.endswith("threading.py")
    own = [frame for frame in seen.stack if frame.file == __file__]
    assert own[-1].line == line_of(numbers, "<- the stalled line")
    release.set()
    assert [item async for item in iterator] == [2, 3]
    # The channel closes before the producer's thread has left its call.
    await turns_until(lambda: snapshot() == [], "the producer's thread ending its call")


@pytest.mark.asyncio
async def test_a_generator_waiting_for_room_is_not_busy() -> None:
    full = threading.Event()
    async with one_ahead_of_its_consumer(full) as numbers:
        assert await numbers.__anext__() == 1
        assert await in_own_thread(full)
        await turns_until(lambda: only("endless").waiting_for_room, "the producer waits for room")
        assert only("endless").items == 2


@pytest.mark.asyncio
async def test_a_traced_call_shows_its_trace_id() -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    provider = sdk_trace.TracerProvider()
    instrumentation.configure(tracer_provider=provider, prometheus=False, structlog=False)
    try:
        blocked = Blocked()
        call = threaded(blocked.block, name="traced")(SECRET)
        assert await in_own_thread(blocked.started)
        trace_id = only("traced").trace_id
        blocked.release.set()
        await call
    finally:
        instrumentation.reset()
        provider.shutdown()
    assert trace_id is not None
    assert len(trace_id) == 32
    assert int(trace_id, 16)


@pytest.mark.asyncio
async def test_an_uninstrumented_call_shows_no_trace_id() -> None:
    instrumentation.configure(enabled=False)
    try:
        blocked = Blocked()
        call = threaded(blocked.block, name="untraced")(SECRET)
        assert await in_own_thread(blocked.started)
        seen = only("untraced")
        blocked.release.set()
        await call
    finally:
        instrumentation.reset()
    assert seen.trace_id is None


@pytest.mark.asyncio
async def test_a_limited_generator_shows_how_long_it_waited_for_its_place() -> None:
    limiter = aiothreads.CapacityLimiter(1)
    running, release = threading.Event(), threading.Event()

    @threaded_iterable(max_size=1, limit=limiter, name="limited_rows")
    def rows() -> Generator[int, None, None]:
        running.set()
        release.wait(5)
        yield 1

    async with limiter:
        stream = rows()
        first = await queued_for_a_place(limiter, stream.__anext__())
    assert await in_own_thread(running)
    seen = only("limited_rows")
    release.set()
    assert await first == 1
    await stream.aclose()
    assert seen.limit_wait is not None
    assert seen.limit_wait > 0


def test_several_loops_in_several_threads(loop_factory: object) -> None:
    started = threading.Barrier(3, timeout=5)
    release = threading.Event()

    @threaded
    def block() -> None:
        started.wait()
        release.wait(5)

    def run_one() -> None:
        loop = loop_factory()  # type: ignore[operator]
        try:
            loop.run_until_complete(block())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    runners = [threading.Thread(target=run_one) for _ in range(2)]
    for runner in runners:
        runner.start()
    started.wait()
    seen = snapshot(stacks=True)
    release.set()
    for runner in runners:
        runner.join(5)
    assert len(seen) == 2
    assert len({work.loop for work in seen}) == 2
    assert len({work.thread_id for work in seen}) == 2
    assert not running()


def test_the_registry_keeps_nothing_alive(loop_factory: object) -> None:
    class Argument:
        pass

    arguments = [Argument()]
    argument_ref = weakref.ref(arguments[0])
    calls: list[weakref.ref[object]] = []
    threads: list[weakref.ref[threading.Thread]] = []

    @threaded_separate
    def remember(value: Argument) -> None:
        threads.append(weakref.ref(threading.current_thread()))

    async def main() -> None:
        call = remember(arguments.pop())
        calls.append(weakref.ref(call))
        await call

    loop = loop_factory()  # type: ignore[operator]
    loop_ref = weakref.ref(loop)
    loop.run_until_complete(main())
    loop.close()
    del loop, main
    for thread in [reference() for reference in threads]:
        if thread is not None:
            thread.join(5)
    del thread
    gc.collect()
    assert not running()
    assert argument_ref() is None
    assert calls[0]() is None
    assert loop_ref() is None
    assert threads[0]() is None


def test_snapshot_is_public_and_documented() -> None:
    assert aiothreads.snapshot is snapshot
    assert snapshot.__doc__
    assert RunningWork.__doc__


@pytest.mark.asyncio
async def test_a_call_whose_caller_gave_up_shows_until_its_thread_ends() -> None:
    blocked = Blocked()
    executor = ThreadPoolExecutor(1)
    call = threaded(blocked.block, name="abandoned", executor=executor)(SECRET)
    assert await in_own_thread(blocked.started)
    call.cancel()
    assert [work.function for work in snapshot()] == ["abandoned"]  # the thread still runs it
    blocked.release.set()
    executor.shutdown(wait=True)  # the thread's end announces no event to the loop
    assert snapshot() == []


@pytest.mark.asyncio
async def test_a_call_the_executor_refused_never_shows() -> None:
    refusing = ThreadPoolExecutor(1)
    refusing.shutdown()
    ran = threading.Event()
    call = threaded(ran.set, executor=refusing)()
    assert snapshot() == []
    with pytest.raises(aiothreads.ExecutorRefused):
        await call
    assert snapshot() == []
    assert not ran.is_set()


def test_a_call_whose_loop_closed_shows_until_its_thread_ends(loop_factory: object) -> None:
    blocked = Blocked()
    executor = ThreadPoolExecutor(1)
    loop = loop_factory()  # type: ignore[operator]
    loop.set_default_executor(executor)

    async def submit() -> object:
        return threaded(blocked.block, name="orphaned")(SECRET)

    loop.run_until_complete(submit())
    assert blocked.started.wait(5)
    loop.close()
    assert [work.function for work in snapshot()] == ["orphaned"]
    blocked.release.set()
    executor.shutdown(wait=True)
    assert snapshot() == []


@pytest.mark.asyncio
async def test_each_call_names_the_task_that_awaits_it_and_that_tasks_coroutine_chain() -> None:
    started, release = threading.Event(), threading.Event()

    @threaded
    def blocking_driver_call(secret: str) -> None:
        started.set()
        release.wait(5)

    async def handle_request() -> None:
        await blocking_driver_call(SECRET)

    request = asyncio.create_task(handle_request(), name="request-42")
    try:
        assert await in_own_thread(started)
        (work,) = [w for w in snapshot(stacks=True) if w.function.endswith("blocking_driver_call")]
        (awaiter,) = work.awaited_by
        assert awaiter.name == "request-42"
        assert [location.function for location in awaiter.stack][-1].endswith("handle_request")
        assert all(location.file == __file__ for location in awaiter.stack)
        (plain,) = [w for w in snapshot() if w.function.endswith("blocking_driver_call")]
        assert [task.name for task in plain.awaited_by] == ["request-42"]
        assert plain.awaited_by[0].stack == ()
        assert plain.waiting_on is None
        assert SECRET not in json.dumps([w.as_dict() for w in snapshot(stacks=True)])
    finally:
        release.set()
        await request


@pytest.mark.asyncio
async def test_a_call_whose_thread_waits_in_sync_await_names_the_task_it_waits_on() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def audit(secret: str) -> None:
        entered.set()
        await release.wait()

    @threaded
    def run_scan() -> None:
        aiothreads.sync_await(audit, SECRET)

    async def scan_job() -> None:
        await run_scan()

    job = asyncio.create_task(scan_job(), name="scan-job")
    try:
        await entered.wait()

        def scan() -> RunningWork:
            (work,) = [w for w in snapshot(stacks=True) if w.function.endswith("run_scan")]
            return work

        # The task started before its thread went on to wait for it.
        await turns_until(lambda: scan().waiting_on is not None, "the thread waits in sync_await")
        work = scan()
        assert [task.name for task in work.awaited_by] == ["scan-job"]
        assert work.waiting_on is not None
        assert work.waiting_on.name == f"sync_await:{audit.__qualname__} from {work.thread_name}"
        assert next(location.function for location in work.waiting_on.stack).endswith("audit")
        # The thread blocks in sync_await's wait (its copy, should a tool have wrapped it).
        assert work.stack[-1].function in {code.co_name for code in WAIT_CODES}
        # Where it is in the application: past aiothreads' frames and the standard library's.
        assert work.where is not None
        assert work.where.file == __file__
        assert work.where.function.endswith("run_scan")
        (awaiting,) = work.awaited_by
        assert awaiting.stack
        assert work.as_dict() == {
            **work.as_dict(),
            "stack": [str(location) for location in work.stack],
            "where": f"{__file__}:{work.where.line} in {work.where.function}",
            "awaited_by": [
                {"name": "scan-job", "stack": [str(location) for location in awaiting.stack]}
            ],
            "waiting_on": {
                "name": work.waiting_on.name,
                "stack": [str(location) for location in work.waiting_on.stack],
            },
        }
        as_json = json.dumps(work.as_dict())
        assert "scan-job" in as_json
        assert SECRET not in as_json
    finally:
        release.set()
        await job


def test_a_routine_is_recognised_by_its_own_code() -> None:
    def run(self: object) -> None: ...

    assert codes_running(run) == {run.__code__}


class WaitingOn:
    """The ``self`` of a frame that waits in ``sync_await``: whatever it holds as ``task``."""

    def __init__(self, task: object) -> None:
        self.task = task


@pytest.mark.asyncio
async def test_the_task_a_thread_waits_on_is_found_above_its_innermost_frame() -> None:
    # The wait blocks in C, its own frame innermost; for a moment it may run
    # Python code of its own (a check of the loop), deeper in the stack.
    def wait(self: object) -> asyncio.Task[Any] | None:
        return check_the_loop()

    def check_the_loop() -> asyncio.Task[Any] | None:
        return _task_waited_for(sys._getframe())

    task = asyncio.create_task(asyncio.sleep(0))
    WAIT_CODES.add(wait.__code__)
    try:
        assert wait(WaitingOn(task)) is task
        assert wait(WaitingOn("not a task yet")) is None
        assert wait(object()) is None  # a waiter that holds no task
        assert check_the_loop() is None  # no wait in the stack
    finally:
        WAIT_CODES.discard(wait.__code__)
        await task


class EndsOnceSeen:
    """Work whose thread ends it just after a snapshot first reads its start time."""

    def __init__(self, started_at: float) -> None:
        self.reads = 0
        self.first_start = started_at
        self.about = ("threaded", "jobs.ending", None, None, None)
        self.submitted_at = started_at
        self.probe = None

    @property
    def started_at(self) -> float:
        self.reads += 1
        return self.first_start if self.reads == 1 else NOT_RUNNING

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def trace_ids(self) -> None:
        return None


@pytest.mark.asyncio
async def test_a_call_ending_during_a_snapshot_keeps_the_start_time_first_read() -> None:
    # Its thread may end it between two reads of its start time: the time read
    # once is used throughout, never the "not running" mark that follows.
    def run(self: object, look: Callable[[], Any]) -> Any:
        return look()

    started = time.monotonic()
    WORK_CODES.add(run.__code__)
    try:
        ((work, started_at),) = run(EndsOnceSeen(started), running).values()
        (entry,) = run(EndsOnceSeen(started), snapshot)
    finally:
        WORK_CODES.discard(run.__code__)
    assert isinstance(work, EndsOnceSeen)
    assert started_at == started
    assert entry.function == "jobs.ending"
    assert entry.queued_for == 0.0
    assert entry.started == pytest.approx(entry.submitted, abs=1e-6)


TRAMPOLINE = """
def trampoline(copies, is_classmethod):
    def dispatch(*args, **kwargs):
        if is_classmethod:
            args = args[1:]
        return copies["original"](*args, **kwargs)

    def wrapper(*args, **kwargs):
        return dispatch(*args, **kwargs)

    copies["wrapper"] = wrapper  # what a registry of copies may hold: a cycle back
    return wrapper, dispatch
"""
"""The shape of a mutation tester's trampoline, in a file of the tool's own."""


def test_a_wrapped_routine_is_recognised_by_the_copies_its_wrapper_runs(tmp_path: Path) -> None:
    # The wrapper, shared by every routine it wraps, runs one of several copies
    # of the body, found through its closure, and carries the original as
    # ``__wrapped__``.
    def run(self: object, *, timeout: float | None = None) -> None: ...

    def run_copy(self: object, *, timeout: float | None = None) -> None: ...

    def run_variant(self: object, *, timeout: float | None = None) -> None:
        deadline = timeout  # a copy may have locals the original has not
        del deadline

    tool = str(tmp_path / "trampoline.py")  # a file no earlier test made known
    namespace: dict[str, Any] = {}
    exec(compile(TRAMPOLINE, tool, "exec"), namespace)
    # The same copy twice, found before the other one: each is looked at once.
    copies = {"variant": run_variant, "original": run_copy, "first": run_copy}
    wrapper, dispatch = namespace["trampoline"](copies, False)
    functools.update_wrapper(wrapper, run)

    codes = codes_running(wrapper)

    assert {run_copy.__code__, run_variant.__code__} <= codes
    # Neither the wrapper nor what it dispatches with: they run no call, as
    # frames of every routine they wrap.
    assert wrapper.__code__ not in codes
    assert dispatch.__code__ not in codes
    # Their frames, between the application's and aiothreads', are neither's.
    assert tool in WRAPPER_FILES
    assert tool not in {own.__code__.co_filename for own in (run, run_copy)}


TOOL_CALL = """
def calling(function, *args):
    return function(*args)
"""
"""A tool's frame that calls the function a call runs (one that wraps aiothreads)."""


@pytest.mark.asyncio
async def test_where_and_the_stack_pass_over_a_tool_that_wraps_aiothreads() -> None:
    tool = "/opt/tool/calling.py"
    namespace: dict[str, Any] = {}
    exec(compile(TOOL_CALL, tool, "exec"), namespace)
    WRAPPER_FILES.add(tool)
    blocked = Blocked()
    call = threaded(functools.partial(namespace["calling"], blocked.block))(SECRET)
    try:
        await in_own_thread(blocked.started)
        (work,) = snapshot(stacks=True)
        assert work.stack[0].function == "block"  # the tool's frame before it is left out
        assert work.where == work.stack[0]
        application = CodeLocation("/srv/app/jobs.py", 10, "scan")
        own = CodeLocation(str(Path(aiothreads._inflight.__file__).resolve()), 3, "wait")
        in_between = CodeLocation(tool, 3, "calling")
        assert dataclasses.replace(work, stack=(application, in_between, own)).where == application
    finally:
        WRAPPER_FILES.discard(tool)
        blocked.release.set()
        await call


@pytest.mark.asyncio
async def test_where_passes_over_aiothreads_and_the_standard_library_not_installed_packages() -> (
    None
):
    standard_library = Path(threading.__file__).resolve().parent
    application = CodeLocation("/srv/app/jobs.py", 10, "scan")
    installed = CodeLocation(f"{standard_library}/site-packages/driver/io.py", 5, "read")
    standard = CodeLocation(f"{standard_library}/socket.py", 9, "recv")
    own = CodeLocation(str(Path(aiothreads._inflight.__file__).resolve()), 3, "wait")
    blocked = Blocked()
    call = threaded(blocked.block)(SECRET)
    try:
        await in_own_thread(blocked.started)
        (work,) = snapshot()

        def where(*stack: CodeLocation) -> CodeLocation | None:
            return dataclasses.replace(work, stack=stack).where

        assert where(application, installed, standard, own) == installed
        assert where(application, standard, own) == application
        assert where(application, own) == application
        assert where(own, standard) == standard  # nothing of the application: the innermost
        assert where() is None
    finally:
        blocked.release.set()
        await call


def name_in_stacks(function: Callable[..., Any]) -> str:
    """The name a stack gives ``function``'s frames: qualified from Python 3.11 on."""
    code = function.__code__
    return str(getattr(code, "co_qualname", code.co_name))


@pytest.mark.asyncio
async def test_a_tasks_coroutine_chain_is_followed_outermost_first_and_cut_at_its_depth() -> None:
    started, release = threading.Event(), threading.Event()

    @threaded
    def blocking_driver_call() -> None:
        started.set()
        release.wait(5)

    async def nested(depth: int) -> None:
        if depth == 0:
            await blocking_driver_call()  # <- the innermost waits here
        else:
            await nested(depth - 1)  # <- the others wait here

    async def handle_request(depth: int) -> None:
        await nested(depth)  # <- the request waits here

    shallow = asyncio.create_task(handle_request(1), name="shallow")
    deep = asyncio.create_task(handle_request(STACK_DEPTH + 5), name="deep")
    try:
        assert await in_own_thread(started)
        await turns_until(
            lambda: len(snapshot()) == 2 and all(w.awaited_by for w in snapshot()),
            "both requests await their calls",
        )
        chains = {
            task.name: task.stack for work in snapshot(stacks=True) for task in work.awaited_by
        }
        # Each coroutine where it is suspended now, not where its definition starts.
        assert [(location.function, location.line) for location in chains["shallow"]] == [
            (name_in_stacks(handle_request), line_of(handle_request, "<- the request waits here")),
            (name_in_stacks(nested), line_of(nested, "<- the others wait here")),
            (name_in_stacks(nested), line_of(nested, "<- the innermost waits here")),
        ]
        assert len(chains["deep"]) == STACK_DEPTH
        assert chains["deep"][0].function == name_in_stacks(handle_request)
    finally:
        release.set()
        await asyncio.gather(shallow, deep)


@pytest.mark.asyncio
async def test_the_stack_starts_at_the_calls_own_function_wherever_it_lives() -> None:
    # A private module of the application ("_driver.py") is not aiothreads' plumbing,
    # and every frame from the call's function to the innermost is kept.
    driver = "/srv/app/_driver.py"
    source = (
        "def query(block):\n    return wait_for(block)\n\n\n"
        "def wait_for(block):\n    return block()\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, driver, "exec"), namespace)  # a module with a path of its own
    blocked = Blocked()
    call = threaded(namespace["query"])(functools.partial(blocked.block, SECRET))
    try:
        assert await in_own_thread(blocked.started)
        (work,) = snapshot(stacks=True)
        assert [(location.file, location.function) for location in work.stack[:3]] == [
            (driver, "query"),
            (driver, "wait_for"),
            (__file__, "block"),
        ]
        assert all(location.file.endswith("threading.py") for location in work.stack[3:])
    finally:
        blocked.release.set()
        await call


@pytest.mark.asyncio
async def test_a_deep_stack_keeps_its_innermost_frames() -> None:
    blocked = Blocked()

    def descend(depth: int) -> str:
        if depth == 0:
            return blocked.block(SECRET)
        return descend(depth - 1)

    call = threaded(descend, name="deep_call")(STACK_DEPTH + 10)
    try:
        assert await in_own_thread(blocked.started)
        # The frames kept are the innermost ones: the line the thread blocks on is among them.
        seen = await waiting_at("deep_call", line_of(Blocked.block, "<- the blocking line"))
        assert len(seen.stack) == STACK_DEPTH
        assert seen.stack[-1].file.endswith("threading.py")  # the wait itself, innermost
    finally:
        blocked.release.set()
        assert await call == SECRET
