"""Interpreter and loop shutdown: no hangs, no stray tracebacks (run in subprocesses)."""

from __future__ import annotations

import pytest

from tests.python_process import run_dev_script

LOOPS = ["asyncio", "uvloop"]

LOOP_SETUP = """
import asyncio, sys
if sys.argv[1] == "uvloop":
    import uvloop
    run, new_event_loop = uvloop.run, uvloop.new_event_loop
else:
    run, new_event_loop = asyncio.run, asyncio.new_event_loop
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_detached_separate_threads_never_block_exit(loop: str) -> None:
    completed = run_dev_script(
        LOOP_SETUP
        + """
import threading
from aiothreads import threaded_separate

started = threading.Event()

@threaded_separate
def hangs_forever():
    started.set()
    threading.Event().wait()

async def main():
    hangs_forever()
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)

run(main())
print("done")
""",
        loop,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "done"
    assert completed.stderr == ""


@pytest.mark.parametrize("loop", LOOPS)
def test_loop_closing_while_threads_run_prints_nothing(loop: str) -> None:
    completed = run_dev_script(
        LOOP_SETUP
        + """
import threading
from aiothreads import threaded, threaded_separate, threaded_iterable

release = threading.Event()
started = threading.Barrier(2, timeout=5)

@threaded_separate(detach=True)
def slow_separate():
    started.wait()
    release.wait(5)
    return 1

@threaded_iterable(max_size=1)
def endless():
    number = 0
    while True:
        yield number
        number += 1

kept = []

async def main():
    kept.append(slow_separate())
    stream = endless()
    kept.append(stream)
    await stream.__anext__()
    await asyncio.get_running_loop().run_in_executor(None, started.wait)

loop = new_event_loop()
loop.run_until_complete(main())
loop.close()
release.set()
print("closed")
""",
        loop,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "closed"
    assert "Traceback" not in completed.stderr
    assert "Error" not in completed.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_asyncio_run_returns_while_a_generator_is_suspended(loop: str) -> None:
    completed = run_dev_script(
        LOOP_SETUP
        + """
from aiothreads import threaded_iterable

@threaded_iterable(max_size=1)
def endless():
    while True:
        yield 1

streams = []

async def main():
    stream = endless()
    streams.append(stream)
    await stream.__anext__()

run(main())
print("returned")
""",
        loop,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "returned"
    assert completed.stderr == ""
