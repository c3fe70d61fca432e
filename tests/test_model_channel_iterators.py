"""Stateful models of ``FromThreadChannel`` and of the threaded iterators.

Hypothesis drives the real library with random sequences of steps and compares
it, after every step, with a small model written here in plain Python. Both
machines run on every loop kind of ``LOOP_FACTORIES`` (asyncio's and uvloop).

The channel model (``ChannelMachine``) has producer threads that put, close and
fail the channel, and consumers that get on the loop. It checks that:

* a ``put()`` returns at once while there is room, blocks while the channel is
  full (backpressure; the depth never exceeds ``maxsize``) and raises
  ``ChannelClosed`` once the channel is closed, also when it was blocked;
* a blocked producer is woken when the channel drains to half its size, and the
  woken producers fill exactly the room there is;
* ``qsize()``, ``items_put``, ``is_closed`` and ``waiting_for_room`` equal the
  model after every step;
* every item a ``put()`` accepted is delivered exactly once, in order per
  producer: nothing lost, duplicated or reordered, also when a close races the
  puts, when getters wait as producers put, or when a waiting getter is
  cancelled (its wake-up passes to the next getter);
* the first close wins: a producer's error is raised once, after the items,
  and a later ``close()`` or ``fail()`` changes nothing; after a ``close()`` a
  later ``fail()`` is ignored.

The iterator model (``IteratorMachine``) runs up to three live iterators of the
same generator function, decorated with ``threaded_iterable(max_size=N)`` and
``threaded_iterable_separate(max_size=N)``. The generator yields only when the
model tells it to, so the model knows what it has produced. It checks that:

* nothing runs before the first ``__anext__()``;
* items arrive in order; the generator runs at most ``max_size`` items ahead
  (plus the one it holds) and the channel depth equals the model; its end or
  its exception reaches the consumer after its items;
* leaving early (``break``, ``aclose()``) or cancelling the consumer while it
  waits for an item stops the generator with ``GeneratorExit`` at its
  ``yield``, runs its ``finally`` and frees its thread (a pool of as many
  workers as live iterators would starve otherwise), also when it was blocked
  on a full channel; afterwards the iterator is closed and ends at once, and
  ``aclose()`` returns (after a ``break`` that came once the generator had
  ended by itself, what it buffered may still come: all of it or none);
* a start the executor refuses gives the caller the executor's error
  (``ExecutorRefused`` chained to a plain ``RuntimeError``, any other type as
  it is), runs nothing, gives the ``limit=`` place back and leaves the
  iterator neither counted active nor open;
* live iterators of one function are independent: each has its own items,
  backpressure and end;
* where prometheus-client is installed, the iterators counted active, the
  calls finished by outcome and the generators stopped by reason equal the
  model whenever the model's expectation of them changes.

Producers are never watched by sleeping: each machine replaces the channel's
condition for room with one that reports which threads wait on it and when a
notify wakes them, so a step ends in a settled state (every thread done, or
waiting unwoken) and the model can be compared exactly.

Two bugs the iterator model found have a test of their own at the end:
waiting for a generator dropped before it ran raised ``CancelledError`` in a
task nobody cancelled (``test_waiting_after_a_dropped_start``), and an
iterator closed by its consumer still raised the error its generator had
buffered (``test_aclose_drops_a_buffered_error``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiothreads import (
    CapacityLimiter,
    ChannelClosed,
    ExecutorRefused,
    FromThreadChannel,
    instrumentation,
    runs_in_threads,
    threaded_iterable,
    threaded_iterable_separate,
)
from tests.conftest import LOOP_FACTORIES
from tests.modelling import MODEL_TIMEOUT, model_settings

pytestmark = MODEL_TIMEOUT

if TYPE_CHECKING:
    import unittest

    from aiothreads import IteratorWrapper, ThreadedIterableBase

METRICS_READABLE = importlib.util.find_spec("prometheus_client") is not None
"""The core suite runs without the instrumentation extras, so without metrics to compare."""

T = TypeVar("T")

WAIT = 5.0
"""Seconds any wait may take before the step fails: a bug fails, it never hangs."""

IDLE_LIMIT = 120.0
"""Seconds a producer thread waits for its next command before it gives up."""

PRODUCERS = 3
MAX_LIVE = 3
RUNAWAY = 50
"""Items a released generator may yield before it is taken to run away."""

WAITING = "waiting"
WOKEN = "woken"


def choose(options: list[T], pick: int) -> T:
    return options[pick % len(options)]


class Board:
    """Where threads report their progress; the machines wait on it for a settled state."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.room_waits: dict[int, str] = {}
        """Per thread waiting for room in a channel: ``waiting``, or ``woken`` once notified."""

    def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, WAIT):
                raise AssertionError(f"not within {WAIT} s: {what}")

    def blocked(self, ident: int | None) -> bool:
        """Whether thread ``ident`` waits for room and nothing has woken it (hold ``cond``)."""
        return ident is not None and self.room_waits.get(ident) == WAITING


class WatchedRoom(threading.Condition):
    """A channel's condition for room, reporting to a board who waits on it and when woken.

    A thread is ``waiting`` from the moment it waits (the channel's lock is
    released atomically) until a notify marks it ``woken``: a thread still
    ``waiting`` cannot move until the next notify, so the state is settled.
    """

    def __init__(self, lock: Any, board: Board) -> None:
        super().__init__(lock)
        self._board = board

    def wait(self, timeout: float | None = None) -> bool:
        ident = threading.get_ident()
        with self._board.cond:
            self._board.room_waits[ident] = WAITING
            self._board.cond.notify_all()
        try:
            return super().wait(timeout)
        finally:
            with self._board.cond:
                self._board.room_waits.pop(ident, None)
                self._board.cond.notify_all()

    def _mark_woken(self, n: int | None) -> None:
        """Mark the first ``n`` waiting threads (all if ``None``) woken, as a notify wakes them.

        Both the board and the condition list waiters in the order they
        began to wait, each under the channel's lock.
        """
        with self._board.cond:
            waits = self._board.room_waits
            waiting = [ident for ident, state in waits.items() if state == WAITING]
            for ident in waiting if n is None else waiting[:n]:
                waits[ident] = WOKEN
            self._board.cond.notify_all()

    def notify(self, n: int = 1) -> None:
        self._mark_woken(n)
        super().notify(n)

    def notify_all(self) -> None:
        self._mark_woken(None)
        super().notify_all()


def watch_room(channel: FromThreadChannel[Any], board: Board) -> None:
    """Make ``channel`` report its producers' waits for room to ``board``."""
    channel._not_full = WatchedRoom(channel._lock, board)


