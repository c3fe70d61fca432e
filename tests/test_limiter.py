"""CapacityLimiter on its own: places are never lost, whatever order waiters come and go in."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aiothreads import CapacityLimiter, threaded
from tests.waiting import turns_until


@pytest.mark.asyncio
async def test_acquire_takes_a_free_place_and_release_gives_it_back() -> None:
    limiter = CapacityLimiter(2)
    await limiter.acquire()
    assert limiter.borrowed_tokens == 1
    async with limiter:
        assert limiter.borrowed_tokens == 2
        assert not limiter.try_acquire()
    limiter.release()
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_a_newcomer_never_jumps_the_queue() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await limiter.acquire()
        order.append(name)
        limiter.release()

    first = asyncio.create_task(take("first"))
    await turns_until(lambda: limiter.waiting == 1, "the first waiter queues")
    limiter.release()  # the place passes to the first waiter, still queued on the loop
    second = asyncio.create_task(take("second"))
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_a_waiter_granted_a_place_and_cancelled_in_the_same_turn_passes_it_on() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    granted = asyncio.create_task(limiter.acquire())
    follower = asyncio.create_task(limiter.acquire())
    await turns_until(lambda: limiter.waiting == 2, "both wait")
    limiter.release()  # granted to the first ...
    granted.cancel()  # ... which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await granted
    await follower  # the place went on to the next waiter
    assert limiter.borrowed_tokens == 1
    limiter.release()
    assert limiter.borrowed_tokens == 0
    assert limiter.waiting == 0
    assert not limiter._granted  # nothing kept for waiters that are gone


@pytest.mark.asyncio
async def test_a_cancelled_first_waiter_is_skipped() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire())
    follower = asyncio.create_task(limiter.acquire())
    await turns_until(lambda: limiter.waiting == 2, "both wait")
    gone.cancel()
    limiter.release()  # in the same turn: the first waiter is already cancelled
    assert limiter.waiting == 0  # the follower was granted the place at once
    await follower
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert limiter.borrowed_tokens == 1
    limiter.release()
    assert limiter.borrowed_tokens == 0
    assert not limiter._granted


def test_a_waiter_whose_loop_closed_gets_no_place(
    loop_factory: object,
) -> None:
    limiter = CapacityLimiter(1)
    held = threading.Event()

    def wait_on_a_loop_that_closes() -> None:
        loop = loop_factory()  # type: ignore[operator]
        try:
            pending = loop.create_task(limiter.acquire())
            pending._log_destroy_pending = False  # type: ignore[attr-defined]  # closed on purpose
            loop.run_until_complete(turns_until(lambda: limiter.waiting == 1, "it waits"))
            held.set()
        finally:
            loop.close()  # the waiter stays queued, on a loop that will never run again
        del pending

    async def main() -> None:
        await limiter.acquire()
        stranger = threading.Thread(target=wait_on_a_loop_that_closes)
        stranger.start()
        await asyncio.to_thread(stranger.join, 5)
        assert held.is_set()
        follower = asyncio.create_task(limiter.acquire())
        await turns_until(lambda: limiter.waiting == 2, "the follower waits behind it")
        limiter.release()  # skips the waiter whose loop closed
        await asyncio.wait_for(follower, 5)  # a hang guard: the place must reach it
        limiter.release()

    main_loop = loop_factory()  # type: ignore[operator]
    try:
        main_loop.run_until_complete(main())
    finally:
        main_loop.run_until_complete(main_loop.shutdown_default_executor())
        main_loop.close()
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_the_result_arrives_after_the_place_is_back() -> None:
    limiter = CapacityLimiter(1)

    @threaded(limit=limiter)
    def work() -> int:
        return limiter.borrowed_tokens

    assert await work() == 1  # it ran holding the place
    assert limiter.borrowed_tokens == 0  # given back by the time its caller resumed


def test_bad_limits_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match=r"^total_tokens must be >= 1, got 0$"):
        CapacityLimiter(0)
    with pytest.raises(TypeError, match=r"^total_tokens must be an int, got str$"):
        CapacityLimiter("2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got str"):
        threaded(limit="3")  # type: ignore[call-overload]
    with pytest.raises(RuntimeError, match=r"^release\(\) without a matching acquire\(\)$"):
        CapacityLimiter(1).release()
