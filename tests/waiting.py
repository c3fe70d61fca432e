"""Waiting in tests by state, never by the clock or by a counted number of loop turns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

MAX_TURNS = 10_000
"""Loop turns after which a state that never came is a failure, not a slow pass."""


async def turns_until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition()`` holds; fail if it never does.

    For states the loop itself brings about (a task reaching its first await,
    a waiter queuing), which no event announces. Counts turns, not seconds, so
    a slow machine cannot make it flaky.
    """
    for _ in range(MAX_TURNS):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")