def run_on(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(coroutine)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def outcome_of(awaitable: Coroutine[Any, Any, T]) -> T | Exception:
    """Await ``awaitable`` (at most ``WAIT`` seconds); return what it returned or raised."""
    try:
        return await asyncio.wait_for(awaitable, WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"still waiting after {WAIT} s") from None
    except Exception as exc:  # the outcome under test, compared by the caller
        return exc


async def settle_tasks(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel what is left of ``tasks`` and retrieve every outcome."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def results_of(tasks: Iterable[asyncio.Future[T]]) -> list[T | BaseException]:
    """Finished tasks' results, or the exceptions they raised (retrieved)."""
    results: list[T | BaseException] = []
    for task in tasks:
        if task.cancelled():
            results.append(asyncio.CancelledError())
        else:
            error = task.exception()
            results.append(task.result() if error is None else error)
    return results


# -- the channel --------------------------------------------------------------------

Item = tuple[int, int]
"""(producer, sequence number)."""


class ProducerError(Exception):
    """What a producer fails the channel with; each is numbered, to tell them apart."""

    made = itertools.count(1)

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} #{next(self.made)}")


class Producer:
    """A thread that runs the commands it is given, one at a time, and reports to a board."""

    def __init__(self, number: int, board: Board) -> None:
        self.number = number
        self.board = board
        self.sequence = 0
        self.busy = False
        self.outcome: BaseException | None = None
        """What the last command raised; ``None`` if it returned."""
        self._commands: queue.SimpleQueue[
            tuple[Callable[[], object], threading.Event | None] | None
        ] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._serve, name=f"model-producer-{number}", daemon=True
        )
        self.thread.start()

    @property
    def ident(self) -> int | None:
        return self.thread.ident

    def next_item(self) -> Item:
        item = (self.number, self.sequence)
        self.sequence += 1
        return item

    def run(self, action: Callable[[], object], go: threading.Event | None = None) -> None:
        """Run ``action`` in this thread, once ``go`` is set if given."""
        with self.board.cond:
            assert not self.busy, f"producer {self.number} is still busy"
            self.busy = True
            self.outcome = None
        self._commands.put((action, go))

    def _serve(self) -> None:
        while True:
            try:
                command = self._commands.get(timeout=IDLE_LIMIT)
            except queue.Empty:
                return
            if command is None:
                return
            action, go = command
            outcome: BaseException | None = None
            if go is not None and not go.wait(WAIT):
                outcome = AssertionError("never told to go")
            else:
                try:
                    action()
                except BaseException as exc:  # reported to the model, which judges it
                    outcome = exc
            with self.board.cond:
                self.outcome = outcome
                self.busy = False
                self.board.cond.notify_all()

    def stop(self) -> bool:
        """End the thread; return whether it ended."""
        self._commands.put(None)
        self.thread.join(WAIT)
        return not self.thread.is_alive()


@dataclass
class ChannelModel:
    maxsize: int
    batches: deque[set[Item]] = field(default_factory=deque)
    """Items in the channel: batches in order; the order within one batch is free."""
    pending: dict[int, Item] = field(default_factory=dict)
    """Per producer blocked in ``put()``, the item it holds."""
    closed: bool = False
    endings: list[BaseException | None] = field(default_factory=lambda: [None])
    """What ``get()`` raises once drained (``None``: ``ChannelClosed``); several while undecided."""
    accepted: int = 0

    @property
    def depth(self) -> int:
        return sum(len(batch) for batch in self.batches)

    @property
    def room(self) -> float:
        return float("inf") if not self.maxsize else self.maxsize - self.depth

    def add(self, items: Iterable[Item]) -> None:
        batch = set(items)
        if batch:
            self.batches.append(batch)
            self.accepted += len(batch)

    def deliver(self, item: object) -> None:
        assert self.batches, f"get() returned {item!r} from a channel the model holds empty"
        head = self.batches[0]
        assert item in head, f"get() returned {item!r}; next in the model: {sorted(head)}"
        head.discard(item)
        if not head:
            self.batches.popleft()

    def close(self, error: BaseException | None) -> None:
        if not self.closed:
            self.closed = True
            self.endings = [error]

    def ended(self, raised: BaseException) -> None:
        """``get()`` raised ``raised`` once drained; it must be one of the possible endings."""
        assert self.closed, f"get() raised {raised!r} on a channel the model holds open"
        assert not self.batches, f"get() raised {raised!r} with {self.depth} items left"
        if isinstance(raised, ChannelClosed):
            assert None in self.endings, f"get() raised ChannelClosed, expected {self.endings}"
        else:
            assert any(raised is error for error in self.endings), (
                f"get() raised {raised!r}, expected one of {self.endings}"
            )
        self.endings = [None]  # an error is raised once


