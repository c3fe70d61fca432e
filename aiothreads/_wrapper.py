"""Drive a sync generator in a thread and consume it with ``async for``.

Semantics:

* Nothing runs until the first ``__anext__()``: an iterator that is never
  iterated starts no thread and never calls the generator function.
* The generator runs in a worker thread, inside a copy of the context the
  iterator was created in (with [`aiothreads.EVENT_LOOP`][aiothreads.EVENT_LOOP] set), and hands
  items over through a [`FromThreadChannel`][aiothreads.FromThreadChannel] of ``max_size``
  items; it blocks while the channel is full.
* The generator is stopped (``GeneratorExit`` at its ``yield``, so its
  ``finally`` runs) when the consumer calls ``close()``/``aclose()``, leaves
  ``async with``, leaves an ``async for`` early (``break``, ``return``, an
  exception), is cancelled while waiting in ``__anext__()``, drops the
  iterator, or when the event loop shuts down. A producer blocked on a full
  channel is woken at once.
* An exception raised by the generator reaches the consumer, with the
  thread's traceback, after the items yielded before it; then iteration ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

from ._cancellation import run_in_stream_scope
from ._channel import EMPTY, ChannelClosed, FromThreadChannel
from ._errors import ExecutorRefused
from ._executor import ThreadCall, refused_call, run_in_executor, run_in_new_thread
from ._log import logger
from ._loops import on_loop_shutdown
from ._names import qualified_name
from ._outcomes import CANCELLED, ERROR, OK, Outcome, StopReason
from ._validate import check_flag, check_name, check_thread_executor
from .instrumentation._hooks import current as current_telemetry
from .types import EVENT_LOOP, P

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterator,
        Awaitable,
        Callable,
        Coroutine,
        Generator,
        Iterable,
        Iterator,
    )
    from concurrent.futures import Executor

    from typing_extensions import Self

    from ._limits import CapacityLimiter
    from .instrumentation._probes import StreamProbe

__all__ = ["IteratorWrapper", "IteratorWrapperSeparate"]

T = TypeVar("T")


class _Done:
    """An awaitable that is already complete, for closes that have nothing to wait for."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_DONE: Final = _Done()


