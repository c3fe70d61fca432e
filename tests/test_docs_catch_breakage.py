"""The docs' examples of limit=, cancellation and backpressure fail on a build without them.

Each example runs once as written (it passes) and once after a prelude that
breaks the feature it shows (it must fail): an example that passes either way
shows nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.python_process import run_python

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)

NO_LIMITS = """
from aiothreads import _limits

async def _admitted(self):
    return None

_limits.CapacityLimiter.try_acquire = lambda self: True
_limits.CapacityLimiter.acquire = _admitted
_limits.CapacityLimiter.release = lambda self: None
"""

NO_CANCELLATION = """
import aiothreads

aiothreads.is_cancelled = lambda: False
aiothreads.check_cancelled = lambda: None
"""

NO_BACKPRESSURE = """
from aiothreads import _channel

_channel.FromThreadChannel._wait_until_open_with_room = lambda self: None
"""

CASES = {
    "limit": ("limits-and-cancellation.md", "CapacityLimiter(2)", NO_LIMITS),
    "cancellation": ("limits-and-cancellation.md", "check_cancelled()", NO_CANCELLATION),
    "backpressure": ("generators.md", "leads.append", NO_BACKPRESSURE),
}


def example(page: str, marker: str) -> str:
    (found,) = [block for block in BLOCK.findall((DOCS / page).read_text()) if marker in block]
    return found


@pytest.mark.parametrize("feature", sorted(CASES))
def test_the_example_passes_with_the_feature_and_fails_without_it(feature: str) -> None:
    page, marker, breakage = CASES[feature]
    code = example(page, marker)
    working = run_python(code, timeout=90)
    assert working.returncode == 0, working.stderr
    broken = run_python(breakage + code, timeout=90)
    assert broken.returncode != 0, f"the {feature} example passes without {feature}"
    assert "AssertionError" in broken.stderr, broken.stderr