class ChannelMachine(RuleBasedStateMachine):
    """Producers in threads and consumers on the loop, against ``ChannelModel``."""

    loop_kind: ClassVar[str] = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.loop = LOOP_FACTORIES[self.loop_kind]()
        self.board = Board()
        self.producers = [Producer(number, self.board) for number in range(PRODUCERS)]
        self.channel: FromThreadChannel[Item] | None = None
        self.model: ChannelModel | None = None
        self.steps = 0
        self.open_for = 0

    @property
    def may_close(self) -> bool:
        """Whether closing is allowed yet: an early close would leave little to test."""
        return self.steps >= self.open_for

    @property
    def live(self) -> FromThreadChannel[Item]:
        assert self.channel is not None
        return self.channel

    @property
    def state(self) -> ChannelModel:
        assert self.model is not None
        return self.model

    def idle(self) -> list[Producer]:
        with self.board.cond:
            return [producer for producer in self.producers if not producer.busy]

    def settle(self) -> None:
        """Wait until every producer has finished its command or waits, unwoken, for room."""

        def settled() -> bool:
            return all(
                not producer.busy or self.board.blocked(producer.ident)
                for producer in self.producers
            )

        self.board.wait_until(settled, "every producer finished or blocked for room")

    def expect_closed(self, producer: Producer, what: str) -> None:
        assert not producer.busy, f"{what}: producer {producer.number} is still blocked"
        assert isinstance(producer.outcome, ChannelClosed), (
            f"{what}: put() of producer {producer.number} gave {producer.outcome!r}, "
            "expected ChannelClosed"
        )

    def expect_returned(self, producer: Producer, what: str) -> None:
        assert not producer.busy, f"{what}: producer {producer.number} is blocked"
        assert producer.outcome is None, (
            f"{what}: producer {producer.number} raised {producer.outcome!r}"
        )

    def pending_closed(self, what: str) -> None:
        """The channel closed: every producer blocked in ``put()`` got ``ChannelClosed``."""
        for number in self.state.pending:
            self.expect_closed(self.producers[number], what)
        self.state.pending.clear()

    def woken_after_take(self) -> None:
        """After a take: the producers blocked for room fill it once the channel is half empty."""
        model = self.state
        if not model.pending:
            return
        self.settle()
        done = [number for number in model.pending if not self.producers[number].busy]
        for number in done:
            self.expect_returned(self.producers[number], "a woken producer")
        most = min(len(model.pending), model.room)
        least = most if model.depth <= model.maxsize // 2 else 0
        assert least <= len(done) <= most, (
            f"{len(done)} blocked producers put after a take, expected {least} to {most} "
            f"(depth {model.depth}, maxsize {model.maxsize}, {len(model.pending)} blocked)"
        )
        event(f"take: woke {len(done)} of {len(model.pending)} blocked producers")
        model.add(model.pending.pop(number) for number in done)

    def act(self, action: Callable[[], object], *, on_loop: bool) -> None:
        if on_loop:

            async def act() -> None:
                action()

            run_on(self.loop, act())
        else:
            self.idle()[0].run(action)
        self.settle()

    @initialize(maxsize=st.sampled_from([1, 2, 3, 4, 0]), open_for=st.integers(0, 30))
    def make_channel(self, maxsize: int, open_for: int) -> None:
        self.open_for = open_for

        async def make() -> FromThreadChannel[Item]:
            return FromThreadChannel(maxsize=maxsize)  # bound to this loop

        self.channel = run_on(self.loop, make())
        watch_room(self.channel, self.board)
        self.model = ChannelModel(maxsize)

    @precondition(lambda self: self.model is not None and self.idle())
    @rule(pick=st.integers(0, PRODUCERS - 1))
    def put(self, pick: int) -> None:
        producer = choose(self.idle(), pick)
        item = producer.next_item()
        model = self.state
        producer.run(partial(self.live.put, item))
        self.settle()
        if model.closed:
            event("put: on a closed channel")
            self.expect_closed(producer, "put() on a closed channel")
        elif model.room > 0:
            event("put: returned")
            self.expect_returned(producer, f"put() with room for {model.room}")
            model.add([item])
        else:
            event("put: blocked")
            assert producer.busy, (
                f"put() returned ({producer.outcome!r}) on a full channel of {model.maxsize}"
            )
            model.pending[producer.number] = item

    @precondition(lambda self: self.model is not None and (self.model.depth or self.model.closed))
    @rule()
    def get(self) -> None:
        outcome = run_on(self.loop, outcome_of(self.live.get()))
        if isinstance(outcome, BaseException):
            event(f"get: raised {type(outcome).__name__}")
            self.state.ended(outcome)
        else:
            self.state.deliver(outcome)
        self.woken_after_take()

    @precondition(lambda self: self.model is not None and self.may_close)
    @rule(error=st.booleans(), on_loop=st.booleans())
    def close(self, error: bool, on_loop: bool) -> None:
        on_loop = on_loop or not self.idle()
        failure = ProducerError("the producer failed") if error else None
        channel = self.live
        action = partial(channel.fail, failure) if failure is not None else channel.close
        self.act(action, on_loop=on_loop)
        state = "closed" if self.state.closed else "open"
        event(f"close: {'fail' if error else 'close'} on an {state} channel")
        self.state.close(failure)
        self.pending_closed("close()")

    @precondition(lambda self: self.model is not None and self.idle())
    @rule(
        putters=st.integers(1, PRODUCERS),
        closer=st.sampled_from([None, "close", "fail", "two fails", "close on the loop"]),
    )
    def puts_race(self, putters: int, closer: str | None) -> None:
        """Several producers put at once, and maybe race a close or two."""
        model = self.state
        channel = self.live
        idle = self.idle()
        if not self.may_close or (closer in ("close", "fail", "two fails") and len(idle) < 2):
            closer = None
        closers: list[tuple[Producer, BaseException | None]] = []
        if closer == "close":
            closers = [(idle.pop(), None)]
        elif closer == "fail":
            closers = [(idle.pop(), ProducerError("fail racing puts"))]
        elif closer == "two fails" and len(idle) >= 3:
            closers = [(idle.pop(), ProducerError("first")), (idle.pop(), ProducerError("second"))]
        elif closer == "two fails":
            closers = [(idle.pop(), ProducerError("alone"))]
        racing = idle[:putters]
        items = {producer.number: producer.next_item() for producer in racing}
        go = threading.Event()
        for producer in racing:
            producer.run(partial(channel.put, items[producer.number]), go)
        for producer, failure in closers:
            action = channel.close if failure is None else partial(channel.fail, failure)
            producer.run(action, go)
        go.set()
        if closer == "close on the loop":
            channel.close()
        self.settle()
        was_closed, room = model.closed, model.room
        accepted = []
        for producer in racing:
            if not producer.busy and producer.outcome is None:
                accepted.append(items[producer.number])
            elif closer is None and not was_closed:
                assert producer.busy, f"put() of producer {producer.number}: {producer.outcome!r}"
                model.pending[producer.number] = items[producer.number]
            else:
                self.expect_closed(producer, f"put() racing {closer}")
        for producer, _ in closers:
            self.expect_returned(producer, str(closer))
        assert not (was_closed and accepted), f"put() of {accepted} succeeded after close"
        assert len(accepted) <= room, f"{len(accepted)} puts succeeded with room for {room}"
        if closer is None and not was_closed:
            assert len(accepted) == min(len(racing), room), (
                f"{len(accepted)} of {len(racing)} puts returned with room for {room}"
            )
        event(f"race: {len(accepted)} of {len(racing)} puts before {closer}")
        model.add(accepted)
        if closer is not None:
            self.pending_closed(f"put() racing {closer}")
            if not was_closed:
                model.closed = True
                model.endings = [failure for _, failure in closers] or [None]

    @precondition(
        lambda self: (
            self.model is not None
            and not self.model.closed
            and not self.model.depth
            and self.idle()
        )
    )
    @rule(
        getters=st.integers(1, 3),
        puts=st.integers(0, PRODUCERS),
        closer=st.sampled_from([None, "close", "fail", "close on the loop"]),
    )
    def getters_wait_for_puts(self, getters: int, puts: int, closer: str | None) -> None:
        model = self.state
        channel = self.live
        idle = self.idle()
        if not self.may_close:
            closer = None
        closing: tuple[Producer, BaseException | None] | None = None
        if closer in ("close", "fail") and len(idle) >= 2:
            closing = (idle.pop(), ProducerError("fail racing gets") if closer == "fail" else None)
        elif closer in ("close", "fail"):
            closer = "close on the loop"
        puts = min(puts, len(idle), model.maxsize or PRODUCERS)
        if closer is None:
            puts = max(puts, 1)
            getters = min(getters, puts)
        putters = idle[:puts]
        items = {producer.number: producer.next_item() for producer in putters}

        async def scenario() -> list[Item | BaseException]:
            tasks = [asyncio.ensure_future(channel.get()) for _ in range(getters)]
            await asyncio.sleep(0)  # each getter finds the channel empty and waits
            assert not any(task.done() for task in tasks), "a get() on an empty channel returned"
            go = threading.Event()
            for producer in putters:
                producer.run(partial(channel.put, items[producer.number]), go)
            if closing is not None:
                producer, failure = closing
                producer.run(
                    channel.close if failure is None else partial(channel.fail, failure), go
                )
            go.set()
            if closer == "close on the loop":
                channel.close()
            _, waiting = await asyncio.wait(tasks, timeout=WAIT)
            await settle_tasks(waiting)
            assert not waiting, f"{len(waiting)} getters still wait after {puts} puts and {closer}"
            return results_of(tasks)

        results = run_on(self.loop, scenario())
        self.settle()
        accepted = set()
        for producer in putters:
            if producer.outcome is None and not producer.busy:
                accepted.add(items[producer.number])
            else:
                self.expect_closed(producer, f"put() racing {closer}")
        if closer is None:
            assert len(accepted) == puts, f"only {len(accepted)} of {puts} puts succeeded"
        if closing is not None:
            self.expect_returned(closing[0], str(closer))
        received = [result for result in results if not isinstance(result, BaseException)]
        ends = [result for result in results if isinstance(result, BaseException)]
        assert len(received) == len(set(received)), f"an item was delivered twice: {received}"
        assert set(received) <= accepted, f"got {received}, only {sorted(accepted)} were put"
        left = accepted - set(received)
        assert not (ends and left), f"get() raised {ends} with {sorted(left)} still in the channel"
        event(f"getters: {len(received)} items, {len(ends)} ends, closer {closer}")
        model.add(accepted)
        for item in received:
            model.deliver(item)
        if closer is not None:
            model.close(closing[1] if closing is not None else None)
        for end in sorted(ends, key=lambda end: isinstance(end, ChannelClosed)):
            if isinstance(end, asyncio.CancelledError):
                raise AssertionError("a getter was cancelled")
            model.ended(end)

    @precondition(
        lambda self: (
            self.model is not None
            and not self.model.closed
            and not self.model.depth
            and self.idle()
        )
    )
    @rule(handoff=st.booleans())
    def cancel_a_waiting_get(self, handoff: bool) -> None:
        model = self.state
        channel = self.live
        producer = self.idle()[0]
        item = producer.next_item()

        async def scenario() -> list[Item | BaseException]:
            first = asyncio.ensure_future(channel.get())
            tasks = [first]
            if handoff:
                tasks.append(asyncio.ensure_future(channel.get()))
            await asyncio.sleep(0)  # both wait for an item
            assert not any(task.done() for task in tasks), "a get() on an empty channel returned"
            if handoff:  # the item is put and wakes the first getter, which is then cancelled
                producer.run(partial(channel.put, item))
                self.settle()
                self.expect_returned(producer, "put() with getters waiting")
            first.cancel()
            await asyncio.wait([first], timeout=WAIT)
            assert first.done(), "a cancelled get() still waits"
            if handoff and first.cancelled():
                _, waiting = await asyncio.wait(tasks[1:], timeout=WAIT)
                await settle_tasks(waiting)
                assert not waiting, "the wake-up of a cancelled getter was lost"
            await settle_tasks(tasks)
            return results_of(tasks)

        results = run_on(self.loop, scenario())
        received = [result for result in results if not isinstance(result, BaseException)]
        first = "cancelled" if isinstance(results[0], asyncio.CancelledError) else "got the item"
        event(f"cancel a waiting get: handoff {handoff}, the first getter {first}")
        for result in results:
            if isinstance(result, BaseException):
                assert isinstance(result, asyncio.CancelledError), f"get() raised {result!r}"
        if handoff:
            model.add([item])
            assert received == [item], f"the item put was received as {received}"
            model.deliver(item)
        else:
            assert not received, f"a cancelled get() returned {received}"

    @invariant()
    def channel_matches_model(self) -> None:
        if self.model is None:
            return
        model, channel = self.model, self.live
        self.settle()
        assert channel.qsize() == len(channel) == model.depth, (
            f"depth {channel.qsize()}, model {model.depth}"
        )
        assert channel.is_closed == model.closed, f"is_closed {channel.is_closed}, model {model}"
        assert channel.items_put == model.accepted, (
            f"items_put {channel.items_put}, model {model.accepted}"
        )
        with self.board.cond:
            blocked = {producer.number for producer in self.producers if producer.busy}
        assert blocked == set(model.pending), f"blocked {blocked}, model {set(model.pending)}"
        assert channel.waiting_for_room == bool(model.pending), (
            f"waiting_for_room {channel.waiting_for_room}, blocked {sorted(model.pending)}"
        )
        if model.maxsize:
            assert model.depth <= model.maxsize, f"{model.depth} items in a channel of {model}"
        self.steps += 1

    def teardown(self) -> None:
        try:
            if self.channel is not None:
                self.channel.close()  # wakes every blocked producer
            stuck = [producer.number for producer in self.producers if not producer.stop()]
        finally:
            close_loop(self.loop)
        assert not stuck, f"producers {stuck} never ended"


