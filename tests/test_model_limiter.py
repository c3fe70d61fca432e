"""The capacity limiter, step by step against a reference model (hypothesis).

A ``RuleBasedStateMachine`` drives a real ``CapacityLimiter`` through random
steps and checks it after every step against a model of a few lines of plain
Python, on asyncio's loop and on uvloop.

The limiter is shared by two loops, one of them in a thread of its own: the
places taken and free, and how many wait, always equal the model's; waiters
get their place first come, first served, whichever loop they wait on and
whoever gives a place back (a task on either loop, a plain thread, a threaded
call ending in its worker, while the waiter's loop is idle); a waiter
cancelled while it waits takes no place, and one granted a place and
cancelled in the same turn passes it on; a call whose executor refuses it
gives back the place it took, or was granted, at once.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Coroutine
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiothreads import CapacityLimiter, ExecutorRefused, threaded
from aiothreads._pool import WorkerPool
from tests.conftest import LOOP_FACTORIES
from tests.loops import loop_in_thread
from tests.modelling import MODEL_TIMEOUT, WITHOUT_UVLOOP, checked, let_pools_go, settled
from tests.waiting import PATIENCE, turns_until

pytestmark = MODEL_TIMEOUT

T = TypeVar("T")

HOLD = 30.0
"""How long a held call waits to be let go at most: a guard, far beyond any example."""

Side = Literal["a", "b"]
"""Loop A, run by the test between steps, or loop B, run in a thread of its own."""

Kind = Literal["acquire", "try", "call", "refused"]
"""How a party takes a place: a task awaiting ``acquire()``, ``try_acquire()``, a threaded
call under the limit, or one its executor refuses."""


async def cancelled(future: asyncio.Future[Any]) -> str:
    """Cancel ``future`` (on its loop) and say how it ended."""
    future.cancel()
    return await settled(future)


@dataclass(eq=False)
class Party:
    """One taker of a place under the limit."""

    name: int
    side: Side
    kind: Kind
    future: asyncio.Future[None] | None = None
    """On its side's loop; ``None`` for ``try_acquire()``."""
    release: threading.Event = field(default_factory=threading.Event)
    """Lets a held call end (and give its place back)."""
    placed: threading.Event = field(default_factory=threading.Event)
    """Set by the party itself once it holds a place."""

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name} on loop {self.side.upper()}>"


class Places:
    """What the limiter holds: who holds a place, and who waits, in order of arrival."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.holders: list[Party] = []
        self.waiters: deque[Party] = deque()

    @property
    def borrowed(self) -> int:
        return len(self.holders)

    @property
    def available(self) -> int:
        return self.total - self.borrowed

    def arrive(self, party: Party) -> bool:
        """Take a free place if nobody waits (True), else queue (unless only trying)."""
        if self.available and not self.waiters:
            if party.kind != "refused":  # a refused call gives its place back at once
                self.holders.append(party)
            return True
        if party.kind != "try":
            self.waiters.append(party)
        return False

    def give_back(self, holder: Party) -> tuple[list[Party], Party | None]:
        """Free ``holder``'s place; return the refused waiters it passed through, and who got it."""
        self.holders.remove(holder)
        refused = []
        while self.waiters:
            party = self.waiters.popleft()
            if party.kind == "refused":
                refused.append(party)
                continue
            self.holders.append(party)
            return refused, party
        return refused, None

    def leave(self, party: Party) -> None:
        self.waiters.remove(party)


