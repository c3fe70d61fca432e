"""Work running in threads right now: what it is, who runs it, since when, and where it is.

Nothing is registered as calls start and end: a call only notes the time its
thread started it. ``snapshot()`` finds running work where it is, in the
threads' stacks (``sys._current_frames()``): each frame of a routine in
``WORK_CODES`` (the one that runs a call in its thread) belongs to a call, and
the innermost one is what that thread runs now. So asking costs a walk over
the threads' stacks, and not asking costs nothing. It reports function names,
code locations and timings, never argument values, results or local variables.

Calls handed to an executor that runs them in another process are the
exception: no thread here runs them, so each is noted (``went_away``) while
its executor holds it, and shown with that executor's name instead of a
thread and a stack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from ._asyncio_internals import awaiting_tasks, is_task

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

__all__ = [
    "NOT_RUNNING",
    "WAIT_CODES",
    "WORK_CODES",
    "WRAPPER_FILES",
    "About",
    "AwaitingTask",
    "CodeLocation",
    "Running",
    "RunningWork",
    "SlowCallReporter",
    "came_back",
    "codes_running",
    "coroutine_stack",
    "running",
    "snapshot",
    "stack_of",
    "thread_frames",
    "thread_names",
    "went_away",
]

About = tuple[str, str, "float | None", "Any", "SlowCallReporter | None"]
"""What a piece of work is: ``(kind, function, limit wait, channel, stream probe)``.

The limit wait is in seconds (``None`` without ``limit=``). Streams carry
their channel, which knows the items handed over so far and whether the
generator waits for room, and their probe (``None`` when not instrumented);
calls carry ``None`` for both.
"""


class SlowCallReporter(Protocol):
    """The telemetry of one call: where a slow call is counted, noted and logged."""

    def slow(self, elapsed: float, details: dict[str, Any]) -> None:
        """Report the call slow after ``elapsed`` seconds.

        ``details`` are the log fields beyond the function and kind, which the
        reporter knows: elapsed, thread, thread_id and stack.
        """
        ...

    def trace_ids(self) -> tuple[str, str] | None:
        """Return the call's trace id and span id, if it is traced."""
        ...


class Running(Protocol):
    """A call or a generator's producer, as a thread runs it."""

    @property
    def probe(self) -> SlowCallReporter | None:
        """Its telemetry, if it has any."""
        ...

    @property
    def about(self) -> About:
        """Its kind, function name, limit wait and channel (streams only)."""
        ...

    @property
    def submitted_at(self) -> float:
        """When it was handed to a thread, on ``time.monotonic()``'s clock."""
        ...

    @property
    def started_at(self) -> float:
        """When its thread started it (``time.monotonic()``); ``NOT_RUNNING``: not now."""
        ...

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """Return the event loop its caller awaits it on."""
        ...

    def trace_ids(self) -> tuple[str, str] | None:
        """Its span's trace id and span id, if it is traced."""
        ...


NOT_RUNNING: Final = -1.0
"""``started_at`` of work that has not started running in its thread, or has ended."""

WORK_CODES: Final[set[CodeType]] = set()
"""The code of the routines that run a call in its thread, with the call as ``self``."""

WAIT_CODES: Final[set[CodeType]] = set()
"""The code of the routines in which a thread waits for a task on a loop
(``sync_await``), with an object whose ``task`` is that task as ``self``."""

WRAPPER_FILES: Final[set[str]] = set()
"""Files of code that wraps the package's routines (``codes_running``): their
frames are passed over in stacks as the package's own are."""


def codes_running(function: Callable[..., Any]) -> set[CodeType]:
    """Return the code objects whose frames run ``function``'s body: its own, normally.

    A tool that wraps the package's functions (a mutation tester's
    trampoline, say) runs the body in copies of it that the wrapper reaches
    through its closure, and the wrapper's own code may be shared by every
    function it wraps. For such a function (one with ``__wrapped__``) the
    codes are those of the functions reachable from the wrapper's closure
    that take the same parameters, and not the wrapper's. The wrapper's file
    joins ``WRAPPER_FILES``: its frames stand between the application's
    code and the package's, and belong to neither.
    """
    wrapped = getattr(function, "__wrapped__", None)
    if wrapped is None:
        return {function.__code__}
    WRAPPER_FILES.add(function.__code__.co_filename)
    parameters = _parameters(wrapped.__code__)
    codes: set[CodeType] = set()
    seen: set[int] = set()
    reachable: list[Any] = [function, wrapped]
    while reachable:
        found = reachable.pop()
        if id(found) in seen:
            continue
        seen.add(id(found))
        if isinstance(found, dict):
            reachable.extend(cast("dict[object, object]", found).values())
            continue
        code = getattr(found, "__code__", None)
        if code is None:
            continue
        if _parameters(code) == parameters:
            codes.add(code)
        reachable.extend(cell.cell_contents for cell in found.__closure__ or ())
    return codes