# -- the iterators ------------------------------------------------------------------

NAME = "model.numbers"
REFUSED = "model.refused"
POOL = "iterable"
SEPARATE = "iterable_separate"
KINDS = (POOL, SEPARATE)

YIELD, END, RAISE = "yield", "end", "raise"
RETURNED, RAISED, EXITED = "returned", "raised", "exited"


class GeneratorFailure(Exception):
    """What a generator raises when the model tells it to."""


class Overloaded(Exception):
    """An executor's own refusal, of a type of its own."""


class CountingPool(ThreadPoolExecutor):
    """A thread pool that counts the work it is given: one generator per start."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers, thread_name_prefix="model-iterators")
        self.submitted = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@runs_in_threads
class RefusingExecutor(Executor):
    """An executor whose ``submit()`` raises ``error``."""

    def __init__(self) -> None:
        self.error: Exception = RuntimeError("shut down")
        self.submitted = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.submitted += 1
        raise self.error


class Control:
    """Drives one generator from the model: it yields only when told, and says where it is."""

    def __init__(self) -> None:
        self.board = Board()
        self.commands: deque[str] = deque()
        self.released = False
        self.called = False
        self.thread: threading.Thread | None = None
        self.produced = 0
        self.produced_at_release = 0
        self.waiting = False
        self.finished = False
        self.how: str | None = None
        self.error: GeneratorFailure | None = None
        self.broken: str | None = None

    @property
    def cond(self) -> threading.Condition:
        return self.board.cond

    def watch(self, channel: FromThreadChannel[Any]) -> None:
        watch_room(channel, self.board)

    def blocked(self) -> bool:
        """Whether the generator waits, unwoken, for room in its channel (hold ``cond``)."""
        return self.board.blocked(None if self.thread is None else self.thread.ident)

    def push(self, *commands: str) -> None:
        with self.cond:
            self.commands.extend(commands)
            self.cond.notify_all()

    def release(self) -> None:
        """Let the generator yield freely: its consumer has left, so its next put fails."""
        with self.cond:
            if not self.released:
                self.released = True
                self.produced_at_release = self.produced
            self.cond.notify_all()

    def settled(self, channel: FromThreadChannel[Any]) -> bool:
        """Whether the generator waits for a command or for room, or has ended (hold ``cond``)."""
        if self.finished:
            return channel.is_closed  # closed by the producer after it reported the end
        return (self.waiting and not self.commands) or self.blocked()

    # -- called by the generator, in its thread --

    def begin(self) -> None:
        with self.cond:
            self.called = True
            self.thread = threading.current_thread()
            self.cond.notify_all()

    def next_command(self) -> str:
        with self.cond:
            self.waiting = True
            self.cond.notify_all()
            try:
                told = self.cond.wait_for(lambda: bool(self.commands) or self.released, WAIT)
            finally:
                self.waiting = False
            if not told:
                self.broken = f"told nothing for {WAIT} s"
            elif self.commands:
                return self.commands.popleft()
            elif self.produced - self.produced_at_release >= RUNAWAY:
                self.broken = f"yielded {RUNAWAY} items after its consumer left"
            else:
                return YIELD
            raise AssertionError(self.broken)

    def produce(self) -> int:
        with self.cond:
            item = self.produced
            self.produced += 1
            return item

    def ended(self, how: str) -> None:
        with self.cond:
            self.how = how

    def failure(self) -> GeneratorFailure:
        with self.cond:
            self.how = RAISED
            self.error = GeneratorFailure(f"raised after {self.produced} items")
            return self.error

    def finish(self) -> None:
        with self.cond:
            self.finished = True
            self.cond.notify_all()


def numbers(control: Control) -> Generator[int, None, None]:
    """Yield 0, 1, 2, ... as ``control`` tells; end or raise when told."""
    control.begin()
    try:
        while True:
            command = control.next_command()
            if command == END:
                control.ended(RETURNED)
                return
            if command == RAISE:
                raise control.failure()
            item = control.produce()
            try:
                yield item
            except GeneratorExit:
                control.ended(EXITED)
                raise
    finally:
        control.finish()


@dataclass(eq=False)
class Live:
    """One iterator the consumer has not finished with, and what the model knows of it."""

    kind: str
    wrapper: IteratorWrapper[Any, int]
    control: Control
    started: bool = False
    """Whether ``__anext__()`` was called: the iterator is counted from then."""
    granted: int = 0
    """Items the generator was told to yield."""
    ending: str | None = None
    """``end`` or ``raise``, once told (after the granted items)."""
    taken: int = 0
    counted: bool = False
    """Whether its end was added to the expected counts."""
    patience: int = 0
    """Steps before its consumer may leave: one that leaves at once leaves little to test."""
    age: int = 0
    """Steps since it was made."""

    @property
    def may_leave(self) -> bool:
        return self.age >= self.patience

    def __repr__(self) -> str:
        return f"<{self.kind} iterator {id(self):#x}: {self.taken}/{self.granted} {self.ending}>"


@dataclass
class Counts:
    """What the metrics must show, per (kind, outcome) and (kind, reason)."""

    finished: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    reasons: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    refused: int = 0


class Metrics:
    """The library's metrics on a registry of their own, if prometheus-client is installed."""

    def __init__(self) -> None:
        self.registry: Any = None
        if METRICS_READABLE:
            from prometheus_client import CollectorRegistry

            self.registry = CollectorRegistry()
        if self.registry is None:
            instrumentation.configure(enabled=False)
        else:
            instrumentation.configure(
                prometheus=True,
                registry=self.registry,
                opentelemetry=False,
                opentelemetry_metrics=False,
                structlog=False,
            )

    def read(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        if self.registry is None:
            return None
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.registry.collect()
            for sample in family.samples
        }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def next_of(wrapper: IteratorWrapper[Any, int]) -> int | Exception:
    """The next item, or what ``__anext__()`` raised (``StopAsyncIteration`` included)."""
    return await outcome_of(wrapper.__anext__())


