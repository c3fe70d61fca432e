"""Run Python code in a fresh interpreter, as a user's script would run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping

import pytest


def run_python(
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    warnings_as_errors: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``python -W error -c`` and return what it did (never raises).

    ``warnings_as_errors=False`` leaves out ``-W error``, for code that checks warnings.
    """
    options = ["-W", "error"] if warnings_as_errors else []
    return subprocess.run(
        [sys.executable, *options, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
    )


HANG_GUARD = 45.0
"""Seconds after which a script that has not exited counts as hung (below the test timeout)."""

_QUIET_SLOW_CALLBACK_NOTES = """\
import logging
logging.getLogger("asyncio").addFilter(
    lambda record: not record.getMessage().startswith("Executing ")
)
"""
"""Development mode notes each loop step slower than 0.1 s: a busy machine's doing, not ours."""


def run_dev_script(source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in development mode (``-X dev -W error``) with ``args``.

    Fails the test if the interpreter does not exit. Everything it prints is
    returned, except asyncio's notes on slow loop steps, whose timing belongs
    to the machine.
    """
    script = _QUIET_SLOW_CALLBACK_NOTES + textwrap.dedent(source)
    try:
        return subprocess.run(
            [sys.executable, "-X", "dev", "-W", "error", "-c", script, *args],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the interpreter never exited; it printed {exc.stdout!r} {exc.stderr!r}")