def _parameters(code: CodeType) -> tuple[str, ...]:
    count = code.co_argcount + code.co_kwonlyargcount
    return code.co_varnames[:count]


STACK_DEPTH: Final = 40
"""Innermost frames kept in a stack."""

_PACKAGE: Final = Path(__file__).resolve().parent
_PLUMBING_FILES: Final = (
    threading.__file__,
    str(Path(threading.__file__).parent / "concurrent" / "futures" / "thread.py"),
)


@dataclasses.dataclass(frozen=True)
class CodeLocation:
    """One frame of a thread's stack: where, never what (no local variables)."""

    file: str
    line: int | None
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


@dataclasses.dataclass(frozen=True)
class AwaitingTask:
    """An asyncio task linked to running work, as ``snapshot()`` saw it."""

    name: str
    """The task's name (``asyncio.Task.get_name()``)."""
    stack: tuple[CodeLocation, ...] = ()
    """Its coroutine chain, outermost first, where each coroutine is suspended
    now (empty unless asked for, or once the task is done)."""

    def as_dict(self) -> dict[str, Any]:
        """Return it as plain JSON-ready values."""
        return {"name": self.name, "stack": [str(location) for location in self.stack]}


@dataclasses.dataclass(frozen=True)
class RunningWork:
    """One call or threaded generator running in a thread, as ``snapshot()`` saw it.

    Times are seconds since the epoch (``submitted``, ``started``) and
    seconds (the rest).
    """

    function: str
    """The qualified name (or ``name=``) of the decorated function."""
    kind: str
    """``threaded``, ``separate``, ``iterable`` or ``iterable_separate``."""
    loop: str
    """The event loop the caller awaits on: its type and id."""
    thread_name: str
    thread_id: int
    submitted: float
    started: float
    running_for: float
    """Seconds since its thread started it."""
    queued_for: float
    """Seconds between submission and start."""
    limit_wait: float | None
    """Seconds it waited for a place under ``limit=``, if it has one."""
    items: int | None
    """Items a generator handed over so far; ``None`` for calls."""
    waiting_for_room: bool | None
    """Whether a generator waits for its consumer (its channel is full); ``None`` for calls."""
    trace_id: str | None
    """The trace its span belongs to, when it is traced."""
    stack: tuple[CodeLocation, ...]
    """Its thread's stack, innermost last, from the first frame outside the
    thread machinery (empty unless asked for)."""
    executor: str | None = None
    """The executor's class, for a call that runs outside this process (a
    process pool, a dask cluster): its thread is elsewhere, so its thread name
    is empty, its thread id 0 and its stack empty, and it counts as started
    when its executor took it. ``None`` for work in this process's threads."""
    awaited_by: tuple[AwaitingTask, ...] = ()
    """The tasks that await this call now (the call's caller, usually one);
    empty for generators, whose consumer awaits items, not the call."""
    waiting_on: AwaitingTask | None = None
    """The task this call's thread blocks on now through ``sync_await`` (and
    its relatives): the coroutine it started on the loop."""

    @property
    def where(self) -> CodeLocation | None:
        """The innermost frame of the stack in the application's own code.

        Frames of the standard library and of aiothreads itself (a thread
        waiting in ``threading``, or in ``sync_await``), and of a tool that
        wraps aiothreads' functions, are passed over; ``None`` without a stack.
        """
        for location in reversed(self.stack):
            if not _is_library(location.file):
                return location
        return self.stack[-1] if self.stack else None

    def as_dict(self) -> dict[str, Any]:
        """Return it as plain JSON-ready values (the stack as ``file:line in function``)."""
        fields = dataclasses.asdict(self)
        fields["stack"] = [str(location) for location in self.stack]
        fields["where"] = None if self.where is None else str(self.where)
        fields["awaited_by"] = [task.as_dict() for task in self.awaited_by]
        fields["waiting_on"] = None if self.waiting_on is None else self.waiting_on.as_dict()
        return fields