class IteratorMachine(RuleBasedStateMachine):
    """Threaded iterators of one generator function, against a model of each."""

    loop_kind: ClassVar[str] = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.threads_before = set(threading.enumerate())
        self.loop = LOOP_FACTORIES[self.loop_kind]()
        self.pool = CountingPool(MAX_LIVE)
        self.pool_starts = 0
        """How many iterators of the pool kind were started: the generators it was given."""
        self.metrics = Metrics()
        self.refusing = RefusingExecutor()
        self.limiter = CapacityLimiter(1)
        self.live: list[Live] = []
        self.sources: dict[str, ThreadedIterableBase[[Control], int]] = {}
        self.refused_sources: dict[bool, ThreadedIterableBase[[Control], int]] = {}
        self.max_size = 0
        self.expected = Counts()
        self.compared: object = None
        """The expected counts the metrics were last compared with."""

    # -- helpers --

    def settle(self) -> None:
        """Wait until every running generator waits for a command or for room, or has ended."""
        for live in self.live:
            if live.started:
                control = live.control
                settled = partial(control.settled, live.wrapper.channel)
                control.board.wait_until(
                    settled, f"{live}: the generator waits for a command or for room, or ended"
                )

    def count_end(self, live: Live, reason: str | None) -> None:
        """Add the end of ``live``'s generator to the expected counts, once."""
        if live.counted or not live.started:
            return
        live.counted = True
        how = live.control.how
        outcome = (
            {RETURNED: "ok", RAISED: "error", EXITED: "cancelled"}[how] if how else "cancelled"
        )
        self.expected.finished[live.kind, outcome] += 1
        if how == RAISED:
            self.expected.reasons[live.kind, "error"] += 1
        elif how == EXITED and reason is not None:
            self.expected.reasons[live.kind, reason] += 1

    def check_generator_end(self, live: Live, *, left: bool) -> None:
        """The generator ended: as told, or (``left``) stopped at its ``yield``."""
        control = live.control
        assert control.broken is None, f"{live}: {control.broken}"
        assert control.finished, f"{live}: the generator's finally never ran"
        if control.how in (RETURNED, RAISED):
            told = {RETURNED: END, RAISED: RAISE}[control.how]
            assert live.ending == told, f"{live}: the generator {control.how}, not told to"
            assert control.produced == live.granted, (
                f"{live}: the generator {control.how} after {control.produced} items"
            )
        else:
            assert control.how == EXITED, f"{live}: the generator ended with {control.how!r}"
            assert left, f"{live}: the generator was stopped with its consumer there"
            assert control.produced <= live.granted + 1, (
                f"{live}: yielded {control.produced} items after its consumer left"
            )
        if control.thread is not None and live.kind == SEPARATE:
            control.thread.join(WAIT)
            assert not control.thread.is_alive(), f"{live}: the generator's thread still runs"

    async def wait_for_thread(self, live: Live) -> None:
        """Wait until the generator's thread is done, and check it stopped as it should."""
        try:
            await asyncio.wait_for(live.wrapper.wait_closed(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"{live}: the generator's thread never ended") from None

    async def ends_at_once(self, live: Live) -> None:
        """A finished iterator is closed; ``__anext__()`` ends, ``aclose()`` returns."""
        assert live.wrapper.closed, f"{live} is not closed"
        outcome = await next_of(live.wrapper)
        assert isinstance(outcome, StopAsyncIteration), f"{live}: __anext__() gave {outcome!r}"
        await self.closes_quietly(live)

    async def rest_after_break(self, live: Live) -> None:
        """What a second ``async for`` gets after a ``break``.

        A ``break`` stops a running generator and drops the items it buffered.
        A generator that had ended by itself has nothing to stop: whether its
        buffered items and its error are dropped depends on whether its end
        reached the channel before the ``break``. Either way, all or nothing.
        """
        control = live.control
        if control.how == EXITED:
            await self.ends_at_once(live)
            return
        assert live.wrapper.closed, f"{live} is not closed"
        rest: list[object] = []
        while not isinstance(outcome := await next_of(live.wrapper), Exception):
            rest.append(outcome)
        remaining = list(range(live.taken, control.produced))
        assert rest in ([], remaining), f"{live}: after a break got {rest}, not {remaining}"
        if control.how == RAISED and outcome is control.error:
            assert rest == remaining, f"{live}: its error came after {rest}, not {remaining}"
            outcome = await next_of(live.wrapper)
        assert isinstance(outcome, StopAsyncIteration), f"{live}: after its items, {outcome!r}"
        await self.closes_quietly(live)

    async def closes_quietly(self, live: Live) -> None:
        await asyncio.wait_for(live.wrapper.aclose(), WAIT)

    def where(self, live: Live) -> str:
        """Where the generator of ``live`` is: for the statistics of a search."""
        control = live.control
        with control.cond:
            if not control.called:
                return "not running"
            if control.finished:
                return "ended"
            return "blocked" if control.blocked() else "waiting"

    async def left(self, live: Live, reason: str | None, before: str) -> None:
        """The consumer of ``live`` left: the generator must stop and its thread end."""
        live.control.release()
        await self.wait_for_thread(live)
        event(f"{reason}: generator {before}, then {live.control.how or 'never ran'}")
        if live.control.called:
            self.check_generator_end(live, left=True)
        self.count_end(live, reason)
        if live.started and not live.control.called and reason is not None:
            self.adopt_unrun_reason(live, reason)
        if reason == "break":
            await self.rest_after_break(live)
        else:
            await self.ends_at_once(live)
        self.live.remove(live)

    def adopt_unrun_reason(self, live: Live, reason: str) -> None:
        """A generator dropped as it started counts ``reason`` if its thread ran, else not."""
        samples = self.metrics.read()
        if samples is None:
            return
        key = (live.kind, reason)
        counted = sample(
            samples,
            "aiothreads_generator_cancellations_total",
            function=NAME,
            kind=live.kind,
            reason=reason,
        )
        assert counted - self.expected.reasons[key] in (0, 1), (
            f"{counted} generators counted stopped for {reason}, "
            f"expected {self.expected.reasons[key]} or one more"
        )
        self.expected.reasons[key] = int(counted)

    def took(self, live: Live, outcome: object) -> None:
        assert outcome == live.taken, f"{live}: got {outcome!r}, expected item {live.taken}"
        live.taken += 1

    def start(self, live: Live) -> None:
        """``__anext__()`` was called on ``live``: its generator was handed to a thread."""
        if not live.started:
            live.started = True
            self.pool_starts += live.kind == POOL

    @staticmethod
    def may_cancel(live: Live) -> bool:
        """Whether its consumer may leave, and would wait for an item that never comes."""
        return live.may_leave and live.granted == live.taken and not live.ending

    def eligible(self, test: Callable[[Live], bool]) -> list[Live]:
        return [live for live in self.live if test(live)]

    # -- rules --

    @initialize(max_size=st.sampled_from([1, 2, 3, 0]))
    def decorate(self, max_size: int) -> None:
        self.max_size = max_size
        self.sources = {
            POOL: threaded_iterable(numbers, max_size=max_size, executor=self.pool, name=NAME),
            SEPARATE: threaded_iterable_separate(numbers, max_size=max_size, name=NAME),
        }
        self.refused_sources = {
            limited: threaded_iterable(
                numbers,
                max_size=max_size,
                executor=self.refusing,
                limit=self.limiter if limited else None,
                name=REFUSED,
            )
            for limited in (False, True)
        }

    @precondition(lambda self: len(self.live) < MAX_LIVE)
    @rule(kind=st.sampled_from(KINDS), patience=st.integers(0, 12))
    def create(self, kind: str, patience: int) -> None:
        control = Control()
        wrapper = self.sources[kind](control)
        control.watch(wrapper.channel)
        self.live.append(Live(kind, wrapper, control, patience=patience))

    @precondition(lambda self: any(live.ending is None for live in self.live))
    @rule(pick=st.integers(0, MAX_LIVE - 1), count=st.integers(1, 5))
    def grant(self, pick: int, count: int) -> None:
        live = choose(self.eligible(lambda live: live.ending is None), pick)
        live.granted += count
        live.control.push(*[YIELD] * count)

    @precondition(lambda self: any(live.ending is None for live in self.live))
    @rule(pick=st.integers(0, MAX_LIVE - 1), ending=st.sampled_from([END, RAISE]))
    def tell_to_end(self, pick: int, ending: str) -> None:
        live = choose(self.eligible(lambda live: live.ending is None), pick)
        live.ending = ending
        live.control.push(ending)

    @precondition(lambda self: any(live.granted > live.taken or live.ending for live in self.live))
    @rule(pick=st.integers(0, MAX_LIVE - 1))
    def take(self, pick: int) -> None:
        live = choose(
            self.eligible(lambda live: live.granted > live.taken or bool(live.ending)), pick
        )
        outcome = run_on(self.loop, next_of(live.wrapper))
        self.start(live)
        if live.granted > live.taken:
            self.took(live, outcome)
            return
        event(f"take: the end ({live.ending})")
        if live.ending == END:
            assert isinstance(outcome, StopAsyncIteration), f"{live}: got {outcome!r} at its end"
        else:
            assert outcome is live.control.error, (
                f"{live}: got {outcome!r}, expected the generator's {live.control.error!r}"
            )

        async def finished() -> None:
            await self.wait_for_thread(live)
            self.check_generator_end(live, left=False)
            self.count_end(live, None)
            await self.ends_at_once(live)

        run_on(self.loop, finished())
        self.live.remove(live)

    @precondition(lambda self: sum(live.granted > live.taken for live in self.live) >= 2)
    @rule()
    def take_from_each(self) -> None:
        chosen = self.eligible(lambda live: live.granted > live.taken)

        async def together() -> list[int | Exception]:
            return list(await asyncio.gather(*(next_of(live.wrapper) for live in chosen)))

        event(f"take from {len(chosen)} iterators at once")
        for live, outcome in zip(chosen, run_on(self.loop, together()), strict=True):
            self.start(live)
            self.took(live, outcome)

    @precondition(
        lambda self: any(live.granted > live.taken and live.may_leave for live in self.live)
    )
    @rule(pick=st.integers(0, MAX_LIVE - 1))
    def break_out(self, pick: int) -> None:
        live = choose(
            self.eligible(lambda live: live.granted > live.taken and live.may_leave), pick
        )

        async def one_then_break() -> int:
            taken: int | None = None
            async for item in live.wrapper:
                taken = item
                break
            assert taken is not None, f"{live} ended before its granted items"
            return taken

        async def scenario() -> None:
            before = self.where(live)
            item = await asyncio.wait_for(one_then_break(), WAIT)
            self.start(live)
            self.took(live, item)
            await self.left(live, "break", before)

        run_on(self.loop, scenario())

    @precondition(lambda self: any(live.may_leave for live in self.live))
    @rule(pick=st.integers(0, MAX_LIVE - 1))
    def aclose(self, pick: int) -> None:
        live = choose(self.eligible(lambda live: live.may_leave), pick)

        async def scenario() -> None:
            before = self.where(live)
            closing = asyncio.ensure_future(live.wrapper.aclose())
            await asyncio.sleep(0)  # aclose() closed the iterator and waits for its thread
            assert live.wrapper.closed, f"{live}: aclose() did not close it at once"
            live.control.release()
            done, _ = await asyncio.wait([closing], timeout=WAIT)
            if not done:
                await settle_tasks([closing])
                raise AssertionError(f"{live}: aclose() still waits for the generator's thread")
            closing.result()
            await self.left(live, "closed", before)

        run_on(self.loop, scenario())

    @precondition(lambda self: any(self.may_cancel(live) for live in self.live))
    @rule(pick=st.integers(0, MAX_LIVE - 1))
    def cancel_waiting_consumer(self, pick: int) -> None:
        live = choose(self.eligible(self.may_cancel), pick)

        async def scenario() -> None:
            before = self.where(live)
            waiting = asyncio.ensure_future(live.wrapper.__anext__())
            await asyncio.sleep(0)  # the consumer waits for an item that never comes
            assert not waiting.done(), f"{live}: __anext__() returned: {results_of([waiting])}"
            self.start(live)
            waiting.cancel()
            await asyncio.wait([waiting], timeout=WAIT)
            assert waiting.cancelled(), f"{live}: the cancelled consumer got {waiting!r}"
            await self.left(live, "cancelled", before)

        run_on(self.loop, scenario())

    @precondition(lambda self: any(not live.started and live.may_leave for live in self.live))
    @rule(pick=st.integers(0, MAX_LIVE - 1))
    def iterate_nothing(self, pick: int) -> None:
        """``aiter()`` alone starts nothing; dropping it is leaving ``async for`` at once."""
        live = choose(self.eligible(lambda live: not live.started and live.may_leave), pick)

        async def scenario() -> None:
            before = self.where(live)
            iteration = aiter(live.wrapper)
            assert not live.control.called, f"{live}: aiter() ran the generator"
            del iteration
            await self.left(live, "break", before)
            assert not live.control.called, f"{live}: the generator ran, never iterated"

        run_on(self.loop, scenario())

    @precondition(lambda self: bool(self.refused_sources))
    @rule(error=st.sampled_from(["shut down", "overloaded"]), limited=st.booleans())
    def refused_start(self, error: str, limited: bool) -> None:
        cause = RuntimeError("shut down") if error == "shut down" else Overloaded("too busy")
        self.refusing.error = cause
        control = Control()
        wrapper = self.refused_sources[limited](control)

        async def scenario() -> None:
            outcome = await next_of(wrapper)
            if isinstance(cause, RuntimeError):
                assert isinstance(outcome, ExecutorRefused), f"a refused start gave {outcome!r}"
                assert outcome.__cause__ is cause, f"{outcome!r} is not chained to {cause!r}"
            else:
                assert outcome is cause, f"a refused start gave {outcome!r}, expected {cause!r}"
            assert wrapper.closed, "a refused iterator is left open"
            after = await next_of(wrapper)
            assert isinstance(after, StopAsyncIteration), f"after a refusal: {after!r}"

        run_on(self.loop, scenario())
        event(f"refused: {error}, limited {limited}")
        assert not control.called, "a refused generator ran"
        self.expected.refused += 1
        assert self.refusing.submitted == self.expected.refused, (
            f"{self.refusing.submitted} submits for {self.expected.refused} refused starts"
        )
        assert self.limiter.borrowed_tokens == 0, "a refused start kept its limit= place"
        assert self.limiter.waiting == 0, "a refused start still waits for a limit= place"

    @invariant()
    def iterators_match_model(self) -> None:
        self.settle()
        assert self.pool.submitted == self.pool_starts, (
            f"{self.pool.submitted} generators handed to the pool, {self.pool_starts} started"
        )
        for live in self.live:
            live.age += 1
            control = live.control
            assert control.broken is None, f"{live}: {control.broken}"
            if not live.started:
                assert not control.called, f"{live} ran before its first __anext__()"
                assert not live.wrapper.closed, f"{live} closed before its first __anext__()"
                assert live.wrapper.channel.qsize() == 0, f"{live} has items, never iterated"
                continue
            with control.cond:
                blocked = control.blocked()
                produced, waiting, finished = control.produced, control.waiting, control.finished
            depth = live.wrapper.channel.qsize()
            assert control.called, f"{live}: __anext__() returned, the generator never ran"
            assert produced <= live.granted, f"{live}: yielded {produced} items"
            if finished:
                self.check_generator_end(live, left=False)
                self.count_end(live, None)
                buffered = produced - live.taken
            else:
                assert blocked or (waiting and produced == live.granted), (
                    f"{live}: neither blocked nor waiting after {produced} items"
                )
                buffered = produced - live.taken - blocked
                if blocked:
                    event("a generator blocked on a full channel")
                    assert self.max_size, f"{live}: blocked on an unbounded channel"
                    assert buffered > self.max_size // 2, (
                        f"{live}: still blocked with {buffered} of {self.max_size} items buffered"
                    )
            assert live.wrapper.closed == finished, (
                f"{live}: closed is {live.wrapper.closed}, the generator ended: {finished}"
            )
            assert depth == buffered, f"{live}: depth {depth}, model {buffered}"
            if self.max_size:
                assert depth <= self.max_size, (
                    f"{live}: {depth} items buffered, {self.max_size} max"
                )
        self.counts_match_model()

    def active(self, kind: str) -> int:
        return sum(live.kind == kind and live.started and not live.counted for live in self.live)

    def counts_match_model(self) -> None:
        """Compare the metrics with the model whenever what the model expects of them changed.

        Reading them all takes a millisecond, most of a step's cost, and the
        steps that change nothing (most of them) would compare the same again.
        """
        model = (
            [self.active(kind) for kind in KINDS],
            sorted(self.expected.finished.items()),
            sorted(self.expected.reasons.items()),
            self.expected.refused,
        )
        if model == self.compared:
            return
        self.compared = model
        samples = self.metrics.read()
        if samples is None:
            return
        for kind in KINDS:
            active = self.active(kind)
            labels = {"function": NAME, "kind": kind}
            seen = sample(samples, "aiothreads_iterators_active", **labels)
            assert seen == active, f"{seen} {kind} iterators counted active, model {active}"
            for outcome in ("ok", "error", "cancelled"):
                seen = sample(samples, "aiothreads_calls_finished_total", outcome=outcome, **labels)
                expected = self.expected.finished[kind, outcome]
                assert seen == expected, f"{seen} {kind} ended {outcome}, model {expected}"
            for reason in ("break", "closed", "cancelled", "error"):
                seen = sample(
                    samples, "aiothreads_generator_cancellations_total", reason=reason, **labels
                )
                expected = self.expected.reasons[kind, reason]
                assert seen == expected, f"{seen} {kind} stopped for {reason}, model {expected}"
        refused = {"function": REFUSED, "kind": POOL}
        seen = sample(samples, "aiothreads_iterators_active", **refused)
        assert seen == 0, f"{seen} refused iterators counted active"
        seen = sample(samples, "aiothreads_calls_finished_total", outcome="error", **refused)
        assert seen == self.expected.refused, (
            f"{seen} refusals counted, {self.expected.refused} made"
        )

    def teardown(self) -> None:
        async def stop_all() -> None:
            for live in self.live:
                live.wrapper.close()
                live.wrapper.channel.close()  # wakes a producer that a failed step left blocked
                live.control.release()
            for live in self.live:
                with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                    await asyncio.wait_for(live.wrapper.wait_closed(), WAIT)

        try:
            run_on(self.loop, stop_all())
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            close_loop(self.loop)
            instrumentation.reset()
        started = [thread for thread in threading.enumerate() if thread not in self.threads_before]
        deadline = time.monotonic() + WAIT
        for thread in started:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [thread.name for thread in started if thread.is_alive()]
        assert not left, f"threads left running: {left}"


