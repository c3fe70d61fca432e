"""Call async code from threads: block the thread until a coroutine finishes on the loop.

Semantics:

* The coroutine runs as a task on the target loop, in a copy of the calling
  thread's context, so context variables set in the thread are visible to it.
* The calling thread blocks until the task finishes and gets its result or its
  exception, with the traceback from the loop.
* Called on the target loop's own thread, the functions raise ``RuntimeError``
  at once: waiting there would deadlock.
* Called from a thread that does not know its loop (no ``EVENT_LOOP`` in its
  context and none passed), they raise ``RuntimeError`` saying how to fix it.
* If the loop shuts down and cancels the task, the thread gets
  ``asyncio.CancelledError``; if the loop closes without running it, the thread
  gets ``RuntimeError`` within a second instead of waiting forever.
* If the threaded call doing the waiting is cancelled by its own caller, the
  task is cancelled and the thread gets ``asyncio.CancelledError`` at once (in
  a threaded generator whose consumer left: within a second).
* A coroutine object that cannot be run is closed, so it never warns that it
  was never awaited.
* The coroutine runs as a task of its own, named ``sync_await:NAME from
  THREAD``, in its own copy of the context (values it sets last across its
  awaits and never reach the thread), as ``asyncio.create_task`` would.
* A ``KeyboardInterrupt`` or ``SystemExit`` raised by the coroutine stops the
  loop, as any task's does; the waiting thread gets it too once the loop runs
  its callbacks again (``asyncio.run`` does as it shuts down) or is closed.
  Raised in the coroutine's very first step on Python 3.12+, asyncio also
  logs it as never retrieved: the eager task that holds it is never returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from . import _loops
from ._asyncio_internals import link_awaiters, unlink_awaiters
from ._cancellation import Scope, StreamScope, current_scope
from ._eager import start_task
from ._errors import LoopClosedError, NoEventLoopError
from ._inbox import inbox_for
from ._inflight import WAIT_CODES, codes_running
from ._loops import loop_state, running_loop_or_none
from ._names import qualified_name
from ._outcomes import OK, outcome_of
from .instrumentation._hooks import current as current_telemetry
from .types import EVENT_LOOP

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

__all__ = ["sync_await", "sync_wait_coroutine", "wait_coroutine"]

P = ParamSpec("P")
T = TypeVar("T")

_NO_LOOP_HINT = (
    "{name}() cannot find the event loop: it runs outside any aiothreads call. "
    "Call it from a function decorated with @threaded (or another aiothreads decorator), "
    "pass the loop explicitly with sync_wait_coroutine(loop, ...) or wait_coroutine(coro, loop), "
    "or set aiothreads.EVENT_LOOP in this thread's context."
)

_ON_THE_LOOP_HINT = (
    "{name}() was called on the event loop's own thread, in async code: waiting there "
    "would block the loop. Write 'await {target}(...)' instead; {name}() is for "
    "blocking code running in a thread (a function decorated with @threaded)."
)


@overload
def sync_await(func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T: ...
@overload
def sync_await(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...
def sync_await(func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> Any:
    """Run ``func(*args, **kwargs)`` on the event loop, await what it returns, return that.

    Use it inside a function run by an aiothreads decorator, which makes the
    loop known through [`aiothreads.EVENT_LOOP`][aiothreads.EVENT_LOOP]. The calling thread
    blocks until the awaitable finishes. ``func`` may also be a plain callable: it is
    then called on the loop's own thread (where asyncio objects such as an
    ``asyncio.Event`` may be touched) and its return value comes back.

    ```python
    import asyncio

    from aiothreads import sync_await, threaded


    async def lookup(key: str) -> str:
        await asyncio.sleep(0)
        return key.upper()


    @threaded
    def work(done: asyncio.Event) -> str:
        found = sync_await(lookup, "a")  # awaited on the loop, result here
        sync_await(done.set)  # not thread-safe: called on the loop instead
        return found


    async def main() -> str:
        done = asyncio.Event()
        found = await work(done)
        assert done.is_set()
        return found


    assert asyncio.run(main()) == "A"
    ```

    Raises:
        RuntimeError: called on the loop's own thread, from a thread with no
            known loop, or the loop closed.
        asyncio.CancelledError: the loop cancelled the task (e.g. at shutdown).
        BaseException: whatever ``func`` or the awaitable raised.
    """
    loop = _loop_from_context("sync_await", func)
    return _run_on_loop(loop, func, args, kwargs)


def wait_coroutine(
    coro: Coroutine[Any, Any, T],
    loop: asyncio.AbstractEventLoop | None = None,
) -> T:
    """Run the coroutine object ``coro`` on ``loop`` and return its result.

    ```python
    import asyncio

    from aiothreads import threaded, wait_coroutine


    async def double(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2


    @threaded
    def work() -> int:
        return wait_coroutine(double(21))


    assert asyncio.run(work()) == 42
    ```

    Args:
        coro: The coroutine to run; it is closed unrun if it cannot be run.
        loop: The target loop; defaults to [`aiothreads.EVENT_LOOP`][aiothreads.EVENT_LOOP].

    Raises:
        RuntimeError: called on the loop's own thread, from a thread with no
            known loop, or the loop closed.
        asyncio.CancelledError: the loop cancelled the task.
        BaseException: whatever the coroutine raised.
    """
    try:
        target = loop if loop is not None else _loop_from_context("wait_coroutine", coro)
    except BaseException:
        coro.close()
        raise
    return _run_on_loop(target, _given, (coro,), {}, coro)


def sync_wait_coroutine(
    loop: asyncio.AbstractEventLoop | None,
    coro_func: Callable[P, Coroutine[Any, Any, T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run ``await coro_func(*args, **kwargs)`` on ``loop`` and return its result.

    The explicit-loop variant of [`sync_await`][aiothreads.sync_await], for threads that aiothreads
    did not start (``asyncio.to_thread``, ``threading.Thread``). ``loop=None``
    falls back to [`aiothreads.EVENT_LOOP`][aiothreads.EVENT_LOOP].

    ```python
    import asyncio

    from aiothreads import sync_wait_coroutine


    async def double(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2


    async def main() -> int:
        loop = asyncio.get_running_loop()
        # A thread aiothreads did not start knows no loop: pass it.
        return await asyncio.to_thread(sync_wait_coroutine, loop, double, 21)


    assert asyncio.run(main()) == 42
    ```

    Raises:
        RuntimeError: called on the loop's own thread, with no known loop, or
            the loop closed.
        asyncio.CancelledError: the loop cancelled the task.
        BaseException: whatever the coroutine raised.
    """
    target = loop if loop is not None else _loop_from_context("sync_wait_coroutine", coro_func)
    return _run_on_loop(target, coro_func, args, kwargs)


