"""Waiting in tests by state, never by a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

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
