"""python -m aiothreads.inspect PID against live service processes, and its refusals."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiothreads
from aiothreads import AwaitingTask, CodeLocation, RunningWork, _inspection
from aiothreads._inflight import STACK_DEPTH
from aiothreads._inspection import default_path
from aiothreads.inspect import InspectionError, inspect_process, render_table
from tests.stuck_service import SERVICE, start
from tests.waiting import PATIENCE

SECRET = "s3cr3t-argument-value"
REMOTE_EXEC = sys.version_info >= (3, 14) and hasattr(sys, "remote_exec")


@pytest.fixture
def stopped_at_exit() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def inspect(pid: int, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiothreads.inspect", str(pid), *args],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        user=user,
    )


def service(stopped_at_exit: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = start(SERVICE, SECRET, *args)
    stopped_at_exit.append(process)
    return process


def check_the_stuck_service(completed: subprocess.CompletedProcess[str]) -> None:
    assert completed.returncode == 0, completed.stderr
    table = completed.stdout
    rows_then_stacks = table.split("\n\n")[0].splitlines()
    rows = {line.split()[0]: line for line in rows_then_stacks if line.startswith("__main__.")}
    driver = rows["__main__.blocking_driver_call"]
    assert "threaded" in driver
    assert "aiothreads_" in driver
    assert "request-42" in driver
    line = SERVICE.splitlines().index("    release.wait()  # DRIVER LINE") + 1
    assert f"<string>:{line} in blocking_driver_call" in driver
    scan = rows["__main__.run_scan"]
    assert "scan-job" in scan
    assert "sync_await:audit from aiothreads_" in scan
    assert "waiting on task sync_await:audit" in table
    assert "in handle_request" in table  # the awaiting task's coroutine chain
    assert SECRET not in table


def test_the_signal_path_prints_a_stuck_services_calls_with_their_tasks(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    process = service(stopped_at_exit, "--signal")
    check_the_stuck_service(inspect(process.pid, "--signal", "USR1"))
    assert process.poll() is None  # the signal did not end it


@pytest.mark.skipif(not REMOTE_EXEC, reason="sys.remote_exec is new in Python 3.14")
def test_remote_exec_needs_nothing_set_up_in_the_target(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    process = service(stopped_at_exit, "--heartbeat")
    check_the_stuck_service(inspect(process.pid))


def test_json_has_the_snapshot_and_no_argument_values(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    process = service(stopped_at_exit, "--signal")
    completed = inspect(process.pid, "--signal", "USR1", "--json")
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["pid"] == process.pid
    assert answer["format"] == 1
    assert answer["aiothreads"] == aiothreads.__version__
    assert completed.stderr == ""  # a target on this version gets no note about versions
    functions = sorted(work["function"] for work in answer["work"])
    assert functions == ["__main__.blocking_driver_call", "__main__.run_scan"]
    assert SECRET not in completed.stdout


@pytest.mark.parametrize("spelling", ["usr1", "SIGUSR1"])
def test_the_signal_may_be_named_in_either_case_and_with_its_sig_prefix(
    stopped_at_exit: list[subprocess.Popen[str]], spelling: str
) -> None:
    process = service(stopped_at_exit, "--signal")
    completed = inspect(process.pid, "--signal", spelling, "--json")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["pid"] == process.pid


def test_a_process_that_does_not_catch_the_signal_is_not_sent_it(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    process = service(stopped_at_exit)  # no snapshot signal: SIGUSR1 would end it
    completed = inspect(process.pid, "--signal", "USR1")
    assert completed.returncode == 1
    assert completed.stderr.startswith(
        f"aiothreads.inspect: process {process.pid} does not catch SIGUSR1: call "
        "aiothreads.instrumentation.install_snapshot_signal(signal.SIGUSR1) in it"
    )
    assert process.poll() is None


def test_a_process_that_is_not_python_is_named_as_such(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    sleeper = shutil.which("sleep")
    assert sleeper is not None
    process = subprocess.Popen([sleeper, "60"], text=True)
    stopped_at_exit.append(process)
    completed = inspect(process.pid)
    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        f"aiothreads.inspect: process {process.pid} is not a Python process "
        f"({os.path.realpath(sleeper)})"
    )


@pytest.mark.skipif(not REMOTE_EXEC, reason="sys.remote_exec is new in Python 3.14")
def test_a_python_process_without_aiothreads_says_so(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    script = (
        "import asyncio\n"
        "async def main():\n"
        "    print('x', flush=True)\n"
        "    while True:\n"
        "        await asyncio.sleep(0.05)\n"
        "asyncio.run(main())\n"
    )
    process = start(script)
    stopped_at_exit.append(process)
    completed = inspect(process.pid)
    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        f"aiothreads.inspect: process {process.pid} has not imported aiothreads"
    )


def test_a_process_that_does_not_exist_is_named() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(30)
    completed = inspect(process.pid)
    assert completed.returncode == 1
    assert completed.stderr.strip() == f"aiothreads.inspect: no process {process.pid}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_process_of_another_user_is_refused_with_what_to_do(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    process = service(stopped_at_exit, "--signal")
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        message = "inspected"
        try:
            os.setgid(65534)
            os.setuid(65534)  # nobody
            inspect_process(process.pid)
        except InspectionError as exc:
            message = str(exc)
        except BaseException as exc:
            message = repr(exc)
        finally:
            os.write(writing, message.encode())
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        message = pipe.read()
    os.waitpid(child, 0)
    assert message.startswith(
        f"permission denied for process {process.pid}: inspect a process of your own user, "
        "or as root"
    )
    assert process.poll() is None


def other_python() -> str | None:
    """Another Python 3.14+ on PATH than the one running the tests, if any."""
    for minor in (14, 15, 16):
        if (3, minor) != sys.version_info[:2] and shutil.which(f"python3.{minor}"):
            return f"python3.{minor}"
    return None


@pytest.mark.skipif(
    not REMOTE_EXEC or other_python() is None, reason="needs two Pythons 3.14 or later"
)
def test_a_target_on_another_python_is_told_which_python_to_use(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    other = other_python()
    assert other is not None
    process = subprocess.Popen(
        [other, "-c", "import time; print('x', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    stopped_at_exit.append(process)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "x"
    completed = inspect(process.pid)
    assert completed.returncode == 1
    assert f"runs Python {other.removeprefix('python')}" in completed.stderr
    assert f"run {other} -m aiothreads.inspect {process.pid}" in completed.stderr


def test_a_table_of_nothing_says_so() -> None:
    table = render_table({"pid": 7, "aiothreads": "1.3.0", "python": "3.14.1", "work": []})
    assert (
        table == "process 7: aiothreads 1.3.0, Python 3.14.1\nnothing runs in aiothreads' threads"
    )


def test_a_call_run_by_another_process_shows_its_executor_in_place_of_a_thread() -> None:
    elsewhere = RunningWork(
        function="jobs.crunch",
        kind="threaded",
        loop="_UnixSelectorEventLoop@7f00",
        thread_name="",
        thread_id=0,
        submitted=100.0,
        started=100.0,
        running_for=12.0,
        queued_for=0.0,
        limit_wait=None,
        items=None,
        waiting_for_room=None,
        trace_id=None,
        stack=(),
        executor="ProcessPoolExecutor",
        awaited_by=(AwaitingTask("request-3"),),
    )
    answer = {"pid": 7, "aiothreads": "1.3.0", "python": "3.14.1", "work": [elsewhere.as_dict()]}
    table = render_table(answer)
    row = next(line for line in table.splitlines() if line.startswith("jobs.crunch "))
    assert row.split() == [
        "jobs.crunch",
        "threaded",
        "ProcessPoolExecutor",
        "12.0",
        "s",
        "request-3",
        "-",
        "-",
        "-",
    ]
    assert "jobs.crunch in ProcessPoolExecutor:" in table.splitlines()


def test_a_snapshot_larger_than_a_pipe_holds_is_written_to_wait_for_its_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's end of the FIFO is non-blocking; the target's end must not be.

    Written without blocking, a snapshot longer than the pipe holds is cut
    short as soon as the pipe is full and the reader has not caught up.
    """
    fifo = str(tmp_path / "answer")
    os.mkfifo(fifo, 0o600)
    reading = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # as the command holds it
    capacity = fcntl.fcntl(reading, fcntl.F_GETPIPE_SZ)
    stack = [f"/srv/app/jobs.py:{line} in step" for line in range(STACK_DEPTH)]
    work = [{"function": f"jobs.step_{number}", "stack": stack} for number in range(400)]
    large = {"format": 1, "pid": os.getpid(), "work": work}
    assert len(json.dumps(large)) > 4 * capacity
    monkeypatch.setattr(_inspection, "payload", lambda: large)
    blocking: list[bool] = []
    writing = threading.Event()
    write = os.write

    def write_noting_the_mode(descriptor: int, data: bytes | memoryview) -> int:
        if threading.current_thread() is writer:
            blocking.append(os.get_blocking(descriptor))
            writing.set()  # its end is open: from now on, an empty read means the end
        return write(descriptor, data)

    monkeypatch.setattr(_inspection.os, "write", write_noting_the_mode)
    writer = threading.Thread(target=_inspection.write_payload, args=(fifo,))
    chunks: list[bytes] = []
    try:
        writer.start()
        assert writing.wait(PATIENCE)
        os.set_blocking(reading, True)
        while chunk := os.read(reading, 65536):
            chunks.append(chunk)
    finally:
        os.close(reading)
        writer.join(10)
    assert blocking
    assert all(blocking), blocking
    assert json.loads(b"".join(chunks)) == large


