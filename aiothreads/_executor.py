"""Run a callable in a worker thread and resolve an asyncio future with its outcome.

Semantics, for every call that goes through :func:`run_in_executor` or
:func:`run_in_new_thread`:

* The returned future belongs to the loop; the thread hands the outcome to the
  loop's inbox (:mod:`aiothreads._inbox`), so no ``concurrent.futures`` round
  trip is involved, and the caller resumes in the loop turn it arrives
  (:class:`~aiothreads._future.CallFuture`). Where the loop keeps its default
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
import threading
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar, cast

from ._cancellation import run_as_call
from ._future import CallFuture
from ._inbox import inbox_for
from ._log import emit
from ._names import qualified_name
from ._pool import WorkerPool
from .instrumentation._hooks import CANCELLED, ERROR, OK

if TYPE_CHECKING:
    import concurrent.futures
    import contextvars
    from collections.abc import Callable, Mapping
    from concurrent.futures import Executor

    from .instrumentation._hooks import CallProbe

__all__ = ["default_executor", "run_in_executor", "run_in_new_thread"]

T = TypeVar("T")


class ThreadCall(CallFuture[T]):
    """A call handed to a thread: the future its caller awaits, and the work the thread runs.

    Its :meth:`run`, called in the thread, runs the function unless the
    future was cancelled first, then hands the outcome to the loop's inbox,
    which settles the future. One object per call serves as both, so starting
    a call allocates nothing else. The arguments are let go once the function
    ran. The future itself is not callable: calling it by mistake cannot run
    the function a second time.

    With a context the function runs inside it as an aiothreads call:
    :data:`~aiothreads.EVENT_LOOP` is set to the loop and this object is the
    call's cancel scope (see :mod:`aiothreads._cancellation`).
    """

    __slots__ = ("_arguments", "_func", "_inbox", "_on_finish", "_probe")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        func: Callable[..., T],
        call: Arguments,
        probe: CallProbe | None,
        on_finish: Callable[[], None] | None,
    ) -> None:
        super().__init__(loop=loop)
        self._inbox = inbox_for(loop)
        self._func = func
        self._arguments = call
        self._probe = probe
        self._on_finish = on_finish

    @property
    def future(self) -> asyncio.Future[T]:
        """The future the caller awaits: this call itself (the cancel scope's view)."""
        return self

    def run(self) -> None:
        """Run the function in this thread unless cancelled, and hand its outcome to the loop."""
        if self.cancelled():
            self._skip()
            return
        probe = self._probe
        if probe is not None:
            probe.running()
        args, kwargs, context = self._arguments
        self._arguments = NO_ARGUMENTS
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
        del args, kwargs, context
        if probe is not None:
            probe.finished(_outcome(error, self.cancelled()), error)
        if self._on_finish is not None:
            self._on_finish()
        self._deliver(settle, outcome)

    def _skip(self) -> None:
        """Report a call that never ran and give its limit place back."""
        self._arguments = NO_ARGUMENTS
        if self._probe is not None:
            self._probe.skipped()
        if self._on_finish is not None:
            self._on_finish()

    def abandon(self) -> None:
        """Fail the call: its executor dropped it unrun (shut down with ``cancel_futures``)."""
        self._skip()
        error = RuntimeError("the executor was shut down before the call ran")
        self._deliver(self.fail, error)

    def abandon_if_cancelled(self, work: concurrent.futures.Future[None]) -> None:
        """Done callback for foreign executors: :meth:`abandon` if they dropped the call."""
        if work.cancelled():
            self.abandon()

    def _deliver(self, settle: Callable[[Any], None], outcome: object) -> None:
        try:
            self._inbox.post(settle, outcome)
        except RuntimeError:  # the loop is closed: nobody is left to receive it
            if self._probe is not None:
                self._probe.dropped()
            else:
                fields = {"function": qualified_name(self._func)}
                emit("warning", "result dropped: event loop closed", fields)


def _outcome(error: BaseException | None, cancelled: bool = False) -> str:
    """Return the outcome label of a call that raised ``error`` (or nothing)."""
    if cancelled or isinstance(error, asyncio.CancelledError):
        return CANCELLED
    return OK if error is None else ERROR


def _storable(exc: BaseException) -> BaseException:
    """Return ``exc``, or a ``RuntimeError`` chained to it if a future cannot hold it."""
    if isinstance(exc, StopIteration):
        error = RuntimeError("the threaded function raised StopIteration")
        error.__cause__ = exc
        return error
    return exc


Arguments: TypeAlias = "tuple[tuple[Any, ...], Mapping[str, Any], contextvars.Context | None]"
"""How to call a function in a thread: ``(args, kwargs, context)``.

With a context, the function runs inside it as an aiothreads call (with
``EVENT_LOOP`` and a cancel scope); with ``None``, it is just called.
"""

NO_ARGUMENTS: Final[Arguments] = ((), MappingProxyType({}), None)


def run_in_executor(
    loop: asyncio.AbstractEventLoop,
    executor: Executor | None,
    func: Callable[..., T],
    call: Arguments = NO_ARGUMENTS,
    *,
    probe: CallProbe | None = None,
    on_finish: Callable[[], None] | None = None,
) -> asyncio.Future[T]:
    """Run ``func`` on ``executor``, or on the loop's default executor if ``None``.

    See :func:`default_executor` for which executor that is, and
    :data:`Arguments` for ``call``. ``on_finish`` is called in the thread once
    the call ran or was dropped (limits use it).

    Raises:
        RuntimeError: through the future, if the executor was shut down.
    """
    try:
        if executor is None:
            executor = default_executor(loop)
        if executor is None:
            return _run_through_loop(loop, func, call, probe, on_finish)
        future = ThreadCall(loop, func, call, probe, on_finish)
        if type(executor) is WorkerPool:
            executor.enqueue(future)
        else:
            executor.submit(future.run).add_done_callback(future.abandon_if_cancelled)
    except RuntimeError as exc:  # the executor was shut down: the call was not queued
        if on_finish is not None:
            on_finish()
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return future


def _run_through_loop(
    loop: asyncio.AbstractEventLoop,
    func: Callable[..., T],
    call: Arguments,
    probe: CallProbe | None,
    on_finish: Callable[[], None] | None,
) -> asyncio.Future[T]:
    """Use ``loop.run_in_executor(None, ...)`` where the default executor is private.

    The loop's own future carries the outcome; its cancellation reaches the
    executor, so a call cancelled before it started never runs.
    """
    runner = _InThread(loop, func, call, probe, on_finish)
    future: asyncio.Future[T] = loop.run_in_executor(None, runner)
    runner.future = future
    if probe is not None or on_finish is not None:
        future.add_done_callback(runner.report_if_skipped)
    return future


class _InThread(Generic[T]):
    """Runs ``func`` for :func:`_run_through_loop`: reports to the probe, stores safely.

    Like :class:`ThreadCall`, it is the call's cancel scope when there is a context;
    its future is known once the loop took the call.
    """

    __slots__ = ("call", "func", "future", "loop", "on_finish", "probe", "started")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        func: Callable[..., T],
        call: Arguments,
        probe: CallProbe | None,
        on_finish: Callable[[], None] | None,
    ) -> None:
        self.loop = loop
        self.func = func
        self.call = call
        self.probe = probe
        self.on_finish = on_finish
        self.started = False
        self.future: asyncio.Future[T] | None = None

    def cancelled(self) -> bool:
        """Whether the caller cancelled the call (the call's cancel scope)."""
        return self.future is not None and self.future.cancelled()

    def __call__(self) -> T:
        # The loop passes a cancellation on to the executor one loop turn late;
        # looking at the future itself honours it at once.
        if self.cancelled():
            raise asyncio.CancelledError
        self.started = True
        probe = self.probe
        if probe is not None:
            probe.running()
        args, kwargs, context = self.call
        try:
            if context is None:
                result = self.func(*args, **kwargs)
            else:
                result = context.run(run_as_call, self, self.loop, self.func, args, kwargs)
        except BaseException as exc:
            error = _storable(exc)
            if probe is not None:
                probe.finished(_outcome(error), error)
            if error is exc:
                raise
            raise error from exc
        finally:
            if self.on_finish is not None:
                self.on_finish()
        if probe is not None:
            probe.finished(OK)
        return result

    def report_if_skipped(self, future: asyncio.Future[T]) -> None:
        if not future.cancelled() or self.started:
            return
        if self.probe is not None:
            self.probe.skipped()
        if self.on_finish is not None:
            self.on_finish()


