"""Waiting in tests by state, never by a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from aiothreads import CapacityLimiter

T = TypeVar("T")

MAX_TURNS = 10_000
"""Loop turns after which a state that never came may be a failure."""

PATIENCE = 5.0
"""Seconds after which a state that never came may be a failure.

Another thread's progress (reaching a line, ending a call) is not bounded by
loop turns: the operating system decides when that thread holds the GIL.
"""


async def turns_until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition()`` holds; fail if it never does.

    For states that no event announces: a task reaching its first await, a
    waiter queuing, a thread blocking at a line. Fails only after both
    ``MAX_TURNS`` turns and ``PATIENCE`` seconds, so neither a fast loop nor a
    slow machine makes it flaky.
    """
    deadline = time.monotonic() + PATIENCE
    turns = 0
    while not condition():
        if turns >= MAX_TURNS and time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        turns += 1
        await asyncio.sleep(0)


async def queued_for_a_place(limiter: CapacityLimiter, work: Awaitable[T]) -> asyncio.Future[T]:
    """Start ``work`` and return it once it waits for a place under ``limiter``."""
    waiting = limiter.waiting
    started = asyncio.ensure_future(work)
    await turns_until(lambda: limiter.waiting > waiting, "the work queuing for a place")
    return started