def _given(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    return coro


def _loop_from_context(name: str, target: object) -> asyncio.AbstractEventLoop:
    try:
        return EVENT_LOOP.get()
    except LookupError:
        if running_loop_or_none() is not None:
            hint = _ON_THE_LOOP_HINT.format(name=name, target=_name_of(target))
            raise RuntimeError(hint) from None
        raise NoEventLoopError(_NO_LOOP_HINT.format(name=name)) from None


def _name_of(target: object) -> str:
    """Return the name a user wrote for ``target``: a function's, or a coroutine's."""
    if inspect.iscoroutine(target):
        return str(getattr(target, "__qualname__", type(target).__qualname__))
    if callable(target):
        return qualified_name(target).rsplit(".", 1)[-1]
    return repr(target)


def _coroutine_name(coro: Coroutine[Any, Any, Any]) -> str:
    name = getattr(coro, "__qualname__", type(coro).__qualname__)
    frame = getattr(coro, "cr_frame", None)
    module = frame.f_globals.get("__name__") if frame is not None else None
    return f"{module}.{name}" if module else str(name)


def _run_on_loop(
    loop: asyncio.AbstractEventLoop,
    func: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    coro: Coroutine[Any, Any, T] | None = None,
) -> T:
    """Await ``func(*args, **kwargs)`` on ``loop``; ``coro`` is the coroutine it returns, if known.

    ``func`` is called on the loop. A known ``coro`` is closed if it never gets to run.
    """
    waiter = _Waiter(current_scope(), func, args, kwargs, coro)
    telemetry = current_telemetry()
    probe = None
    if telemetry is not None:
        name = _coroutine_name(coro) if coro is not None else qualified_name(func)
        probe = telemetry.call("sync_await", name)
    if probe is None:
        return _submit(loop, waiter).wait(loop)
    probe.running()
    token = probe.activate_here()  # the task copies this context: its spans nest in ours
    try:
        _submit(loop, waiter)
    except BaseException as exc:  # CancelledError if the caller gave up before we asked
        probe.finished(outcome_of(exc), exc)
        raise
    finally:
        probe.restore(token)
    try:
        result = waiter.wait(loop)
    except BaseException as exc:
        probe.finished(outcome_of(exc), exc)
        raise
    probe.finished(OK)
    return result


class _Waiter(Generic[T]):
    """Carries one coroutine to the loop and its outcome back to the waiting thread.

    On the loop, ``func(*args, **kwargs)`` is called; a plain value is the
    result at once, and a coroutine becomes a task of its own, named after
    it and the calling thread (``sync_await:audit from aiothreads_1``), that
    holds the user's coroutine itself. The thread blocks on a plain lock,
    released by the task's done callback, or at once where the task finished
    in its eager first step (see ``aiothreads._eager``). On Python 3.14 and
    later, the tasks awaiting the threaded call this thread runs are recorded
    as awaiting the new task, so asyncio's call graph links them.
    """

    __slots__ = (
        "_args",
        "_awaiters",
        "_coro",
        "_done",
        "_error",
        "_func",
        "_kwargs",
        "_loop_closed",
        "_result",
        "_signalled",
        "_task",
        "cancelled",
        "scope",
        "thread_name",
    )

    def __init__(
        self,
        scope: Scope | None,
        func: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        coro: Coroutine[Any, Any, T] | None,
    ) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._signalled = False
        self._task: asyncio.Task[T] | None = None
        self._awaiters: tuple[asyncio.Future[Any], ...] = ()
        self._result: T | None = None
        self._error: BaseException | None = None
        self.scope = scope
        self._func = func
        self._args = args
        self._kwargs = kwargs
        self._coro = coro
        self._loop_closed = False
        self.cancelled = False
        self.thread_name = threading.current_thread().name

    @property
    def task(self) -> asyncio.Task[T] | None:
        """The task running the coroutine, once started (``None`` for a plain callable)."""
        return self._task

    def close_unstarted(self) -> None:
        """Close the coroutine we were given if it never got to run (no warning then)."""
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call the function and start its coroutine's task (on the loop's thread)."""
        if self.scope is not None and self.scope.cancelled():
            # The caller gave up while this was on its way: never start the coroutine.
            self.close_unstarted()
            self.cancelled = True
            self._signal()
            return
        func, args, kwargs = self._func, self._args, self._kwargs
        self._args, self._kwargs = (), {}
        try:
            outcome: Any = func(*args, **kwargs)
        except BaseException as exc:
            self._fail_to_start(exc)
            return
        if not inspect.isawaitable(outcome):  # a plain callable's value is the result
            self._result = outcome
            self._signal()
            return
        coro = outcome if asyncio.iscoroutine(outcome) else _awaited(outcome)
        self._coro = coro
        try:
            task = start_task(loop, coro, self._task_name(coro))
        except BaseException as exc:  # e.g. the application's task factory failed
            self._fail_to_start(exc)
            return
        self._coro = None  # the task owns it now
        if task.done():  # it ran to its end eagerly
            self._take_outcome(task)
        else:
            self._watch(task, loop)

    def _watch(self, task: asyncio.Task[T], loop: asyncio.AbstractEventLoop) -> None:
        """Wait for ``task`` to end, and cancel it if the threaded call's caller gives up."""
        self._task = task
        task.add_done_callback(self._finish)
        caller = self.scope.future if self.scope is not None else None
        if caller is None:
            return
        self._awaiters = link_awaiters(task, caller)
        caller_loop = caller.get_loop()
        if caller_loop is loop:
            caller.add_done_callback(self._caller_gave_up)
            return
        # The threaded call waiting here belongs to another loop: its future may
        # only be touched on that loop's thread.
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody can cancel
            caller_loop.call_soon_threadsafe(caller.add_done_callback, self._caller_gave_up)

    def _task_name(self, coro: Coroutine[Any, Any, Any]) -> str:
        name = getattr(coro, "__qualname__", None) or qualified_name(self._func)
        return f"sync_await:{name} from {self.thread_name}"

    def _fail_to_start(self, exc: BaseException) -> None:
        """Hand ``exc`` (the function or starting its task raised it) to the waiting thread."""
        self.close_unstarted()
        self._error = exc
        self._signal()
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: the loop's too
            raise exc

    def _take_outcome(self, task: asyncio.Task[T]) -> None:
        """Keep the finished task's outcome for the waiting thread, and wake it."""
        self._keep_outcome(task)
        self._signal()

    def _keep_outcome(self, task: asyncio.Task[T]) -> None:
        """Keep the finished task's outcome (or its cancellation) for the waiting thread."""
        if task.cancelled():
            self.cancelled = True
            return
        error = task.exception()  # read, so that nothing is reported as unretrieved
        if error is None:
            self._result = task.result()
        else:
            self._error = error

    def _caller_gave_up(self, caller: asyncio.Future[Any]) -> None:
        """Cancel what we wait for once the threaded call's own caller cancelled it.

        Runs on the caller's loop; the task is cancelled on its own loop's thread.
        """
        task = self._task
        if not caller.cancelled() or task is None or task.done():
            return
        task_loop = task.get_loop()
        if task_loop is caller.get_loop():
            task.cancel()
            return
        with contextlib.suppress(RuntimeError):  # that loop closed: the wait ends by itself
            task_loop.call_soon_threadsafe(task.cancel)

    def _finish(self, task: asyncio.Task[T]) -> None:
        """Done callback: unlink the call graph and hand the outcome to the thread."""
        unlink_awaiters(task, self._awaiters)
        self._awaiters = ()
        self._take_outcome(task)

    def _signal(self) -> None:
        if self._signalled:
            return
        self._signalled = True
        task = self._task
        if task is not None and self.scope is not None:
            caller = self.scope.future
            if caller is not None and caller.get_loop() is task.get_loop():
                caller.remove_done_callback(self._caller_gave_up)
        self._done.release()

    def wait(self, loop: asyncio.AbstractEventLoop) -> T:
        """Block until the task is done; return its result or raise its exception."""
        state = loop_state(loop)
        state.add_waiter(self)
        scope = self.scope
        consumer_left = None
        if isinstance(scope, StreamScope):
            # A generator's consumer left: streams have no future to watch.
            consumer_left = functools.partial(self._cancel_task, loop)
            scope.channel.call_when_abandoned(consumer_left)
        try:
            self.wait_for_signal(loop)
        finally:
            state.remove_waiter(self)
            if consumer_left is not None and isinstance(scope, StreamScope):
                scope.channel.forget_abandon_callback(consumer_left)
        if self._loop_closed:
            self._outcome_left_behind()
        if self._loop_closed:  # nothing will run the task: do not touch the loop
            self.close_unstarted()
            raise LoopClosedError("the event loop closed while a thread waited on it")
        if self.cancelled:
            raise asyncio.CancelledError("the event loop cancelled the awaited task")
        if self._error is not None:
            try:
                raise self._error
            finally:
                self._error = None
        return self._result  # type: ignore[return-value]

    def wait_for_signal(self, loop: asyncio.AbstractEventLoop) -> None:
        """Block until the loop, or the thread closing it, releases this wait.

        Only they release it, never this thread: a loop found closed marks the
        wait as ended by the close.
        """
        if loop.is_closed():
            # Closed before this thread was registered: the close may never be announced to it.
            if not self._done.acquire(blocking=False):
                self._loop_closed = True
            return
        while not self._done.acquire(timeout=_loops.LOOP_WATCHDOG_INTERVAL):
            if loop.is_closed():  # nothing announced it: see _loops
                self._loop_closed = True
                return

    def _outcome_left_behind(self) -> None:
        """Take the outcome of a task that ended as its loop stopped for good.

        An interrupt raised by the coroutine stops the loop before its done
        callback can run; once the loop is closed, its outcome is read here.
        """
        task = self._task
        if task is None or not task.done():
            return
        self._loop_closed = False
        self._keep_outcome(task)

    def loop_closed(self) -> None:
        """Stop waiting: the loop was closed by hand (called where it was closed)."""
        if self._signalled:
            return
        self._signalled = True
        self._loop_closed = True
        self._done.release()

    def _cancel_task(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._task
        if task is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)


WAIT_CODES.update(codes_running(_Waiter[Any].wait), codes_running(_Waiter[Any].wait_for_signal))


async def _awaited(awaitable: Awaitable[T]) -> T:
    """Await an awaitable that is not a coroutine (a future, an object with ``__await__``)."""
    return await awaitable


def _submit(loop: asyncio.AbstractEventLoop, waiter: _Waiter[T]) -> _Waiter[T]:
    scope = waiter.scope
    try:
        if scope is not None and scope.cancelled():
            raise asyncio.CancelledError("the caller of this threaded call was cancelled")
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"expected an asyncio event loop, got {type(loop).__name__}")
        if running_loop_or_none() is loop:
            raise RuntimeError(
                "cannot block on the event loop from its own thread: it would deadlock; "
                "use 'await' here, or call from a worker thread"
            )
        # The task runs in a copy of this thread's context, as call_soon_threadsafe would.
        inbox_for(loop).post(contextvars.copy_context().run, waiter.start, loop)
    except RuntimeError:
        waiter.close_unstarted()
        if loop.is_closed():
            raise LoopClosedError("the event loop is closed") from None
        raise
    except BaseException:
        waiter.close_unstarted()
        raise
    return waiter