class IteratorWrapper(Generic[P, T]):
    """An async iterator over a sync generator that runs in a worker thread.

    Args:
        gen_func: A callable taking no arguments that returns the generator,
            or any iterable (usually ``functools.partial(generator_function,
            *args)``); it is called in the thread.
        loop: The event loop to deliver items to; defaults to the running loop
            at the first ``__anext__()``.
        max_size: How many items may wait between the thread and the consumer;
            ``0`` means unbounded.
        executor: Where the thread comes from; ``None`` means the loop's
            default executor.
        limiter: A [`CapacityLimiter`][aiothreads.CapacityLimiter] the generator holds a
            place of while it runs; iteration waits for a place first.
        name: The name shown in reprs, thread names and telemetry; the
            decorators pass the decorated function's qualified name.
            Defaults to the qualified name of ``gen_func`` (through
            ``functools.partial``).
        instrument: ``False`` keeps this iterator out of metrics, spans and
            log events.

    Raises:
        TypeError: ``gen_func`` is not callable, or ``executor`` is not a
            thread executor.

    Subclasses may override ``_run`` to start ``_in_thread`` on a
    thread of their own; it must return an awaitable that completes when that
    thread is done.

    """

    __slots__ = (
        "__weakref__",
        "_channel",
        "_context",
        "_gen_func",
        "_held",
        "_instrumented",
        "_job",
        "_limit_wait",
        "_limiter",
        "_loop",
        "_name",
        "_probe",
        "_producer",
        "executor",
    )

    _KIND: ClassVar[str] = "iterable"

    def __init__(
        self,
        gen_func: Callable[[], Iterable[T]],
        loop: asyncio.AbstractEventLoop | None = None,
        max_size: int = 0,
        executor: Executor | None = None,
        *,
        limiter: CapacityLimiter | None = None,
        name: str | None = None,
        instrument: bool = True,
    ) -> None:
        if not callable(gen_func):
            raise TypeError(f"gen_func must be callable, got {type(gen_func).__name__}")
        self._gen_func = gen_func
        self._name = check_name(name) or qualified_name(gen_func)
        self._instrumented = check_flag("instrument", instrument)
        self._loop = loop
        self.executor = check_thread_executor(executor)
        self._job: _Producer[T] | None = None
        self._channel: FromThreadChannel[T] = FromThreadChannel(max_size)
        self._context = contextvars.copy_context()
        self._producer: asyncio.Future[None] | None = None
        self._probe: StreamProbe | None = None
        self._limiter = limiter
        self._held: CapacityLimiter | None = None  # the limit place the producer holds
        self._limit_wait: float | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop items are delivered to, once known."""
        return self._loop

    @property
    def channel(self) -> FromThreadChannel[T]:
        """The channel that carries the generator's items to the consumer."""
        return self._channel

    @property
    def closed(self) -> bool:
        """Whether the iterator was closed or ran to its end."""
        return self._channel.is_closed

    @property
    def _in_thread(self) -> Callable[[], None]:
        """The producer: call it on a worker thread to run the generator.

        It holds no reference to the iterator, so dropping the iterator still
        stops the generator while the thread runs.
        """
        return self._producer_job().run

    def _producer_job(self) -> _Producer[T]:
        job = self._job
        if job is None:
            job = self._job = _Producer(
                self._channel, self._gen_func, self._context, self._probe, self._held
            )
        return job

    def _run(self) -> Awaitable[Any]:
        """Start ``_in_thread`` on a worker thread; return its completion."""
        return run_in_executor(self.executor, self._producer_call())

    def _producer_call(self) -> ThreadCall[None]:
        """Return the call that runs the generator (``snapshot()`` shows it while it runs)."""
        about = (self._KIND, self._name, self._limit_wait, self._channel, self._probe)
        return ThreadCall(self._require_loop(), self._in_thread, about=about)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _start(self, limit_wait: float | None = None) -> asyncio.Future[None]:
        loop = self._require_loop()
        channel = self._channel
        self._context.run(EVENT_LOOP.set, loop)
        on_loop_shutdown(loop, channel)
        self._limit_wait = limit_wait
        telemetry = current_telemetry() if self._instrumented else None
        if telemetry is not None:
            probe = telemetry.stream(self._KIND, self._name, channel.maxsize, channel.qsize)
            if limit_wait is not None:
                probe.limit_waited(limit_wait)
            channel.on_blocked = probe.blocked
            self._probe = probe
        if self._limiter is not None:
            self._held = self._limiter
        job = self._producer_job()
        try:
            producer = asyncio.ensure_future(self._run(), loop=loop)
        except BaseException as exc:  # _run() raised: nothing was started
            failed = refused_call(ThreadCall(loop, self._in_thread), exc)
            producer = asyncio.ensure_future(failed, loop=loop)
            if not isinstance(exc, Exception):
                job.settle_unrun(failed)
                raise
        # Normally the producer thread settles everything as it ends; this
        # covers a producer that never ran (refused or dropped by its executor).
        producer.add_done_callback(job.settle_unrun)
        self._producer = producer
        return producer

    def __aiter__(self) -> AsyncIterator[T]:
        """Start one ``async for``; leaving it early (``break``) stops the generator."""
        return _Iteration(self)

    if not TYPE_CHECKING:  # to type checkers it is not iterable
        # No ``__await__`` with a hint for ``await rows()``: it would make every
        # threaded iterable awaitable to ``inspect.isawaitable()``, and code that
        # awaits whatever is awaitable before iterating (subscription resolvers,
        # ``aiomisc.awaitable``) would stop iterating it. Type checkers reject
        # ``await rows()`` instead.

        def __getitem__(self, index):
            # ``for`` falls back to this where there is no ``__iter__``, so ``for row
            # in rows()`` gets a hint too; an ``__iter__`` would make it an Iterable
            # to isinstance() and send libraries that prefer a sync iterable (httpx's
            # request content) down the wrong path.
            raise TypeError(
                f"cannot iterate over {self._name}(...), an async iterator, with "
                "'for': use 'async for item in ...' in an async function"
            )

    async def __anext__(self) -> T:
        channel = self._channel
        if self._producer is None:
            if channel.is_closed:
                raise StopAsyncIteration
            if self._limiter is None:
                self._start()
            else:
                await self._start_when_admitted(self._limiter)
        try:
            item = channel.take_nowait()
            if item is EMPTY:
                item = await channel.get()
        except ChannelClosed:
            raise StopAsyncIteration from None
        except asyncio.CancelledError:
            channel.abandon(StopReason.CANCELLED)
            self._drop_if_unstarted()
            raise
        return item

    async def _start_when_admitted(self, limiter: CapacityLimiter) -> None:
        self._require_loop()
        waited_since = time.perf_counter()
        try:
            await limiter.acquire()
        except asyncio.CancelledError:
            self._channel.abandon(StopReason.CANCELLED)
            telemetry = current_telemetry() if self._instrumented else None
            if telemetry is not None:  # counted once, as an iterator that never ran
                channel = self._channel
                telemetry.stream(self._KIND, self._name, channel.maxsize, channel.qsize).skipped()
            raise
        if self._channel.is_closed or self._producer is not None:
            limiter.release()  # closed, or another __anext__ started it meanwhile
            if self._producer is None:
                raise StopAsyncIteration
            return
        try:
            self._start(time.perf_counter() - waited_since)
        except BaseException:
            if self._job is None:  # no producer took the place: give it back
                limiter.release()
            raise

    def close(self) -> Awaitable[None]:
        """Stop the generator; await the result to wait until its thread is done.

        Closing is immediate and idempotent; awaiting is optional. Awaiting
        raises the exception the generator's cleanup raised, if any; when
        nobody awaits, that exception is logged on the ``aiothreads`` logger.
        """
        self._channel.abandon(StopReason.CLOSED)
        if self._producer is None or self._drop_if_unstarted():
            return _DONE
        return _Closing(self._producer)

    def _drop_if_unstarted(self) -> bool:
        """On the loop, after the consumer left: make sure a queued producer never runs.

        Its executor's future is cancelled, so the work does not take a worker.
        Returns whether it was dropped (it had not started).
        """
        job, producer = self._job, self._producer
        if job is None or producer is None or not job.drop_unstarted():
            return False
        producer.cancel()
        return True

    async def aclose(self) -> None:
        """Stop the generator and wait until its thread is done."""
        await self.close()

    async def wait_closed(self) -> None:
        """Wait until the generator's thread is done, without stopping it."""
        if self._producer is not None:
            await _Closing(self._producer)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        channel = getattr(self, "_channel", None)
        if channel is not None and not channel.is_closed:
            channel.abandon(StopReason.COLLECTED)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running" if self._producer else "not started"
        return f"<{type(self).__name__} {self._name} {state}>"


