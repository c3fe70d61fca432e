"""Settings shared by the stateful tests that compare the library with a reference model.

In CI every machine runs a fixed number of examples, derandomized (the same
seed on every run), so a failure reproduces. ``AIOTHREADS_LONG_SEARCH=N``
(``nox -s models``) multiplies the examples by ``N`` and draws them at random,
for the long searches no CI run can afford.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["LONG_SEARCH", "model_settings"]

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