# -- what the iterator model found, pinned -------------------------------------------


@pytest.mark.asyncio
async def test_waiting_after_a_dropped_start() -> None:
    busy = threading.Event()
    pool = ThreadPoolExecutor(1)
    blocker = pool.submit(busy.wait, WAIT)  # the generator stays queued behind it
    try:

        @threaded_iterable(executor=pool)
        def letters() -> Generator[str, None, None]:
            yield "a"

        items = letters()
        waiting = asyncio.ensure_future(items.__anext__())
        await asyncio.sleep(0)  # the generator is queued behind the busy worker
        waiting.cancel()  # which drops it before it ran
        with pytest.raises(asyncio.CancelledError):
            await waiting
        try:
            await items.wait_closed()
            await items.aclose()
        except asyncio.CancelledError:
            raise AssertionError("closing raised CancelledError; nobody cancelled") from None
    finally:
        busy.set()
        blocker.result(WAIT)
        pool.shutdown()


@pytest.mark.asyncio
async def test_aclose_drops_a_buffered_error() -> None:
    ended = threading.Event()

    @threaded_iterable(max_size=4)
    def rows() -> Generator[int, None, None]:
        try:
            yield 1
            yield 2
            raise GeneratorFailure("after 2")
        finally:
            ended.set()

    items = rows()
    assert await items.__anext__() == 1
    assert await asyncio.to_thread(ended.wait, WAIT)
    await items.wait_closed()  # 2 and the error wait in the channel
    await items.aclose()
    with pytest.raises(StopAsyncIteration):
        await items.__anext__()


