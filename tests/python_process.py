"""Run Python code in a fresh interpreter, as a user's script would run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping


def run_python(
    code: str, *, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``python -W error -c`` and return what it did (never raises)."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
    )