_PRIVATE_EXECUTOR_LOOPS: set[type[asyncio.AbstractEventLoop]] = set()
"""Loop classes found not to expose their default executor."""


def default_executor(loop: asyncio.AbstractEventLoop) -> Executor | None:
    """Return the loop's default executor, or ``None`` if the loop keeps it private.

    On asyncio's own loops this is what ``loop.set_default_executor()``
    installed; if nothing was, aiothreads installs a :class:`WorkerPool` there.
    Loops that do not expose their default executor (uvloop) return ``None``:
    calls then go through ``loop.run_in_executor(None, ...)``.

    Raises:
        RuntimeError: the loop already shut its default executor down.
    """
    if type(loop) in _PRIVATE_EXECUTOR_LOOPS:
        return None
    try:
        executor = cast("Executor | None", loop._default_executor)  # type: ignore[attr-defined]
    except AttributeError:
        _PRIVATE_EXECUTOR_LOOPS.add(type(loop))  # spares later calls the exception
        return None
    if executor is None:
        if getattr(loop, "_executor_shutdown_called", False):
            raise RuntimeError("Executor shutdown has been called")
        executor = WorkerPool()
        loop.set_default_executor(executor)
    return executor


def run_in_new_thread(
    loop: asyncio.AbstractEventLoop,
    func: Callable[..., T],
    *,
    name: str,
    detach: bool = True,
    probe: CallProbe | None = None,
    on_finish: Callable[[], None] | None = None,
    call: Arguments = NO_ARGUMENTS,
) -> asyncio.Future[T]:
    """Run ``func`` on a thread of its own.

    Args:
        loop: The loop that receives the outcome.
        func: What to run.
        name: The thread's name, shown by debuggers and in logs.
        detach: Make the thread a daemon, so it never blocks interpreter exit.
        probe: Observes the call, if instrumentation is on.
        on_finish: Called in the thread once the call ran (limits use it).
        call: Its arguments and context; see :data:`Arguments`.
    """
    future = ThreadCall(loop, func, call, probe, on_finish)
    thread = threading.Thread(target=future.run, name=name, daemon=detach)
    thread.start()
    return future
