"""``@threaded``: run a blocking function in the loop's thread pool and await it.

Semantics:

* Calling the decorated function inside a running loop submits the call at
  once and returns an ``asyncio.Future``; awaiting it is optional. Outside a
  running loop it returns a coroutine that submits the call when awaited, so
  ``asyncio.run(func(x))`` works.
* The function runs in a copy of the caller's context with
  [`aiothreads.EVENT_LOOP`][aiothreads.EVENT_LOOP] set, so context variables and
  [`aiothreads.sync_await`][aiothreads.sync_await] work inside it.
* Cancelling the future before a worker picks the call up means it never
  runs; cancelling later abandons its result (threads cannot be interrupted).
* Exceptions propagate to the awaiting task with the thread's frames in the
  traceback.
* ``sync_call`` runs the function inline, in the calling thread.
* On an ``executor=`` that runs work in other processes the function runs
  there, without the caller's context; ``aiothreads._remote`` says which
  executors those are and what a call keeps on them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import time
from abc import ABC, abstractmethod
from types import CoroutineType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Final,
    Generic,
    NamedTuple,
    Protocol,
    overload,
)

from ._binding import MethodBinder, unwrap_method
from ._executor import ThreadCall, run_in_executor
from ._iterable import ThreadedIterable
from ._limits import CapacityLimiter, as_limiter
from ._loops import running_loop_or_none
from ._names import copy_metadata, qualified_name
from ._validate import check_blocking_callable, check_executor, check_flag, check_name
from .instrumentation._hooks import current as current_telemetry
from .types import BP, EVENT_LOOP, P, R, S, T

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
    from concurrent.futures import Executor

    from typing_extensions import Self

    from ._inflight import About
    from .instrumentation._probes import FunctionTelemetry


__all__ = [
    "THREADED_ITERABLE_DEFAULT_MAX_SIZE",
    "BoundThreaded",
    "Threaded",
    "ThreadedBase",
    "threaded",
]


MAX_SIZE_VARIABLE: Final = "THREADED_ITERABLE_DEFAULT_MAX_SIZE"
"""The environment variable that sets ``max_size`` for generators under ``@threaded``."""

_DEFAULT_MAX_SIZE: Final = 1024


class Dispatch(Protocol):
    """Starts a call on some thread; returns the call, the future its caller awaits."""

    kind: ClassVar[str]
    """The ``kind`` label of the calls it starts."""

    def __call__(self, call: ThreadCall[R], /) -> asyncio.Future[R]:
        """Start ``call`` (see ``aiothreads._executor.ThreadCall``)."""
        ...


class PoolDispatch:
    """Runs calls on an executor: the loop's default one unless one is given."""

    __slots__ = ("executor",)
    kind: ClassVar[str] = "threaded"

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = check_executor(executor)

    def __call__(self, call: ThreadCall[R], /) -> asyncio.Future[R]:
        return run_in_executor(self.executor, call)


dispatch_to_pool: Final = PoolDispatch()


def _named(coro: Coroutine[Any, Any, T], name: str) -> Coroutine[Any, Any, T]:
    """Give ``coro`` the function's name, which Python's warnings and asyncio's reprs show.

    A coroutine that is never awaited is reported by its name ("coroutine
    'mod.func' was never awaited"), not by the method that made it.
    """
    if isinstance(coro, CoroutineType):  # always: it tells mypy it has names
        coro.__name__ = coro.__qualname__ = name
    return coro


