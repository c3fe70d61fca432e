"""Run where no extra is installed: aiothreads works and imports none of them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.test_instrumentation_isolation import EXERCISE_EVERYTHING

EXTRAS = ("opentelemetry", "prometheus_client", "structlog")

if __name__ == "__main__":
    present = [name for name in EXTRAS if importlib.util.find_spec(name) is not None]
    if present:
        sys.exit(f"expected no extras in this environment, found {present}")
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", EXERCISE_EVERYTHING], check=False
    )
    sys.exit(completed.returncode)