class _Closing:
    """Waits for a producer without changing it: cancelling the waiter leaves it running.

    It creates nothing until awaited, so a close nobody awaits leaves no
    future with an unretrieved exception behind; see ``_ended``.
    """

    __slots__ = ("_producer",)

    def __init__(self, producer: asyncio.Future[None]) -> None:
        self._producer = producer

    def __await__(self) -> Generator[Any, None, None]:
        return _ended(self._producer).__await__()


def _ended(producer: asyncio.Future[None]) -> asyncio.Future[None]:
    """Return a future that ends when ``producer`` does: with its error, if any.

    A producer cancelled (dropped before it ran) ends it normally: the
    generator is closed, and only the awaiting task's own cancellation may
    raise ``CancelledError`` in it. Cancelling the returned future leaves the
    producer alone, as ``asyncio.shield`` would.
    """
    ended: asyncio.Future[None] = producer.get_loop().create_future()

    def relay(done: asyncio.Future[None]) -> None:
        if ended.done():
            return
        error = None if done.cancelled() else done.exception()
        if error is None:
            ended.set_result(None)
        else:
            ended.set_exception(error)

    def forget(waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            producer.remove_done_callback(relay)

    producer.add_done_callback(relay)
    ended.add_done_callback(forget)
    return ended


class _Iteration(Generic[T]):
    """One ``async for`` over a wrapper: dropping it stops the generator.

    ``async for`` holds this object, not the wrapper, so a ``break`` releases it
    even when the wrapper itself is still referenced (by the caller, or by a
    producer thread that a subclass started with ``self`` in reach).
    """

    __slots__ = ("_channel", "_wrapper")

    def __init__(self, wrapper: IteratorWrapper[Any, T]) -> None:
        self._wrapper = wrapper
        self._channel = wrapper.channel

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Coroutine[Any, Any, T]:
        return self._wrapper.__anext__()

    def __del__(self) -> None:
        channel = self._channel
        if not channel.is_closed:
            channel.abandon(StopReason.BREAK)


class IteratorWrapperSeparate(IteratorWrapper[P, T]):
    """An [`IteratorWrapper`][aiothreads.IteratorWrapper] with a thread of its own per generator."""

    __slots__ = ()
    _KIND: ClassVar[str] = "iterable_separate"

    def _run(self) -> Awaitable[Any]:
        return run_in_new_thread(self._producer_call(), name=f"aiothreads-{self._name}")


class _Producer(Generic[T]):
    """Runs the generator on its thread, and settles its iterator's books exactly once.

    Exactly one of three settles them, whichever claims the producer first:
    ``run`` (in the producer thread), ``drop_unstarted`` (the consumer
    left before it started) or ``settle_unrun`` (the executor refused or
    dropped it). So the limit place ``held`` is released exactly once.
    """

    __slots__ = ("_channel", "_context", "_gen_func", "_held", "_lock", "_probe", "_ran")

    def __init__(
        self,
        channel: FromThreadChannel[T],
        gen_func: Callable[[], Iterable[T]],
        context: contextvars.Context,
        probe: StreamProbe | None,
        held: CapacityLimiter | None,
    ) -> None:
        self._channel = channel
        self._gen_func = gen_func
        self._context = context
        self._probe = probe
        self._held = held
        self._lock = threading.Lock()
        self._ran = False

    def _claim(self) -> bool:
        with self._lock:
            claimed, self._ran = not self._ran, True
        return claimed

    def run(self) -> None:
        """Run the generator here, unless the producer was settled as unrun already."""
        if not self._claim():
            return
        channel, probe = self._channel, self._probe
        try:
            if probe is not None:
                probe.running(self._context)
            try:
                outcome, error, reason = self._context.run(
                    run_in_stream_scope, channel, _pump, channel, self._gen_func, probe
                )
            except BaseException as exc:
                if probe is not None:
                    probe.ended(ERROR, exc, channel.close_reason)
                raise
            # Reported before the consumer can see the end, so counts read then are final.
            if probe is not None:
                probe.ended(outcome, error, reason)
            if outcome is OK:
                channel.close()
            elif error is not None:
                channel.fail(error)
        finally:
            if self._held is not None:
                self._held.release()

    def drop_unstarted(self) -> bool:
        """Settle the books of a producer that has not started, so it never will.

        Returns ``False`` if it has started (it settles them itself).
        """
        if not self._claim():
            return False
        if self._probe is not None:
            self._probe.skipped(context=self._context)
        if self._held is not None:
            self._held.release()
        return True

    def settle_unrun(self, producer: asyncio.Future[Any]) -> None:
        """Done callback of the producer's future: settle a producer that never ran."""
        error = None if producer.cancelled() else producer.exception()
        if not self._claim():  # it ran, and settled its books itself
            if error is not None:
                logger.error(
                    "a threaded generator failed while it was being stopped", exc_info=error
                )
            return
        if error is None:
            error = ExecutorRefused(
                "the executor dropped the generator before it ran (shut down, or cancelled it)"
            )
        self._channel.fail(error)
        if self._probe is not None:
            self._probe.skipped(ERROR, error, self._context)
        if self._held is not None:
            self._held.release()


_FLUSH_EVERY: Final = 256
"""Items counted locally before they are reported, to keep per-item cost low."""


def _pump(
    channel: FromThreadChannel[T],
    gen_func: Callable[[], Iterable[T]],
    probe: StreamProbe | None,
) -> tuple[Outcome, BaseException | None, StopReason | None]:
    """Move the generator's items into ``channel``; return (outcome, error, stop reason).

    The channel is left open for the caller to close (or fail) once the end is reported.
    """
    if channel.is_closed:
        return CANCELLED, None, channel.close_reason
    try:
        generator = iter(gen_func())
    except BaseException as exc:
        return ERROR, exc, StopReason.ERROR
    try:
        if probe is None:
            consumer_left = _put_all(channel, generator)
        else:
            consumer_left = _put_all_counted(channel, generator, probe)
    except BaseException as exc:  # raised by the generator
        return ERROR, exc, StopReason.ERROR
    if consumer_left:
        close = getattr(generator, "close", None)
        if close is not None:
            close()  # an error in its cleanup reaches whoever awaits the close
        return CANCELLED, None, channel.close_reason or StopReason.CLOSED
    return OK, None, None


def _put_all(channel: FromThreadChannel[T], generator: Iterator[T]) -> bool:
    """Put every item into ``channel``; return whether the consumer left first."""
    put = channel.put
    for item in generator:
        try:
            put(item)
        except ChannelClosed:
            return True
    return False


def _put_all_counted(
    channel: FromThreadChannel[T], generator: Iterator[T], probe: StreamProbe
) -> bool:
    """``_put_all``, reporting items to ``probe`` every ``_FLUSH_EVERY`` and at the end."""
    put = channel.put
    pending = 0
    try:
        for item in generator:
            try:
                put(item)
            except ChannelClosed:
                return True
            pending += 1
            if pending == _FLUSH_EVERY:
                probe.yielded(pending)
                pending = 0
    finally:
        if pending:
            probe.yielded(pending)
    return False
