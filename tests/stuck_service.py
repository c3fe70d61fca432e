"""A service stuck the way issues are reported: a request on a blocked driver call,
a scan job whose thread waits in ``sync_await`` on a coroutine."""

from __future__ import annotations

import subprocess
import sys

SERVICE = """\
import asyncio, os, signal, sys, threading
import aiothreads
from aiothreads.instrumentation import install_snapshot_signal

driver_entered, release = threading.Event(), threading.Event()


@aiothreads.threaded
def blocking_driver_call(secret):
    driver_entered.set()
    release.wait()  # DRIVER LINE


async def handle_request():
    await blocking_driver_call(sys.argv[1])


async def audit(secret):
    audit_entered.set()
    await asyncio.Event().wait()


@aiothreads.threaded
def run_scan():
    aiothreads.sync_await(audit, sys.argv[1])


async def scan_job():
    await run_scan()


async def heartbeat():
    while True:  # a service's timers: its main thread runs Python code now and then
        await asyncio.sleep(0.05)


async def main():
    global audit_entered
    audit_entered = asyncio.Event()
    if "--signal" in sys.argv:
        install_snapshot_signal(signal.SIGUSR1)
    if "--heartbeat" in sys.argv:
        asyncio.ensure_future(heartbeat())
    request = asyncio.create_task(handle_request(), name="request-42")
    scan = asyncio.create_task(scan_job(), name="scan-job")
    await audit_entered.wait()
    await asyncio.to_thread(driver_entered.wait)
    print("ready", flush=True)
    await asyncio.gather(request, scan)


asyncio.run(main())
"""


def start(script: str, *args: str) -> subprocess.Popen[str]:
    """Start ``script`` and return it once it printed its first line."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.strip() in {"ready", "x"}, (first, process.stderr.read() if process.stderr else "")
    return process