def snapshot(*, stacks: bool = False) -> list[RunningWork]:
    """Return the decorated calls and threaded generators running in threads now.

    Covers every event loop and thread of the process; longest-running
    first. Calls waiting for a worker or for a ``limit=`` place are not
    running yet and do not appear (``aiothreads_calls_queued`` counts them).
    Calls an executor runs outside this process (a process pool, a dask
    cluster) appear from the moment it took them until their outcome
    arrives, with the executor's name and no thread or stack: whether one
    still waits for a worker there is not known here.

    ```python
    import asyncio
    import threading

    import aiothreads

    started, release = threading.Event(), threading.Event()


    @aiothreads.threaded
    def wait_for_release() -> None:
        started.set()
        release.wait()


    async def main() -> list[str]:
        call = wait_for_release()
        await asyncio.to_thread(started.wait)
        seen = [work.function for work in aiothreads.snapshot(stacks=True)]
        release.set()
        await call
        return seen


    assert [name.rsplit(".")[-1] for name in asyncio.run(main())] == ["wait_for_release"]
    ```

    Args:
        stacks: Also capture each thread's current stack (file, line,
            function), trimmed to the frames from the decorated function on.
    """
    frames = thread_frames()
    running = _running_in(frames)
    with _away_lock:
        away = list(_away.items())
    if not running and not away:
        return []
    names = thread_names()
    now, wall = time.monotonic(), time.time()
    found = [
        _describe(
            ident,
            work,
            started,
            names.get(ident, "?"),
            frames.get(ident),
            now=now,
            wall=wall,
            stacks=stacks,
        )
        for ident, (work, started) in running.items()
    ]
    found.extend(
        _describe(
            0,
            work,
            work.submitted_at,
            "",
            None,
            now=now,
            wall=wall,
            stacks=stacks,
            executor=executor,
        )
        for work, executor in away
    )
    found.sort(key=lambda work: -work.running_for)
    return found


def _describe(
    ident: int,
    work: Running,
    started: float,
    thread_name: str,
    frame: FrameType | None,
    *,
    now: float,
    wall: float,
    stacks: bool = False,
    executor: str | None = None,
) -> RunningWork:
    kind, function, limit_wait, channel, _ = work.about
    submitted = work.submitted_at
    items = waiting = None
    if channel is not None:
        items, waiting = channel.items_put, channel.waiting_for_room
    loop = work.get_loop()
    ids = work.trace_ids()
    awaited_by: tuple[AwaitingTask, ...] = ()
    if isinstance(work, asyncio.Future):
        awaited_by = tuple(_task_seen(task, stacks) for task in _tasks_awaiting(work))
    waited_for = None if frame is None else _task_waited_for(frame)
    return RunningWork(
        function=function,
        kind=kind,
        loop=f"{type(loop).__name__}@{id(loop):x}",
        thread_name=thread_name,
        thread_id=ident,
        submitted=wall - (now - submitted),
        started=wall - (now - started),
        running_for=now - started,
        queued_for=max(0.0, started - submitted),
        limit_wait=limit_wait,
        items=items,
        waiting_for_room=waiting,
        trace_id=None if ids is None else ids[0],
        stack=stack_of(frame) if frame is not None and stacks else (),
        executor=executor,
        awaited_by=awaited_by,
        waiting_on=None if waited_for is None else _task_seen(waited_for, stacks),
    )


def _tasks_awaiting(future: asyncio.Future[Any]) -> tuple[asyncio.Task[Any], ...]:
    """Return the tasks awaiting ``future``, read from another thread than its loop's."""
    for _ in range(3):
        try:
            return awaiting_tasks(future)
        except RuntimeError:  # its loop changed the set as it was read: read again
            continue
    return ()