class LimiterMachine(RuleBasedStateMachine):
    """One limiter shared by two loops, against ``Places``."""

    loop_kind: ClassVar[str]
    """Which of ``LOOP_FACTORIES`` makes its loops."""

    def __init__(self) -> None:
        super().__init__()
        factory = LOOP_FACTORIES[self.loop_kind]
        self.loop = factory()
        self.running = ExitStack()
        self.other_loop = self.running.enter_context(loop_in_thread(factory))
        self.pool = WorkerPool(max_workers=4, thread_name_prefix="model-limiter", idle_timeout=None)
        self.refusing = WorkerPool(max_workers=1, thread_name_prefix="model-refusing")
        self.refusing.shutdown()
        self.events: asyncio.Queue[tuple[str, Party]] = asyncio.Queue()  # on loop A
        self.parties: list[Party] = []
        self.limiter = CapacityLimiter(1)
        self.places = Places(1)

    @initialize(total=st.integers(1, 3))
    def make_limiter(self, total: int) -> None:
        self.limiter = CapacityLimiter(total)
        self.places = Places(total)

        def hold(party: Party) -> None:
            self.got_place(party)
            if not party.release.wait(HOLD):
                raise TimeoutError(f"{party} was never let go")

        def never_runs(party: Party) -> None:
            raise AssertionError(f"{party} ran on an executor that was shut down")

        self.hold = threaded(limit=self.limiter, executor=self.pool)(hold)
        self.refused = threaded(limit=self.limiter, executor=self.refusing)(never_runs)

    def got_place(self, party: Party) -> None:
        """Called by a party as it gets its place, on any thread."""
        party.placed.set()
        self.loop.call_soon_threadsafe(self.events.put_nowait, ("placed", party))

    def ended(self, future: asyncio.Future[None], party: Party) -> None:
        """Called on its loop as a party ends: tell if it was refused."""
        if not future.cancelled() and isinstance(future.exception(), ExecutorRefused):
            self.loop.call_soon_threadsafe(self.events.put_nowait, ("refused", party))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on loop A (loop B runs all along)."""
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 4 * PATIENCE))

    async def on(self, side: Side, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the loop of ``side`` (from loop A)."""
        if side == "a":
            return await coroutine
        other = asyncio.run_coroutine_threadsafe(coroutine, self.other_loop)
        return await asyncio.wrap_future(other)

    async def take(self, party: Party) -> None:
        await self.limiter.acquire()
        self.got_place(party)

    async def start(self, party: Party) -> asyncio.Future[None] | None:
        """Start ``party`` on the running loop (its side's); ``None`` once it tried."""
        if party.kind == "try":
            if self.limiter.try_acquire():
                self.got_place(party)
            return None
        if party.kind == "acquire":
            return asyncio.ensure_future(self.take(party))
        if party.kind == "call":
            return asyncio.ensure_future(self.hold(party))
        refused = asyncio.ensure_future(self.refused(party))
        refused.add_done_callback(functools.partial(self.ended, party=party))
        return refused

    async def happen(
        self, *expected: tuple[str, Party], early: list[tuple[str, Party]] | None = None
    ) -> None:
        """Wait until what is ``expected`` happens (in any order), and nothing else.

        What is in ``early`` may happen meanwhile: it is taken out of ``early``.
        """
        due = list(expected)
        while due:
            try:
                event = await asyncio.wait_for(self.events.get(), PATIENCE)
            except asyncio.TimeoutError:
                raise AssertionError(f"never happened: {due}") from None
            if early and event in early:
                early.remove(event)
                continue
            assert event in due, f"{event} happened, where {due} were due"
            due.remove(event)

    async def passed_on(self, refused: list[Party], party: Party | None) -> None:
        """A place was freed: it passed through ``refused`` (each failing) on to ``party``."""
        placed = [] if party is None else [("placed", party)]
        await self.happen(*(("refused", passing) for passing in refused), early=placed)
        self.counts_are_the_models()  # given back and granted by now; ``party`` may yet run
        await self.happen(*placed)

    @staticmethod
    def future_of(party: Party) -> asyncio.Future[None]:
        assert party.future is not None
        return party.future

    def new_party(self, side: Side, kind: Kind) -> Party:
        party = Party(len(self.parties), side, kind)
        self.parties.append(party)
        return party

    @precondition(lambda self: len(self.places.waiters) < 4)
    @rule(
        side=st.sampled_from(["a", "b"]),
        kind=st.sampled_from(["acquire", "try", "call", "refused"]),
    )
    def arrive(self, side: Side, kind: Kind) -> None:
        party = self.new_party(side, kind)
        placed = self.places.arrive(party)
        self.run(self.arrived(party, placed, len(self.places.waiters)))

    async def arrived(self, party: Party, placed: bool, waiting: int) -> None:
        party.future = await self.on(party.side, self.start(party))
        if party.kind == "try":
            if placed:
                await self.happen(("placed", party))
            else:
                assert not party.placed.is_set(), f"{party} took a place while none was free"
        elif not placed:
            await self.on(
                party.side,
                turns_until(
                    lambda: self.limiter.waiting == waiting or party.placed.is_set(),
                    f"{party} waiting for a place",
                ),
            )
            assert not party.placed.is_set(), f"{party} got a place while all were taken"
        elif party.kind == "refused":
            await self.happen(("refused", party))
        else:
            await self.happen(("placed", party))

    def holding(self, *kinds: Kind) -> list[Party]:
        return [party for party in self.places.holders if party.kind in kinds]

    @precondition(lambda self: self.holding("acquire", "try"))
    @rule(index=st.integers(0, 5), where=st.sampled_from(["a", "b", "thread"]))
    def release(self, index: int, where: Side | Literal["thread"]) -> None:
        holders = self.holding("acquire", "try")
        holder = holders[index % len(holders)]
        refused, party = self.places.give_back(holder)
        if where == "thread":  # loop A and loop B both idle
            releasing = threading.Thread(target=self.limiter.release)
            releasing.start()
            releasing.join(PATIENCE)
            assert not releasing.is_alive()
        self.run(self.released(where, refused, party))

    async def released(
        self, where: Side | Literal["thread"], refused: list[Party], party: Party | None
    ) -> None:
        if where != "thread":
            await self.on(where, self.release_here())
        await self.passed_on(refused, party)

    async def release_here(self) -> None:
        self.limiter.release()

    @precondition(lambda self: self.holding("call"))
    @rule(index=st.integers(0, 5))
    def end_call(self, index: int) -> None:
        calls = self.holding("call")
        call = calls[index % len(calls)]
        refused, party = self.places.give_back(call)
        call.release.set()  # its worker gives the place back, whichever loop waits for it
        self.run(self.call_ended(call, refused, party))

    async def call_ended(self, call: Party, refused: list[Party], party: Party | None) -> None:
        outcome = await self.on(call.side, settled(self.future_of(call)))
        assert outcome == "done", f"{call} ended: {outcome}"
        await self.passed_on(refused, party)

    @precondition(lambda self: self.places.waiters)
    @rule(index=st.integers(0, 5))
    def cancel_waiter(self, index: int) -> None:
        party = self.places.waiters[index % len(self.places.waiters)]
        self.places.leave(party)
        outcome = self.run(self.on(party.side, cancelled(self.future_of(party))))
        assert outcome == "cancelled", f"{party} cancelled while waiting: {outcome}"
        assert not party.placed.is_set(), f"{party} got a place as it was cancelled"

    @precondition(lambda self: self.places.waiters and self.holding("acquire", "try"))
    @rule(index=st.integers(0, 5), cancel_first=st.booleans())
    def release_as_the_first_waiter_is_cancelled(self, index: int, cancel_first: bool) -> None:
        """In one turn of the first waiter's loop: release a place, and cancel that waiter.

        Released first, the place is granted to the waiter, which passes it on
        as it is cancelled; cancelled first, the release skips it. Either way
        it never holds the place.
        """
        holders = self.holding("acquire", "try")
        holder = holders[index % len(holders)]
        first = self.places.waiters[0]
        self.places.leave(first)
        refused, party = self.places.give_back(holder)
        self.run(self.released_and_cancelled(first, cancel_first, refused, party))

    async def released_and_cancelled(
        self, first: Party, cancel_first: bool, refused: list[Party], party: Party | None
    ) -> None:
        future = self.future_of(first)
        outcome = await self.on(first.side, self.release_and_cancel(future, cancel_first))
        assert outcome == "cancelled", f"{first} released and cancelled at once: {outcome}"
        assert not first.placed.is_set()
        await self.passed_on(refused, party)

    async def release_and_cancel(self, future: asyncio.Future[None], cancel_first: bool) -> str:
        if cancel_first:
            future.cancel()
            self.limiter.release()  # skips the waiter: it is gone
        else:
            self.limiter.release()  # grants it the place, but it only runs in a later turn
            future.cancel()
        return await settled(future)

    @invariant()
    def places_are_the_models(self) -> None:
        self.counts_are_the_models()
        assert self.events.empty(), f"unforeseen: {self.events.get_nowait()}"

    def counts_are_the_models(self) -> None:
        places = self.places
        limiter = self.limiter
        assert (limiter.total_tokens, limiter.borrowed_tokens, limiter.waiting) == (
            places.total,
            places.borrowed,
            len(places.waiters),
        ), f"holders {places.holders}, waiting {list(places.waiters)}"
        assert limiter.total_tokens - limiter.borrowed_tokens == places.available
        assert repr(limiter) == (
            f"<CapacityLimiter {places.borrowed}/{places.total} taken,"
            f" {len(places.waiters)} waiting>"
        )

    def teardown(self) -> None:
        for party in self.parties:
            party.release.set()
        try:
            self.run(self.let_everyone_go())
            self.pool.shutdown(wait=True)
        finally:
            try:
                self.running.close()
            finally:
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
                self.loop.close()
                let_pools_go(self, "pool", "refusing", "hold", "refused")

    async def let_everyone_go(self) -> None:
        started = [party for party in self.parties if party.future is not None]
        for party in started:
            if not party.placed.is_set():
                await self.on(party.side, cancelled(self.future_of(party)))
        for party in started:
            await self.on(party.side, settled(self.future_of(party)))


class LimiterOnAsyncio(LimiterMachine):
    loop_kind = "asyncio"


class LimiterOnUvloop(LimiterMachine):
    loop_kind = "uvloop"


TestLimiterOnAsyncio = LimiterOnAsyncio.TestCase
TestLimiterOnAsyncio.settings = checked(examples=200)
TestLimiterOnUvloop = WITHOUT_UVLOOP(LimiterOnUvloop.TestCase)
TestLimiterOnUvloop.settings = checked(examples=200)
