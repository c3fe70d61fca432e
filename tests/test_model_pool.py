"""The worker pool, step by step against a reference model (hypothesis).

A ``RuleBasedStateMachine`` drives a real ``WorkerPool`` through random steps
and checks it after every step against a model of a few lines of plain
Python, on asyncio's loop and on uvloop.

The workers busy and idle, the maximum and the calls queued (as
``pool_states()`` reports them) always equal the model's; a call starts at
once on an idle worker if there is one, else on a new thread up to the
maximum, else it queues and starts, first in first out, on the next worker
that ends a call; two calls that wait for each other both get a worker
whenever the pool has room for two; a worker idle for the idle timeout exits
and is no longer counted; after shutdown idle workers exit, queued calls
still run or, cancelled, are refused, and new calls are refused. The pool's
queue is replaced by one that makes its races the test's choices, so that
every run replays exactly: which idle worker takes a call (any of them may,
whichever submitter counted on it), and when a worker's wait for a call times
out (when the test says so, never by the clock).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any, ClassVar, TypeVar
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiothreads import _pool, threaded
from aiothreads._pool import WorkerPool
from aiothreads._pool_state import pool_states
from tests.conftest import LOOP_FACTORIES
from tests.modelling import MODEL_TIMEOUT, WITHOUT_UVLOOP, checked, let_pools_go, settled
from tests.waiting import PATIENCE, turns_until

pytestmark = MODEL_TIMEOUT

T = TypeVar("T")

HOLD = 30.0
"""How long a held call waits to be let go at most: a guard, far beyond any example."""


POOL = "model-workers"


def worker_number(worker: threading.Thread) -> int:
    """The number in a worker's name (``<prefix>_<n>``): workers are numbered as they start."""
    return int(worker.name.rpartition("_")[2])


class IdleClock(SimpleQueue[Any]):
    """A pool's queue of calls, in which the test says who takes a call, and when a wait expires.

    A worker waits for its next call for the pool's idle timeout; here that
    wait ends as at the timeout when ``expire`` names the worker, and never by
    the clock. Which of the waiting workers takes a call is a race in a real
    pool; here calls queued while ``hold`` is in force are taken only once
    ``hand_to`` names their takers. ``waiting`` holds the workers waiting for
    a call now.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        """Notified as a call is queued, handed out or a wait is to expire: workers wait on it."""
        self.changed = threading.Condition(self.lock)
        """Notified as ``waiting`` changes: the test waits on it."""
        self.waiting: set[threading.Thread] = set()
        self.expiring: threading.Thread | None = None
        self.held = False
        self.takers: deque[threading.Thread] = deque()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.lock:
            super().put(item)
            self.arrived.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        me = threading.current_thread()
        with self.lock:
            try:
                while True:
                    if not self.held and (not self.takers or self.takers[0] is me):
                        try:
                            item = super().get(False)
                        except Empty:
                            pass
                        else:
                            if self.takers:
                                self.takers.popleft()
                                self.arrived.notify_all()  # the next taker's turn
                            return item
                    if not block:
                        raise Empty
                    if timeout is not None and self.expiring is me:
                        self.expiring = None
                        raise Empty
                    if me not in self.waiting:
                        self.waiting.add(me)
                        self.changed.notify_all()
                    self.arrived.wait(PATIENCE)
            finally:
                if me in self.waiting:
                    self.waiting.discard(me)
                    self.changed.notify_all()

    def hold(self) -> None:
        """Keep the calls queued from now on until ``hand_to``."""
        with self.lock:
            self.held = True

    def hand_to(self, takers: list[threading.Thread]) -> None:
        """Let ``takers`` take the calls held, in order; any worker takes those left over."""
        with self.lock:
            self.held = False
            self.takers = deque(takers)
            self.arrived.notify_all()

    def expire(self, worker: threading.Thread) -> bool:
        """End ``worker``'s wait for a call as its idle timeout would; False if it never ends."""
        with self.lock:
            self.expiring = worker
            self.arrived.notify_all()
            return self.changed.wait_for(lambda: self.expiring is None, PATIENCE)

    def wait_for_waiting(self, workers: set[threading.Thread]) -> bool:
        """Wait until exactly ``workers`` wait for a call; False if they never do."""
        with self.lock:
            return self.changed.wait_for(lambda: self.waiting == workers, PATIENCE)