def _task_waited_for(innermost: FrameType) -> asyncio.Task[Any] | None:
    """Return the task a thread blocks on in ``sync_await``, found in its stack."""
    frame: FrameType | None = innermost
    while frame is not None:
        code = frame.f_code
        if code in WAIT_CODES:
            task: Any = getattr(frame.f_locals.get("self"), "task", None)  # nothing else is read
            return task if is_task(task) else None
        if code in WORK_CODES:
            return None
        frame = frame.f_back
    return None


def _task_seen(task: asyncio.Task[Any], stacks: bool) -> AwaitingTask:
    return AwaitingTask(task.get_name(), coroutine_stack(task) if stacks else ())


def coroutine_stack(task: asyncio.Task[Any]) -> tuple[CodeLocation, ...]:
    """Return where ``task``'s coroutines are suspended, outermost first.

    Follows each coroutine to the one it awaits, as asyncio's call graph does;
    reads code locations only.
    """
    locations: list[CodeLocation] = []
    coro: Any = task.get_coro()
    while coro is not None and len(locations) < STACK_DEPTH:
        frame = getattr(coro, "cr_frame", None)
        if frame is None:  # not a native coroutine, or finished
            break
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)
        locations.append(CodeLocation(code.co_filename, frame.f_lineno, name))
        coro = getattr(coro, "cr_await", None)
    return tuple(locations)


_away: dict[Running, str] = {}
"""Calls running outside this process now, with their executor's class name."""
_away_lock = threading.Lock()


def went_away(work: Running, executor: str) -> None:
    """Note that ``executor`` (a class name) took ``work`` to run it outside this process."""
    with _away_lock:
        _away[work] = executor


def came_back(work: Running) -> None:
    """Forget ``work`` noted by ``went_away``: its outcome has arrived (or never will)."""
    with _away_lock:
        _away.pop(work, None)


def running(frames: dict[int, FrameType] | None = None) -> dict[int, tuple[Running, float]]:
    """Return the work each thread runs now and when it started, by thread id.

    ``frames`` (from ``thread_frames()``) saves a second look at the stacks.
    """
    return _running_in(thread_frames() if frames is None else frames)


def _running_in(frames: dict[int, FrameType]) -> dict[int, tuple[Running, float]]:
    found: dict[int, tuple[Running, float]] = {}
    for ident, innermost in frames.items():
        frame: FrameType | None = innermost
        while frame is not None:
            if frame.f_code in WORK_CODES:
                work: Running | None = frame.f_locals.get("self")  # nothing else is read
                if work is not None:
                    started = work.started_at  # read once: it may end meanwhile
                    if started != NOT_RUNNING:
                        found[ident] = (work, started)
                break
            frame = frame.f_back
    return found


def thread_names() -> dict[int | None, str]:
    """Return each live thread's name, by thread id."""
    return {thread.ident: thread.name for thread in threading.enumerate()}


def thread_frames() -> dict[int, FrameType]:
    """Return each thread's current frame, by thread id."""
    return sys._current_frames()  # pyright: ignore[reportPrivateUsage] - documented, no public twin


def stack_of(frame: FrameType) -> tuple[CodeLocation, ...]:
    """Return the code locations of ``frame``'s stack, innermost last.

    The frames of the thread machinery (``threading``, the executor's worker,
    aiothreads' own plumbing) before the first other frame are left out, and
    at most ``STACK_DEPTH`` innermost frames are kept.
    """
    summary = traceback.extract_stack(frame)
    first = 0
    while first < len(summary) and _is_plumbing(summary[first].filename):
        first += 1
    kept = summary[first:][-STACK_DEPTH:]
    return tuple(CodeLocation(entry.filename, entry.lineno, entry.name) for entry in kept)


_STANDARD_LIBRARY: Final = str(Path(threading.__file__).resolve().parent)


def _is_library(filename: str) -> bool:
    """Whether ``filename`` is part of the standard library or of aiothreads."""
    if filename in WRAPPER_FILES:
        return True
    path = Path(filename)
    if path.parent == _PACKAGE:
        return True
    return filename.startswith(_STANDARD_LIBRARY) and "site-packages" not in filename


def _is_plumbing(filename: str) -> bool:
    if filename in _PLUMBING_FILES or filename in WRAPPER_FILES:
        return True
    path = Path(filename)
    return path.parent == _PACKAGE and path.name.startswith("_")