def test_a_snapshot_file_left_where_the_command_reads_is_replaced(
    stopped_at_exit: list[subprocess.Popen[str]],
) -> None:
    process = service(stopped_at_exit, "--signal")
    # What the target writes when its signal arrives and no command reads: a plain file.
    left = Path(default_path(process.pid))
    left.write_text(json.dumps({"format": 1, "pid": process.pid, "work": []}))
    try:
        completed = inspect(process.pid, "--signal", "USR1", "--json")
    finally:
        left.unlink(missing_ok=True)
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["pid"] == process.pid
    assert len(answer["work"]) == 2  # the live snapshot, not the file left behind


def test_a_call_waiting_on_a_task_shows_that_tasks_coroutine_chain_under_it() -> None:
    scanning = RunningWork(
        function="jobs.run_scan",
        kind="threaded",
        loop="_UnixSelectorEventLoop@7f00",
        thread_name="aiothreads_0",
        thread_id=11,
        submitted=100.0,
        started=100.0,
        running_for=3.0,
        queued_for=0.0,
        limit_wait=None,
        items=None,
        waiting_for_room=None,
        trace_id=None,
        stack=(CodeLocation("/srv/app/jobs.py", 20, "run_scan"),),
        awaited_by=(AwaitingTask("scan-job", (CodeLocation("/srv/app/jobs.py", 30, "scan_job"),)),),
        waiting_on=AwaitingTask(
            "sync_await:audit from aiothreads_0", (CodeLocation("/srv/app/audit.py", 9, "audit"),)
        ),
    )
    # A generator's producer is awaited by no task; its thread may still wait on one.
    producing = dataclasses.replace(
        scanning,
        function="jobs.rows",
        kind="iterable",
        thread_name="aiothreads_1",
        stack=(CodeLocation("/srv/app/jobs.py", 40, "rows"),),
        awaited_by=(),
        waiting_on=AwaitingTask(
            "sync_await:fetch from aiothreads_1", (CodeLocation("/srv/app/fetch.py", 5, "fetch"),)
        ),
    )
    answer = {
        "pid": 7,
        "aiothreads": "1.3.0",
        "python": "3.14.1",
        "work": [producing.as_dict(), scanning.as_dict()],
    }
    stacks = render_table(answer).split("\n\n")[1:]
    assert stacks == [
        "jobs.rows in aiothreads_1:\n"
        "    /srv/app/jobs.py:40 in rows\n"
        "  waiting on task sync_await:fetch from aiothreads_1:\n"
        "    /srv/app/fetch.py:5 in fetch",
        "jobs.run_scan in aiothreads_0:\n"
        "    /srv/app/jobs.py:20 in run_scan\n"
        "  awaited by task scan-job:\n"
        "    /srv/app/jobs.py:30 in scan_job\n"
        "  waiting on task sync_await:audit from aiothreads_0:\n"
        "    /srv/app/audit.py:9 in audit",
    ]
