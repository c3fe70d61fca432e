"""The outcomes of calls, the reasons generators stop and pools refuse: the core's words.

The instrumentation layer borrows them for labels and span attributes. Both
are string enums: a member is equal to, hashes like and prints as its value.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Final

__all__ = ["CANCELLED", "ERROR", "OK", "Outcome", "Refusal", "StopReason", "outcome_of"]


class _Word(str, enum.Enum):
    """A string enum that prints as its value on every supported Python."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


class Outcome(_Word):
    """How a call or a generator ended."""

    OK = "ok"
    """The call returned (or the generator ran to its end)."""
    ERROR = "error"
    """The call raised, or could not be run."""
    CANCELLED = "cancelled"
    """The caller gave up (or the consumer left) before the outcome mattered."""


class StopReason(_Word):
    """Why a generator stopped before its end (the ``reason`` label)."""

    BREAK = "break"
    """The consumer left ``async for`` early."""
    CLOSED = "closed"
    """``close()``, ``aclose()`` or the end of ``async with``."""
    CANCELLED = "cancelled"
    """The consumer was cancelled while it waited for an item."""
    COLLECTED = "collected"
    """The iterator was garbage collected."""
    LOOP_CLOSED = "loop_closed"
    """The event loop shut down or was closed."""
    ERROR = "error"
    """The generator raised."""


class Refusal(_Word):
    """Why a pool did not run a call it was handed (the ``reason`` label of refusals)."""

    SHUT_DOWN = "shut_down"
    """``submit()`` raised a plain ``RuntimeError``: the executor was shut down."""
    REJECTED = "rejected"
    """``submit()`` raised an exception of its own type (load shedding, a broken pool)."""
    DROPPED = "dropped"
    """The executor dropped the queued call (``shutdown(cancel_futures=True)``)."""


OK: Final = Outcome.OK
ERROR: Final = Outcome.ERROR
CANCELLED: Final = Outcome.CANCELLED


def outcome_of(error: BaseException | None, cancelled: bool = False) -> Outcome:
    """Return how a call ended that raised ``error`` (or nothing); ``cancelled`` if it was."""
    if cancelled or isinstance(error, asyncio.CancelledError):
        return CANCELLED
    return OK if error is None else ERROR