class ThreadedBase(Generic[P, T], ABC):
    """What every decorated function offers: ``sync_call``, ``async_call``, ``__call__``."""

    func: Callable[P, T]
    _dispatch: Dispatch
    _name: str
    _limiter: CapacityLimiter | None = None
    _instrumented: bool = True
    _telemetry: FunctionTelemetry | None = None
    """The telemetry of the function, kept from its last call while the backends stay."""
    _about: About
    """What ``snapshot()`` shows of its calls; made on the first call (see ``__getattr__``)."""

    @abstractmethod
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...

    def sync_call(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the function inline in the calling thread and return its result."""
        return self.func(*args, **kwargs)

    def async_call(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        """Run the function in a thread; await the returned object for its result.

        Returns:
            A future already submitted when called inside a running loop,
            otherwise a coroutine that submits the call when awaited.
        """
        loop = running_loop_or_none()
        if loop is None:
            return _named(self._submit_when_awaited(args, kwargs), self._name)
        if EVENT_LOOP.get(None) is not loop:
            # As in 1.x, the caller's context learns its loop too, so threads it
            # starts by other means (asyncio.to_thread) can use sync_await.
            EVENT_LOOP.set(loop)
        limiter = self._limiter
        if limiter is None:
            return self._submit(loop, args, kwargs)
        if limiter.try_acquire():
            return self._submit(loop, args, kwargs, limiter.release)
        called_at = time.perf_counter()  # the wait starts now, not when the task first runs
        waiting = self._submit_when_admitted(limiter, args, kwargs, called_at)
        return loop.create_task(_named(waiting, self._name))

    __call__ = async_call  # the same function: calling the object costs no extra frame

    def _submit(
        self,
        loop: asyncio.AbstractEventLoop,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        on_finish: Callable[[], None] | None = None,
        limit_wait: float | None = None,
    ) -> asyncio.Future[T]:
        try:
            context = contextvars.copy_context()
            telemetry = current_telemetry() if self._instrumented else None
            probe = counted = None
            if telemetry is not None:
                of = self._telemetry
                if of is None or of.telemetry is not telemetry:
                    of = self._telemetry = telemetry.function(self._dispatch.kind, self._name)
                if of.countable and of.nothing_but_metrics_here():
                    counted = of  # the call counts itself: no probe is needed
                else:
                    probe = telemetry.probe_of(of, of.may_record and of.recording_possible())
                    if probe is not None and limit_wait is not None:
                        probe.limit_waited(limit_wait)
            about = (
                self._about if limit_wait is None else (*self._about[:2], limit_wait, None, None)
            )
            call = ThreadCall(
                loop,
                self.func,
                (args, kwargs, context),
                probe,
                on_finish,
                about=about,
                counted=counted,
            )
        except BaseException:
            if on_finish is not None:  # no call took the limit place: give it back
                on_finish()
            raise
        return self._dispatch(call)  # the call gives the place back, whatever happens to it

    async def _submit_when_awaited(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> T:
        loop = asyncio.get_running_loop()
        limiter = self._limiter
        if limiter is None:
            return await self._submit(loop, args, kwargs)
        return await self._submit_when_admitted(limiter, args, kwargs, time.perf_counter())

    async def _submit_when_admitted(
        self,
        limiter: CapacityLimiter,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        waited_since: float,
    ) -> T:
        """Wait for a place under the limit, then run the call holding it.

        ``waited_since`` is when the call was made, on ``time.perf_counter()``'s clock.
        """
        loop = asyncio.get_running_loop()
        try:
            await limiter.acquire()
        except asyncio.CancelledError:
            telemetry = current_telemetry() if self._instrumented else None
            probe = None if telemetry is None else telemetry.call(self._dispatch.kind, self._name)
            if probe is not None:  # counted once, as a call that never ran
                probe.skipped()
            raise
        limit_wait = time.perf_counter() - waited_since
        return await self._submit(loop, args, kwargs, limiter.release, limit_wait=limit_wait)

    def __getattr__(self, name: str) -> Any:
        # 1.x subclasses set only ``func``; give them what the calls need.
        if name == "_dispatch":
            return dispatch_to_pool
        if name == "_name" and "func" in vars(self):
            return qualified_name(self.func)
        if name == "_about":  # made on the first call, then found like any attribute
            about: About = (self._dispatch.kind, self._name, None, None, None)
            vars(self)["_about"] = about
            return about
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name}>"


class Threaded(ThreadedBase[P, T]):
    """A function decorated with ``@threaded``; binds like a method on instances."""

    def __init__(
        self,
        func: Callable[P, T],
        *,
        limit: int | CapacityLimiter | None = None,
        executor: Executor | None = None,
        name: str | None = None,
        instrument: bool = True,
    ) -> None:
        kind, function = unwrap_method(func)
        check_blocking_callable("threaded", function)
        self.func = function
        self._dispatch = dispatch_to_pool if executor is None else PoolDispatch(executor)
        self._limiter = as_limiter(limit)
        self._instrumented = check_flag("instrument", instrument)
        self._binder: MethodBinder[BoundThreaded[..., T]] = MethodBinder(kind, self._bind)
        copied = copy_metadata(self, function)
        self._name = check_name(name) or copied

    @property
    def limiter(self) -> CapacityLimiter | None:
        """The limiter bounding concurrent executions, if ``limit=`` was given."""
        return self._limiter

    # The overloads model what static checkers see: they hand the decorator the
    # plain function even under @staticmethod/@classmethod.
    @overload
    def __get__(
        self: Threaded[Concatenate[type[S], BP], R],
        instance: None,
        owner: type[S],
    ) -> BoundThreaded[BP, R]: ...
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: Threaded[Concatenate[type[S], BP], R],
        instance: S,
        owner: type[Any] | None = None,
    ) -> BoundThreaded[BP, R]: ...
    @overload
    def __get__(
        self: Threaded[Concatenate[S, BP], R],
        instance: S,
        owner: type[Any] | None = None,
    ) -> BoundThreaded[BP, R]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Self: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        return self._binder.resolve(self, instance, owner)

    def _bind(self, instance: object) -> BoundThreaded[..., T]:
        return BoundThreaded(
            self.func,
            instance,
            dispatch=self._dispatch,
            limiter=self._limiter,
            name=self._name,
            instrument=self._instrumented,
        )


class BoundThreaded(ThreadedBase[P, T]):
    """A ``@threaded`` function bound to an instance (or a class, for classmethods)."""

    __self__: object

    def __init__(
        self,
        func: Callable[..., T],
        instance: object,
        *,
        dispatch: Dispatch = dispatch_to_pool,
        limiter: CapacityLimiter | None = None,
        name: str | None = None,
        instrument: bool = True,
    ) -> None:
        self.func = functools.partial(func, instance)
        self.__self__ = instance
        self._dispatch = dispatch
        self._limiter = limiter
        self._instrumented = instrument
        copied = copy_metadata(self, func)
        self._name = copied if name is None else name
        self._about = (dispatch.kind, self._name, None, None, None)  # one per bound method


def default_max_size() -> int:
    """Read ``THREADED_ITERABLE_DEFAULT_MAX_SIZE`` from the environment (default 1024).

    Raises:
        ValueError: the variable is set but not a non-negative integer.
    """
    raw = os.environ.get(MAX_SIZE_VARIABLE)
    if raw is None or not raw.strip():
        return _DEFAULT_MAX_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{MAX_SIZE_VARIABLE} must be a non-negative integer, got {raw!r}")
    return value


THREADED_ITERABLE_DEFAULT_MAX_SIZE: Final[int] = default_max_size()
"""``max_size`` of generators under ``@threaded``, as the environment said at import.

The ``THREADED_ITERABLE_DEFAULT_MAX_SIZE`` environment variable sets it (1024
if unset), as in aiothreads 1.x; ``@threaded`` reads the variable again when
it decorates, so a value set after import is honoured too.
"""


@overload
def threaded(  # type: ignore[overload-overlap]
    func: Callable[P, Iterator[T]],
    /,
) -> ThreadedIterable[P, T]: ...
@overload
def threaded(func: Callable[P, T], /) -> Threaded[P, T]: ...
@overload
def threaded(
    func: None = None,
    /,
    *,
    limit: int | CapacityLimiter | None = None,
    executor: Executor | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> _ThreadedDecorator: ...
def threaded(
    func: Any = None,
    *,
    limit: int | CapacityLimiter | None = None,
    executor: Executor | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Any:
    """Run the decorated blocking function in the event loop's thread pool.

    ``await func(*args)`` runs ``func`` in the loop's default executor (the one
    ``loop.set_default_executor()`` installs) and returns its result. Works on
    functions, instance methods, ``classmethod`` and ``staticmethod`` (put
    ``@threaded`` above them). A generator function becomes a threaded
    iterable whose ``max_size`` comes from ``THREADED_ITERABLE_DEFAULT_MAX_SIZE``
    (default 1024), consumed with ``async for``. Usable bare or with options:
    ``@threaded(limit=4)``.

    Type checkers cannot see whether a function is a generator function, so
    they go by its return annotation: ``Iterator[T]`` or ``Generator[T, ...]``
    makes a threaded iterable of ``T`` (``await`` on it is an error), any
    other annotation (``list[T]``, ``Iterable[T]``, ...) an awaitable
    function. Annotate generator functions with ``Iterator`` or
    ``Generator``, or decorate them with
    [`threaded_iterable`][aiothreads._iterable.threaded_iterable], which
    takes either kind.

    ```python
    import asyncio
    import time

    from aiothreads import threaded


    @threaded
    def checksum(data: bytes) -> int:
        time.sleep(0.01)  # blocking work, off the event loop
        return sum(data) % 256


    assert asyncio.run(checksum(b"abc")) == 38
    ```

    Args:
        func: The blocking function.
        limit: At most this many executions at once (an int, or a
            [`CapacityLimiter`][aiothreads.CapacityLimiter] shared by several functions);
            further callers wait asynchronously, and one cancelled while
            waiting gives its place up.
        executor: Run on this ``concurrent.futures.Executor`` instead of the
            loop's default one. One that runs work in other processes
            (anything but a ``ThreadPoolExecutor`` or an executor declared
            with [`runs_in_threads`][aiothreads.runs_in_threads]) gets the
            function and its arguments, which must pickle.
        name: The name in metric labels, span names, reprs and thread names,
            instead of the function's qualified name (for lambdas and partials).
        instrument: ``False`` keeps this function out of metrics, spans and
            log events (for hot helpers); it costs nothing per call then.

    Raises:
        TypeError: ``func`` is not callable, is a coroutine or async generator
            function; ``limit``, ``executor``, ``name`` or ``instrument`` has
            the wrong type.
        ValueError: ``limit`` is less than 1, or the
            ``THREADED_ITERABLE_DEFAULT_MAX_SIZE`` variable is not a
            non-negative integer (generator functions only).
    """
    options = _Options(
        as_limiter(limit),
        check_executor(executor),
        check_name(name),
        check_flag("instrument", instrument),
    )
    if func is None:
        return _ThreadedDecorator(options)
    return options.decorate(func)


class _Options(NamedTuple):
    """The options of ``threaded(...)``, checked."""

    limiter: CapacityLimiter | None
    executor: Executor | None
    name: str | None
    instrument: bool

    def decorate(self, func: Any) -> Any:
        _, function = unwrap_method(func)
        limit, executor, name, instrument = self
        if inspect.isgeneratorfunction(function):
            return ThreadedIterable(
                func,
                max_size=default_max_size(),
                limit=limit,
                executor=executor,
                name=name,
                instrument=instrument,
            )
        return Threaded(func, limit=limit, executor=executor, name=name, instrument=instrument)


class _ThreadedDecorator:
    """``threaded(limit=..., executor=..., ...)``, waiting for its function."""

    __slots__ = ("options",)

    def __init__(self, options: _Options) -> None:
        self.options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Iterator[T]]
    ) -> ThreadedIterable[P, T]: ...
    @overload
    def __call__(self, func: Callable[P, T]) -> Threaded[P, T]: ...
    def __call__(self, func: Any) -> Any:
        return self.options.decorate(func)
