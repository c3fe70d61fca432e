"""Settings shared by the stateful tests that compare the library with a reference model.

In CI every machine runs a fixed number of examples, derandomized (the same
seed on every run), so a failure reproduces. ``AIOTHREADS_LONG_SEARCH=N``
(``nox -s models``) multiplies the examples by ``N`` and draws them at random,
for the long searches no CI run can afford.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from aiothreads import ExecutorRefused
from tests.conftest import LOOP_FACTORIES
from tests.waiting import PATIENCE

if TYPE_CHECKING:
    from hypothesis.stateful import RuleBasedStateMachine

__all__ = [
    "LONG_SEARCH",
    "MODEL_TIMEOUT",
    "WITHOUT_UVLOOP",
    "checked",
    "let_pools_go",
    "model_settings",
    "settled",
]

WITHOUT_UVLOOP = pytest.mark.skipif("uvloop" not in LOOP_FACTORIES, reason="needs uvloop")
"""For a machine's test on uvloop: skipped where uvloop is not installed."""

MODEL_TIMEOUT = pytest.mark.timeout(180)
"""A model's whole run, every example: minutes on a machine under load. Its own
waits (a few seconds each) report a stall long before this ends the session."""

LONG_SEARCH = int(os.environ.get("AIOTHREADS_LONG_SEARCH", "0") or 0)
"""How many times more examples a long search runs; 0 in CI, where runs are fixed."""


def model_settings(examples: int, steps: int = 30) -> settings:
    """Settings for a ``RuleBasedStateMachine``: ``examples`` runs of up to ``steps`` rules."""
    return settings(
        max_examples=examples * LONG_SEARCH if LONG_SEARCH else examples,
        stateful_step_count=steps,
        derandomize=not LONG_SEARCH,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def checked(examples: int) -> settings:
    """``model_settings``; in the fixed runs a failure is reported as found, not shrunk.

    Every replay starts loops and threads, and one that waits for what never
    comes waits ``PATIENCE``: shrinking can take longer than a model may run
    (``MODEL_TIMEOUT``, which ends the whole session). The long searches
    (``nox -s models``) have no timeout, and shrink.
    """
    fixed = model_settings(examples=examples, steps=30)
    if LONG_SEARCH:
        return fixed
    found = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)
    return settings(fixed, phases=found, report_multiple_bugs=False)


def let_pools_go(machine: RuleBasedStateMachine, *names: str) -> None:
    """Drop what holds ``machine``'s pools, which ``pool_states()`` walks while they live.

    Hypothesis holds each machine in a reference cycle until a full garbage
    collection: without this, every check would walk the pools of hundreds of
    earlier runs, shut down but not yet collected.
    """
    for name in names:
        vars(machine).pop(name, None)


async def settled(future: asyncio.Future[Any]) -> str:
    """Wait (on the future's loop) until ``future`` is done; say how it ended."""
    done, _ = await asyncio.wait([future], timeout=PATIENCE)
    if not done:
        return "still pending"
    if future.cancelled():
        return "cancelled"
    error = future.exception()
    if error is None:
        return "done"
    if isinstance(error, ExecutorRefused):
        return "refused"
    return f"failed: {error!r}"