@dataclass(eq=False)
class Call:
    """A call that holds its worker until let go."""

    name: int
    release: threading.Event = field(default_factory=threading.Event)
    meet: threading.Barrier | None = None
    """Shared with a partner call it waits for: both must run at once."""
    future: asyncio.Future[None] | None = None
    thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<call {self.name}>"


class Workers:
    """What the pool holds: calls running (each on its thread), idle threads, calls queued."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.running: list[Call] = []
        self.idle: set[threading.Thread] = set()
        self.queued: deque[Call] = deque()
        self.closed = False

    def busy(self) -> set[threading.Thread]:
        return {call.thread for call in self.running if call.thread is not None}

    def threads(self) -> set[threading.Thread]:
        return self.idle | self.busy()

    def room(self) -> int:
        """How many calls would start now (on idle threads, then on new ones)."""
        return len(self.idle) + self.maximum - len(self.threads())

    def start(self, call: Call, thread: threading.Thread) -> None:
        self.idle.discard(thread)
        call.thread = thread
        self.running.append(call)

    def finish(self, call: Call) -> Call | None:
        """End ``call``; return the queued call its thread takes next, if any."""
        self.running.remove(call)
        assert call.thread is not None
        if self.queued:
            following = self.queued.popleft()
            self.start(following, call.thread)
            return following
        if not self.closed:
            self.idle.add(call.thread)
        return None


class PoolMachine(RuleBasedStateMachine):
    """A ``WorkerPool`` taking threaded calls from a loop, against ``Workers``."""

    loop_kind: ClassVar[str]
    """Which of ``LOOP_FACTORIES`` makes its loops."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = LOOP_FACTORIES[self.loop_kind]()
        self.pool: WorkerPool | None = None
        self.clock = IdleClock()
        self.workers = Workers(1)
        self.calls: list[Call] = []
        self.starts: SimpleQueue[tuple[int, threading.Thread]] = SimpleQueue()
        self.seen: set[threading.Thread] = set()

    @initialize(maximum=st.integers(1, 3))
    def make_pool(self, maximum: int) -> None:
        with mock.patch.object(_pool, "SimpleQueue", return_value=self.clock):
            self.pool = WorkerPool(maximum, thread_name_prefix=POOL)
        self.workers = Workers(maximum)
        starts = self.starts

        def hold(call: Call) -> None:
            if call.meet is not None:
                call.meet.wait(PATIENCE)  # its partner must be running too
            starts.put((call.name, threading.current_thread()))
            if not call.release.wait(HOLD):
                raise TimeoutError(f"{call} was never let go")

        self.hold = threaded(executor=self.pool)(hold)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 4 * PATIENCE))

    async def submitted(self, calls: list[Call]) -> None:
        for call in calls:  # in one turn of the loop
            call.future = asyncio.ensure_future(self.hold(call))

    def submit(self, count: int, taker: int) -> list[Call]:
        """Submit ``count`` calls; the workers free to take them do so from the ``taker``-th on."""
        assert self.pool is not None
        calls = [Call(len(self.calls) + number) for number in range(count)]
        if count > 1:
            meet = threading.Barrier(count)
            for call in calls:
                call.meet = meet
        self.calls.extend(calls)
        self.clock.hold()
        self.run(self.submitted(calls))
        workers = self.workers
        if not workers.closed:  # idle workers first, then new threads, up to the maximum
            fresh = max(0, min(count, workers.room()) - len(workers.idle))
            started = set(self.pool.pool_threads()[0]) - workers.threads()
            assert len(started) <= fresh, (
                f"new threads {started} started while workers {workers.idle} were idle"
            )
            assert len(started) >= fresh, (
                f"no new thread started for {fresh} call(s) with room for"
                f" {workers.maximum - len(workers.threads())} more: {calls} wait behind"
                f" the busy workers {workers.busy()}"
            )
        # A new thread runs the call it was started for; the idle workers take the
        # calls queued for them in the order the test chose.
        idle = sorted(workers.idle, key=worker_number)
        if idle:
            first = taker % len(idle)
            idle = idle[first:] + idle[:first]
        self.clock.hand_to(idle[:count])
        return calls

    def pool_threads(self) -> list[threading.Thread]:
        assert self.pool is not None
        return self.pool.pool_threads()[0]

    def outcome(self, call: Call) -> str:
        assert call.future is not None
        return self.run(settled(call.future))

    def started(self, count: int) -> dict[int, threading.Thread]:
        """Wait until ``count`` calls start; return their threads by call name."""
        threads: dict[int, threading.Thread] = {}
        for _ in range(count):
            try:
                name, thread = self.starts.get(timeout=PATIENCE)
            except Empty:
                raise AssertionError(
                    f"{count - len(threads)} call(s) never got a worker: {self.workers.running},"
                    f" idle {self.workers.idle}, queued {list(self.workers.queued)}"
                ) from None
            threads[name] = thread
        return threads

    def settle(self) -> None:
        """Wait until the model's idle workers, and only they, wait for a call."""
        idle = self.workers.idle
        assert self.clock.wait_for_waiting(idle), (
            f"waiting for a call: {self.clock.waiting}, idle in the model: {idle}"
        )

    def place(self, calls: list[Call], threads: dict[int, threading.Thread]) -> None:
        """Calls that started at once: on idle workers first, the rest on new threads."""
        workers = self.workers
        on = [threads[call.name] for call in calls]
        assert len(set(on)) == len(on), f"two calls ran on one thread: {on}"
        reused = [thread for thread in on if thread in workers.idle]
        fresh = [thread for thread in on if thread not in workers.idle]
        assert len(reused) == min(len(on), len(workers.idle)), (
            f"new threads {fresh} started while workers {workers.idle} were idle"
        )
        for thread in fresh:
            assert thread not in self.seen, f"{thread} ran a call after it was counted out"
            assert thread.name.startswith(f"{POOL}_")
        for call, thread in zip(calls, on, strict=True):
            workers.start(call, thread)
            self.seen.add(thread)

    @precondition(lambda self: len(self.workers.queued) < 3)
    @rule(taker=st.integers(0, 3))
    def submit_one(self, taker: int) -> None:
        (call,) = self.submit(1, taker)
        workers = self.workers
        if workers.closed:
            assert self.outcome(call) == "refused"
        elif workers.room():
            self.place([call], self.started(1))
        else:
            workers.queued.append(call)
        self.settle()

    @precondition(lambda self: not self.workers.closed and self.workers.room() >= 2)
    @rule(taker=st.integers(0, 3))
    def submit_two_that_wait_for_each_other(self, taker: int) -> None:
        calls = self.submit(2, taker)
        self.place(calls, self.started(2))
        self.settle()

    @precondition(
        lambda self: self.workers.idle and self.workers.running and not self.workers.closed
    )
    @rule(index=st.integers(0, 5))
    def a_worker_ending_a_call_takes_the_next_one_before_an_idle_one(self, index: int) -> None:
        """A call queued for an idle worker goes to a worker that ends a call meanwhile.

        The idle worker stays idle, and counts as such for the calls after it.
        """
        workers = self.workers
        ending = workers.running[index % len(workers.running)]
        thread = ending.thread
        assert thread is not None
        call = Call(len(self.calls))
        self.calls.append(call)
        self.clock.hold()
        self.run(self.submitted([call]))
        started = set(self.pool_threads()) - workers.threads()
        assert not started, f"new threads {started} started while workers {workers.idle} were idle"
        self.clock.hand_to([thread])
        workers.running.remove(ending)
        ending.release.set()
        assert self.outcome(ending) == "done"
        assert self.started(1) == {call.name: thread}
        workers.start(call, thread)
        self.settle()

    @precondition(lambda self: self.workers.running)
    @rule(index=st.integers(0, 5))
    def finish(self, index: int) -> None:
        workers = self.workers
        call = workers.running[index % len(workers.running)]
        thread = call.thread
        assert thread is not None
        following = workers.finish(call)
        call.release.set()
        assert self.outcome(call) == "done"
        if following is not None:  # the queued call runs on the thread that is free now
            assert self.started(1) == {following.name: thread}
        elif workers.closed:  # its worker takes the stop marker
            thread.join(PATIENCE)
            assert not thread.is_alive(), f"{thread} still running after shutdown"
        self.settle()

    @precondition(lambda self: self.workers.idle and not self.workers.closed)
    @rule(index=st.integers(0, 5))
    def idle_timeout_expires(self, index: int) -> None:
        idle = sorted(self.workers.idle, key=worker_number)
        thread = idle[index % len(idle)]
        self.workers.idle.remove(thread)
        assert self.clock.expire(thread), f"{thread} is not waiting for a call"
        self.run(
            turns_until(
                lambda: not thread.is_alive() or thread in self.clock.waiting,
                f"{thread} exiting, or waiting again",
            )
        )
        assert thread not in self.clock.waiting, f"{thread} waits for calls after its idle timeout"
        thread.join(PATIENCE)
        assert not thread.is_alive(), f"{thread}, idle for its timeout, did not exit"
        self.settle()

    @precondition(lambda self: not self.workers.closed and len(self.calls) >= 2)
    @rule(cancel_queued=st.booleans())
    def shut_down(self, cancel_queued: bool) -> None:
        assert self.pool is not None
        workers = self.workers
        workers.closed = True
        leaving, workers.idle = workers.idle, set()
        dropped: list[Call] = []
        if cancel_queued:
            dropped, workers.queued = list(workers.queued), deque()
        self.pool.shutdown(wait=False, cancel_futures=cancel_queued)
        for thread in leaving:
            thread.join(PATIENCE)
            assert not thread.is_alive(), f"idle {thread} still running after shutdown"
        for call in dropped:
            assert self.outcome(call) == "refused"
        self.settle()

    @invariant()
    def workers_are_the_models(self) -> None:
        assert self.pool is not None
        workers = self.workers
        live = self.pool.pool_threads()[0]
        assert set(live) == workers.threads(), f"live workers {live}"
        (state,) = [state for state in pool_states() if state.name == POOL]
        shown = (state.busy, state.idle, state.maximum, state.queued)
        if workers.closed:
            assert shown == (None, None, None, None)  # a pool shut down is no longer reported
        else:
            expected = (len(workers.running), len(workers.idle), workers.maximum)
            assert shown == (*expected, len(workers.queued))
            assert repr(self.pool) == (
                f"<WorkerPool running workers={len(workers.threads())}/{workers.maximum}>"
            )
        assert self.clock.waiting == workers.idle

    def teardown(self) -> None:
        try:
            self.clock.hand_to([])
            for call in self.calls:
                call.release.set()
                if call.meet is not None:
                    call.meet.abort()
            if self.pool is not None:
                self.pool.shutdown(wait=False)
                left = self.pool.pool_threads()[0]
                for thread in left:
                    thread.join(PATIENCE)
                stuck = [thread for thread in left if thread.is_alive()]
                for _ in stuck:  # workers the pool failed to stop: stop them here
                    self.clock.put(None)
                for thread in stuck:
                    thread.join(PATIENCE)
            for call in self.calls:
                self.outcome(call)  # every outcome retrieved, failures included
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            let_pools_go(self, "pool", "hold")


class PoolOnAsyncio(PoolMachine):
    loop_kind = "asyncio"


class PoolOnUvloop(PoolMachine):
    loop_kind = "uvloop"


TestPoolOnAsyncio = PoolOnAsyncio.TestCase
TestPoolOnAsyncio.settings = checked(examples=200)
TestPoolOnUvloop = WITHOUT_UVLOOP(PoolOnUvloop.TestCase)
TestPoolOnUvloop.settings = checked(examples=200)
