"""Run a callable in a worker thread and resolve an asyncio future with its outcome.

Semantics, for every call that goes through ``run_in_executor`` or
``run_in_new_thread``:

* The returned future belongs to the loop; the thread hands the outcome to the
  loop's inbox (``aiothreads._inbox``), so no ``concurrent.futures`` round
  trip is involved, and the caller resumes in the loop turn it arrives
  (``CallFuture``). Where the loop keeps its default
  executor private (uvloop), the loop's own ``run_in_executor`` future is
  returned instead.
* A call whose future was cancelled before a thread picked it up never runs.
  Cancelling later does not interrupt the thread; its outcome is dropped.
* Exceptions keep their type and their traceback frames from the thread.
  ``StopIteration``, which a future cannot hold, arrives as a ``RuntimeError``
  chained to it. An ``asyncio.CancelledError`` raised in the thread cancels the
  future.
* If the loop closed before the outcome could be delivered it is dropped
  silently: nobody is left to receive it.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, cast

from ._asyncio_internals import (
    default_executor_of,
    executor_shut_down,
    remember_default_executor,
)
from ._cancellation import run_as_call
from ._errors import ExecutorRefused
from ._future import CallFuture
from ._inbox import inbox_for
from ._inflight import NOT_RUNNING, WORK_CODES, came_back, codes_running, went_away
from ._log import emit
from ._loops import release_if_closed, running_loop_or_none
from ._names import qualified_name
from ._outcomes import CANCELLED, ERROR, OK, Refusal, outcome_of
from ._pool import WorkerPool
from ._pool_state import count_refusal, pool_name, refusal_of, watch
from ._remote import carried_call, check_picklable, runs_elsewhere
from ._watchdog import WATCHDOG

if TYPE_CHECKING:
    import concurrent.futures
    import contextvars
    from collections.abc import Callable, Mapping
    from concurrent.futures import Executor

    from ._inflight import About, SlowCallReporter
    from .instrumentation._backends import Series
    from .instrumentation._probes import CallProbe, FunctionTelemetry

__all__ = ["default_executor", "refused_call", "run_in_executor", "run_in_new_thread"]

T = TypeVar("T")

_monotonic: Final = time.monotonic
_perf_counter: Final = time.perf_counter


Arguments: TypeAlias = "tuple[tuple[Any, ...], Mapping[str, Any], contextvars.Context | None]"
"""How to call a function in a thread: ``(args, kwargs, context)``.

With a context, the function runs inside it as an aiothreads call (with
``EVENT_LOOP`` and a cancel scope); with ``None``, it is just called.
"""

NO_ARGUMENTS: Final[Arguments] = ((), MappingProxyType({}), None)

ExecutorFuture: TypeAlias = "concurrent.futures.Future[T] | asyncio.Future[T]"
"""What an executor's ``submit()`` returns: a ``concurrent.futures`` or an asyncio future."""

_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


