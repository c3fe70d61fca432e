"""Without the extras, aiothreads imports none of them; the exposition passes promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

BLOCK_EXTRAS = """
import sys

class _NotInstalled:
    blocked = ("opentelemetry", "prometheus_client", "structlog")

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _NotInstalled())
"""

EXERCISE_EVERYTHING = """
import asyncio
import sys
from aiothreads import (
    FromThreadChannel, sync_await, threaded, threaded_iterable,
    threaded_iterable_separate, threaded_separate, wait_coroutine,
)
from aiothreads import instrumentation

async def double(x):
    return x * 2

@threaded
def call(x):
    return sync_await(double, x) + wait_coroutine(double(x))

@threaded_separate
def separate(x):
    return x

@threaded_iterable(max_size=2)
def stream(n):
    yield from range(n)

@threaded_iterable_separate
def stream_separate(n):
    yield from range(n)

async def main():
    assert await call(1) == 4
    assert await separate(2) == 2
    assert [i async for i in stream(5)] == [0, 1, 2, 3, 4]
    async for _ in stream_separate(10):
        break
    channel = FromThreadChannel(maxsize=1)
    channel.put(1)
    assert await channel.get() == 1

asyncio.run(main())
assert instrumentation.enabled_backends() == [], instrumentation.enabled_backends()
extras = ("opentelemetry", "prometheus_client", "structlog")
loaded = [name for name in extras if name in sys.modules]
assert not loaded, loaded
print("clean")
"""


def run(source: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **environment},
    )


def test_without_extras_none_of_them_is_imported() -> None:
    completed = run(BLOCK_EXTRAS + EXERCISE_EVERYTHING)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "clean"
    assert completed.stderr == ""


def test_switched_off_by_environment_imports_nothing_even_when_installed() -> None:
    completed = run(EXERCISE_EVERYTHING, AIOTHREADS_INSTRUMENTATION="off")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "clean"


EXPOSITION = """
import asyncio, threading
import prometheus_client
from aiothreads import instrumentation, sync_await, threaded, threaded_iterable, threaded_separate

instrumentation.configure(prometheus=True, opentelemetry=False, structlog=False)

async def noop():
    return None

@threaded
def ok():
    sync_await(noop)

@threaded
def fails():
    raise ValueError("x")

@threaded_separate
def separate():
    return 1

@threaded_iterable(max_size=1)
def stream():
    yield from range(10)

async def main():
    await ok()
    try:
        await fails()
    except ValueError:
        pass
    await separate()
    async for item in stream():
        if item == 3:
            break
    it = stream()
    await it.__anext__()
    print(prometheus_client.generate_latest().decode())
    await it.aclose()

asyncio.run(main())
"""


def test_promtool_finds_nothing_to_complain_about() -> None:
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (.ci/run installs it)")
    completed = run(EXPOSITION, AIOTHREADS_INSTRUMENTATION="auto")
    assert completed.returncode == 0, completed.stderr
    exposition = completed.stdout
    assert "aiothreads_channel_depth" in exposition
    assert "aiothreads_generator_cancellations_total" in exposition
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "", checked.stdout