# -- one test case per machine and loop kind ----------------------------------------

M = TypeVar("M", bound=RuleBasedStateMachine)


def on_loop(machine: type[M], kind: str, examples: int, steps: int) -> type[unittest.TestCase]:
    """``machine``'s test case on loops of ``kind``."""
    subclass = type(f"{machine.__name__}On{kind.capitalize()}", (machine,), {"loop_kind": kind})
    case: type[unittest.TestCase] = subclass.TestCase  # type: ignore[attr-defined]
    case.settings = model_settings(examples=examples, steps=steps)  # type: ignore[attr-defined]
    return case


CHANNEL_EXAMPLES, CHANNEL_STEPS = 300, 30
ITERATOR_EXAMPLES, ITERATOR_STEPS = 250, 30

TestChannelOnAsyncio = on_loop(ChannelMachine, "asyncio", CHANNEL_EXAMPLES, CHANNEL_STEPS)
TestIteratorsOnAsyncio = on_loop(IteratorMachine, "asyncio", ITERATOR_EXAMPLES, ITERATOR_STEPS)
if "uvloop" in LOOP_FACTORIES:
    TestChannelOnUvloop = on_loop(ChannelMachine, "uvloop", CHANNEL_EXAMPLES, CHANNEL_STEPS)
    TestIteratorsOnUvloop = on_loop(IteratorMachine, "uvloop", ITERATOR_EXAMPLES, ITERATOR_STEPS)