class ThreadCall(CallFuture[T]):
    """A call handed to a thread: the future its caller awaits, and the work the thread runs.

    Its ``run``, called in the thread, runs the function unless the
    future was cancelled first, then hands the outcome to the loop's inbox,
    which settles the future. One object per call serves as both, so starting
    a call allocates nothing else. The arguments are let go once the function
    ran. The future itself is not callable: calling it by mistake cannot run
    the function a second time.

    With a context the function runs inside it as an aiothreads call:
    [`EVENT_LOOP`][aiothreads.EVENT_LOOP] is set to the loop and this object is the
    call's cancel scope (see ``aiothreads._cancellation``).
    """

    __slots__ = (
        "_about",
        "_arguments",
        "_claim",
        "_counted",
        "_counted_since",
        "_counts",
        "_elsewhere",
        "_func",
        "_inbox",
        "_on_finish",
        "_probe",
        "_started",
        "_submitted",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        func: Callable[..., T],
        call: Arguments = NO_ARGUMENTS,
        probe: CallProbe | None = None,
        on_finish: Callable[[], None] | None = None,
        *,
        about: About | None = None,
        counted: FunctionTelemetry | None = None,
    ) -> None:
        """Make the call; ``counted``, instead of a probe, counts one only metrics record.

        Such a call is counted here as submitted (with its limit wait, if
        ``about`` has one), and into ``counted.series`` as it runs: no
        probe is made for the common path.
        """
        super().__init__(loop=loop)
        self._inbox = inbox_for(loop)
        self._func = func
        self._arguments = call
        self._probe = probe
        self._on_finish = on_finish
        self._about = about
        self._submitted = _monotonic()
        self._started = NOT_RUNNING
        self._claim: list[bool] | None = None
        self._counted = counted
        if counted is not None:
            counts: Series = counted.series  # type: ignore[assignment]  # countable: it has one
            self._counts = counts
            self._counted_since = _perf_counter()
            counts.submitted()
            if about is not None and about[2] is not None:
                counts.limit_waited(about[2])

    def settle_on_cancel(self) -> None:
        """Let a cancellation settle the books at once, while the call waits in a queue.

        For a queue the call cannot be taken out of (aiothreads' pool): its
        limit place and its count as queued are given back when its caller
        cancels, not when a worker reaches it. Whoever takes the claim first,
        the cancellation or the worker, settles the call; the other does
        nothing. Calls with no books to settle need no claim.
        """
        if self._probe is not None or self._counted is not None or self._on_finish is not None:
            self._claim = [True]

    def _take_claim(self) -> bool:
        """Whether this thread may settle the call (run it or skip it): once, for one side."""
        claim = self._claim
        if claim is None:
            return True
        try:
            return claim.pop()  # atomic: only one side gets the item
        except IndexError:
            return False

    @property
    def about(self) -> About:
        """What runs: kind, function name, limit wait, channel (for ``snapshot()``)."""
        return self._about or ("threaded", qualified_name(self._func), None, None, None)

    def __repr__(self) -> str:
        # asyncio's own, with the function after the state: "<ThreadCall pending
        # mod.func>", also where asyncio logs an exception as never retrieved.
        parts = super().__repr__().removesuffix(">").split(" ", 2)
        parts.insert(min(len(parts), 2), self.about[1])
        return " ".join(parts) + ">"

    @property
    def submitted_at(self) -> float:
        """When the call was made, on ``time.monotonic()``'s clock."""
        return self._submitted

    @property
    def started_at(self) -> float:
        """When a thread started running it, on ``time.monotonic()``'s clock.

        ``NOT_RUNNING`` before its thread starts it and once it has ended.
        """
        return self._started

    def trace_ids(self) -> tuple[str, str] | None:
        """Return the trace and span id of the call's (or its stream's) span, if it is traced."""
        probe = self.probe
        return None if probe is None else probe.trace_ids()

    @property
    def probe(self) -> SlowCallReporter | None:
        """What records the telemetry of the call, or of the stream it produces."""
        probe = self._own_probe()
        if probe is not None:
            return probe
        return None if self._about is None else self._about[4]

    def _own_probe(self) -> CallProbe | None:
        """Return the call's own probe (not its stream's).

        A call counted without one gets one made now, for what is rare (a
        refusal, a slow call); it counts nothing more as it is made.
        """
        if self._counted is not None:
            return self._counted.counting_probe(self._counted_since)
        return self._probe

    @property
    def future(self) -> asyncio.Future[T]:
        """The future the caller awaits: this call itself (the cancel scope's view)."""
        return self

    def run(self) -> None:  # noqa: PLR0912 - every call runs this: a helper would be a frame more
        """Run the function in this thread unless cancelled, and hand its outcome to the loop."""
        claim = self._claim
        if claim is not None:
            try:
                claim.pop()  # atomic: the cancellation and this thread cannot both get it
            except IndexError:
                return  # cancelled while queued, and settled then
        if self.cancelled():
            self._skip()
            return
        args, kwargs, context = self._arguments
        self._arguments = NO_ARGUMENTS
        probe = self._probe
        if probe is not None:
            probe.running(context)
        counted = self._counted
        started = 0.0  # when a counted call started, on ``time.perf_counter()``'s clock
        if counted is not None:
            started = _perf_counter()
            self._counts.started(started - self._counted_since)
        self._started = _monotonic()  # snapshot() finds this frame while the call runs
        if WATCHDOG.on:
            WATCHDOG.work_started()
        settle: Callable[[Any], None]
        error: BaseException | None
        try:
            if context is None:
                outcome: object = self._func(*args, **kwargs)
            else:
                outcome = context.run(run_as_call, self, self.get_loop(), self._func, args, kwargs)
        except BaseException as exc:
            settle, outcome, error = self.fail, _storable(exc), exc
        else:
            settle, error = self.resolve, None
        self._started = NOT_RUNNING  # ended: snapshot() no longer shows it
        del args, kwargs, context
        if probe is not None:
            probe.finished(outcome_of(error, self.cancelled()), error)
        elif counted is not None:
            duration = _perf_counter() - started
            cancelled = self.cancelled()
            ended = OK if error is None and not cancelled else outcome_of(error, cancelled)
            self._counts.finished(ended, duration)
        if self._on_finish is not None:
            self._on_finish()
        self._deliver(settle, outcome)

    def _skip(self, outcome: str = CANCELLED, error: BaseException | None = None) -> None:
        """Report a call that never ran and give its limit place back."""
        context = self._arguments[2]
        self._arguments = NO_ARGUMENTS
        probe = self._own_probe()
        if probe is not None:
            probe.skipped(outcome, error, context)
        if self._on_finish is not None:
            self._on_finish()

    def function_and_arguments(self) -> tuple[Callable[..., T], tuple[Any, ...], Mapping[str, Any]]:
        """Return what to call, for an executor that runs it elsewhere (another process)."""
        args, kwargs, _ = self._arguments
        return self._func, args, kwargs

    def trace_headers(self) -> Mapping[str, str]:
        """Open the call's span as its work leaves this process; return what carries it along.

        The W3C trace context and baggage, empty when the call is not traced.
        Called on the loop's thread, in the caller's context.
        """
        counted = self._counted
        if counted is not None:  # it records no span: the running context's trace goes along
            return counted.carried_headers()
        return _NO_HEADERS if self._probe is None else self._probe.carry()

    def running_elsewhere(self, work: ExecutorFuture[T], executor: str) -> None:
        """Settle this call from ``work``, run in another process by ``executor`` (a class name).

        Called on the loop's thread once the executor took the call. Until
        ``work`` is done the call keeps its limit place and shows in
        ``snapshot()``. Cancelling the call cancels ``work``, which only
        stops it if no worker has started it: the outcome of work that runs
        on is dropped when it arrives.
        """
        self._arguments = NO_ARGUMENTS
        if self._probe is not None:
            self._probe.running()
        elif self._counted is not None:
            started = _perf_counter()
            self._counts.started(started - self._counted_since)
            self._counted_since = started  # from now on it times the run
        went_away(self, executor)
        self._elsewhere = work
        on_loop_of(work, work.add_done_callback, self._came_back)

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the call; work handed to another process is cancelled there at once.

        That is best effort: the executor drops the work only if no worker
        has started it. Cancelling it now, not a loop turn later, leaves the
        workers no time to reach it meanwhile.
        """
        if not super().cancel(msg):
            return False
        if self._claim is not None and self._take_claim():
            self._skip()  # queued in aiothreads' pool: its worker will find nothing to do
            return True
        work: ExecutorFuture[T] | None = getattr(self, "_elsewhere", None)  # set on remote paths
        if work is not None and not work.done():
            on_loop_of(work, work.cancel)
        return True

    def _came_back(self, work: ExecutorFuture[T]) -> None:
        """Hand ``work``, now done, to the loop, which settles the call from it.

        Called wherever ``work`` completed (an executor's thread, often): it
        does no more there than post, since that thread may be what limits
        the executor's throughput. Should the loop be closed, the books are
        settled here, and the outcome is dropped.
        """
        try:
            self._inbox.post(self._settle_from, work)
        except RuntimeError:  # the loop is closed: nobody is left to receive it
            self._settle_books(work)
            self._deliver(self.resolve, None)  # reports the outcome dropped

    def _settle_from(self, work: ExecutorFuture[T]) -> None:
        """Settle the call from ``work`` (on the loop's thread).

        Work the executor cancelled (or dropped at shutdown) cancels the call.
        """
        error = self._settle_books(work)
        if work.cancelled():
            self.fail(asyncio.CancelledError())
        elif error is not None:
            self.fail(error)
        else:
            self.resolve(work.result())

    def _settle_books(self, work: ExecutorFuture[T]) -> BaseException | None:
        """Count the call's outcome, give its place back; return the work's exception."""
        came_back(self)
        dropped = work.cancelled()
        error = None if dropped else work.exception()
        if self._probe is not None:
            self._probe.finished(outcome_of(error, dropped or self.cancelled()), error)
        elif self._counted is not None:
            outcome = outcome_of(error, dropped or self.cancelled())
            self._counts.finished(outcome, _perf_counter() - self._counted_since)
        if self._on_finish is not None:
            self._on_finish()
        return error

    def abandon(self) -> None:
        """Fail the call: its executor dropped it unrun (shut down with ``cancel_futures``)."""
        self.refuse(ExecutorRefused("the executor was shut down before the call ran"))

    def refuse(self, error: BaseException, *, on_loop_thread: bool = False) -> None:
        """Settle a call that will never run with ``error`` (or as cancelled, if it was).

        On the loop's own thread (``on_loop_thread``) the call fails at once;
        from any other thread the failure travels through the loop's inbox.
        """
        if not self._take_claim():
            return  # cancelled while queued, and settled then
        if self.cancelled():
            self._skip()
            return
        self._skip(ERROR, error)
        if on_loop_thread:
            self.fail(error)
        else:
            self._deliver(self.fail, error)

    def _deliver(self, settle: Callable[[Any], None], outcome: object) -> None:
        try:
            self._inbox.post(settle, outcome)
        except RuntimeError:  # the loop is closed: nobody is left to receive it
            probe = self._own_probe()
            if probe is not None:
                probe.dropped()
            else:
                fields = {"function": qualified_name(self._func)}
                emit("warning", "result dropped: event loop closed", fields)


WORK_CODES.update(codes_running(ThreadCall[Any].run))


def _storable(exc: BaseException) -> BaseException:
    """Return ``exc``, or a ``RuntimeError`` chained to it if a future cannot hold it."""
    if isinstance(exc, StopIteration):
        error = RuntimeError("the threaded function raised StopIteration")
        error.__cause__ = exc
        return error
    return exc


def run_in_executor(executor: Executor | None, call: ThreadCall[T]) -> asyncio.Future[T]:
    """Start ``call`` on ``executor``, or on its loop's default executor if ``None``.

    See ``default_executor`` for which executor that is. Returns the call,
    the future its caller awaits; if the executor refuses it, the call has
    failed already (see ``refused_call``).
    """
    default = executor is None
    try:
        if executor is None:
            executor = default_executor(call.get_loop())
            if executor is None:
                _ForeignWork(call, None).submit_with(
                    functools.partial(call.get_loop().run_in_executor, None)
                )
                return call
        if type(executor) is WorkerPool:
            call.settle_on_cancel()
            executor.enqueue(call)
        elif runs_elsewhere(executor):
            _run_elsewhere(executor, call)
        else:
            watch(executor, default=default)  # for its pool metrics
            _ForeignWork(call, None if default else executor).submit(executor)
    except BaseException as exc:  # nothing was queued: settle the books here
        if type(executor) is not WorkerPool and (executor is None or not runs_elsewhere(executor)):
            count_refusal(pool_name(None if default else executor), refusal_of(exc))
        _settle_unstarted(call, exc)
    return call


def _settle_unstarted(call: ThreadCall[Any], exc: BaseException) -> None:
    """Fail ``call``, which could not be started; re-raise ``exc`` if it is an interrupt.

    Called in the ``except`` block that caught ``exc``. An interrupt goes on
    alone: the call's own failure is marked as seen, since nobody will await it.
    """
    refused_call(call, exc)
    if not isinstance(exc, Exception):
        if not call.cancelled():
            call.exception()
        raise exc


def refused_call(call: ThreadCall[T], exc: BaseException) -> asyncio.Future[T]:
    """Fail ``call``, which could not be started, with ``exc``; return it.

    An exception of a type of the executor's own (a load-shedding executor's
    ``Overloaded``, ``BrokenThreadPool``) fails the call as it is, as with
    ``loop.run_in_executor``, so that the caller catches it by its type. A
    plain ``RuntimeError`` (a shut-down executor, no thread to be had) and an
    interrupt become ``ExecutorRefused`` chained to it, which is a
    ``RuntimeError`` too. Either way the call counts as refused. Called on
    the loop's thread; the probe and the limit place are settled here, once.
    """
    error = exc
    if type(exc) is RuntimeError or not isinstance(exc, Exception):
        error = ExecutorRefused(f"the executor refused the call: {exc}")
        error.__cause__ = exc
    call.refuse(error, on_loop_thread=True)
    return call


class _ForeignWork:
    """A call on an executor that is not aiothreads' pool, chained both ways.

    Like ``loop.run_in_executor``: whatever ``submit()`` returns (a
    ``concurrent.futures.Future`` or an ``asyncio.Future``), its failure or
    cancellation before the call ran settles the call, and the caller's
    cancellation cancels it. Exactly one of running and dropping happens, so
    the books are settled once; the executor's exception is always retrieved.
    """

    __slots__ = ("_call", "_claimed", "_lock", "_pool", "_work")

    def __init__(self, call: ThreadCall[Any], pool: Executor | None) -> None:
        self._call = call
        self._pool = pool  # counted as refusing what it drops; ``None``: the default executor
        self._lock = threading.Lock()
        self._claimed = False
        self._work: concurrent.futures.Future[None] | asyncio.Future[None] | None = None

    def submit(self, executor: Executor) -> None:
        """Hand the call to ``executor``; ``submit()``'s own exception propagates."""
        self.submit_with(executor.submit)

    def submit_with(self, submit: Callable[[Callable[[], None]], object]) -> None:
        """Hand the call to ``submit(run)``, which returns a future of either kind."""
        work = cast("concurrent.futures.Future[None] | asyncio.Future[None]", submit(self.run))
        self._work = work
        on_loop_of(work, work.add_done_callback, self._work_done)
        self._call.add_done_callback(self._call_done)

    def run(self) -> None:
        """Run the call in the executor's thread, unless it was dropped first."""
        with self._lock:
            if self._claimed:
                return
            self._claimed = True
        self._call.run()

    def _drop(self, error: BaseException, reason: Refusal) -> None:
        with self._lock:
            if self._claimed:
                return  # running already: its own outcome will arrive
            self._claimed = True
        if not self._call.cancelled():  # not the caller's own cancellation, passed on
            count_refusal(pool_name(self._pool), reason)
        self._call.refuse(error)

    def _work_done(self, work: concurrent.futures.Future[None] | asyncio.Future[None]) -> None:
        if work.cancelled():
            self._drop(
                ExecutorRefused(
                    "the executor dropped the call before it ran (shut down, or cancelled it)"
                ),
                Refusal.DROPPED,
            )
            return
        error = work.exception()  # retrieved here, so it is never reported as lost
        if error is not None:
            self._drop(error, Refusal.REJECTED)

    def _call_done(self, call: asyncio.Future[Any]) -> None:
        work = self._work
        if call.cancelled() and work is not None and not work.done():
            on_loop_of(work, work.cancel)


def on_loop_of(work: object, action: Callable[..., object], *args: Any) -> None:
    """Run ``action(*args)`` where ``work`` may be touched (an asyncio future: on its loop)."""
    if isinstance(work, asyncio.Future):
        loop = work.get_loop()
        if running_loop_or_none() is not loop:
            loop.call_soon_threadsafe(action, *args)
            return
    action(*args)


def _run_elsewhere(executor: Executor, call: ThreadCall[Any]) -> None:
    """Hand ``call``'s function and arguments to ``executor``, which runs them in another process.

    They must pickle (``ExecutorRefused`` otherwise, before anything is
    submitted); keyword arguments are bound with ``functools.partial``, so the
    executor's ``submit()`` never mistakes one for an option of its own. A
    traced call travels as ``Carried`` (see ``aiothreads._remote``). Context
    variables and ``EVENT_LOOP`` do not cross processes, so ``sync_await``
    and ``is_cancelled`` are not available there.
    """
    func, args, kwargs = call.function_and_arguments()
    check_picklable(executor, func, args, kwargs)
    if kwargs:
        func = functools.partial(func, **kwargs)
    headers = call.trace_headers()
    if headers:
        kind, function = call.about[:2]
        func = carried_call(executor, func, kind, function, headers)
    call.running_elsewhere(executor.submit(func, *args), type(executor).__name__)


def default_executor(loop: asyncio.AbstractEventLoop) -> Executor | None:
    """Return the loop's default executor, or ``None`` if the loop keeps it private.

    This is what ``loop.set_default_executor()`` installed; if nothing was,
    aiothreads installs a ``WorkerPool`` there, so that
    ``loop.run_in_executor(None, ...)`` and ``asyncio.to_thread`` share its
    threads. Loops that keep their default executor out of sight return
    ``None``: calls then go through ``loop.run_in_executor(None, ...)``.

    Raises:
        RuntimeError: the loop already shut its default executor down.
    """
    exposed, executor = default_executor_of(loop)
    if not exposed:
        return None
    if executor is None:
        if executor_shut_down(loop):
            raise RuntimeError("Executor shutdown has been called")
        executor = WorkerPool()
        executor.call_on_shutdown(functools.partial(release_if_closed, weakref.ref(loop)))
        loop.set_default_executor(executor)
        if not remember_default_executor(loop, executor):
            return None  # the loop runs it through run_in_executor from now on
    return executor


def run_in_new_thread(call: ThreadCall[T], *, name: str, detach: bool = True) -> asyncio.Future[T]:
    """Start ``call`` on a thread of its own; return it (failed if no thread could start).

    Args:
        call: What to run, with its arguments, context, probe and completion hook.
        name: The thread's name, shown by debuggers and in logs.
        detach: Make the thread a daemon, so it never blocks interpreter exit.
    """
    thread = threading.Thread(target=call.run, name=name, daemon=detach)
    try:
        thread.start()
    except BaseException as exc:  # no thread could be started (limits, interpreter exit)
        _settle_unstarted(call, exc)
    return call
