"""Print what a live process's aiothreads threads are doing: ``python -m aiothreads.inspect PID``.

Semantics:

* On Python 3.14 and later (this command's Python and the target's), the
  target is asked through ``sys.remote_exec``, as debuggers do: nothing needs
  to be set up in it. It answers when its main thread next runs Python code;
  an event loop with nothing at all scheduled runs none, so a target that
  does not answer within ``--timeout`` is told apart from one that failed.
* Otherwise, and with ``--signal``, the target must have called
  ``aiothreads.instrumentation.install_snapshot_signal()``: the command
  checks that the target catches the signal (a signal it does not catch
  could end it), sends it, and reads the snapshot.
* The answer travels through a FIFO in a private temporary directory, so the
  command waits on it without polling; it never holds argument values or
  local variables, only names, code locations and timings.
* The operating system decides who may be inspected: the same user as the
  target, or root (and, for ``sys.remote_exec``, whatever ptrace settings
  allow). Every refusal is printed as one line saying what to do.

Exit status: 0 with a snapshot, 1 when the target could not be inspected,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ._inspection import FORMAT, default_path
from ._version import __version__

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

__all__ = ["InspectionError", "inspect_process", "main", "render_table"]

_REMOTE_SCRIPT: Final = """\
import json, os, shutil, sys, threading

def _aiothreads_answer(path):
    try:
        inspection = sys.modules.get("aiothreads._inspection")
        if inspection is not None:
            inspection.write_payload(path)
            return
        answer = {{"format": {format}, "error": "not imported"}}
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # the command gave up waiting: nobody reads
            return
        try:
            os.write(descriptor, json.dumps(answer).encode())
        finally:
            os.close(descriptor)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)

threading.Thread(
    target=_aiothreads_answer, args=({path!r},), name="aiothreads-inspect", daemon=True
).start()
"""

_PTRACE_HINT: Final = (
    "inspect a process of your own user, or as root; on Linux, "
    "/proc/sys/kernel/yama/ptrace_scope must allow it (0, or 1 with CAP_SYS_PTRACE)"
)


class InspectionError(Exception):
    """The target could not be inspected; the message says why and what to do."""


def inspect_process(
    pid: int,
    *,
    signum: int | None = None,
    file: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Return process ``pid``'s snapshot payload (see ``aiothreads._inspection``).

    Args:
        pid: The target process.
        signum: Ask through this signal (the target installed
            ``install_snapshot_signal``) instead of ``sys.remote_exec``.
            ``None``: ``sys.remote_exec`` where both Pythons have it, else
            ``SIGUSR1``.
        file: The file the target writes on the signal, if it chose one.
        timeout: Seconds to wait for the answer.

    Raises:
        InspectionError: why the target could not be inspected.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InspectionError(f"not a process id: {pid!r}")
    if timeout <= 0:
        raise InspectionError(f"--timeout must be positive, got {timeout}")
    _check_alive(pid)
    _check_python(pid)
    remote = signum is None and _can_remote_exec(pid)
    if remote:
        return _checked(_ask_remotely(pid, timeout), pid)
    fifo = file if file is not None else default_path(pid)
    signum = signal.SIGUSR1 if signum is None else signum
    _check_catches(pid, signum)
    with _reader(fifo, replace=True) as descriptor:
        _send(pid, signum)
        answer = _read_answer(descriptor, timeout, pid, remote=False)
    return _checked(answer, pid)


def _ask_remotely(pid: int, timeout: float) -> bytes:
    """Ask through ``sys.remote_exec``; the script removes its own directory once it ran.

    A target that has not run it yet when the wait ends may run it later: it
    then finds nobody reading, and still cleans up after itself.
    """
    private = tempfile.mkdtemp(prefix="aiothreads-inspect-")
    fifo = str(Path(private) / "answer")
    ran = False
    try:
        with _reader(fifo) as descriptor:
            _remote_exec(pid, private, fifo)
            ran = True
            return _read_answer(descriptor, timeout, pid, remote=True)
    finally:
        if not ran:
            shutil.rmtree(private, ignore_errors=True)


def _check_alive(pid: int) -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise InspectionError(f"no process {pid}") from None
    except PermissionError:
        raise InspectionError(f"permission denied for process {pid}: {_PTRACE_HINT}") from None


def _check_python(pid: int) -> None:
    """Refuse a target that is plainly no Python process (where /proc tells)."""
    maps = Path(f"/proc/{pid}/maps")
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
        mapped = maps.read_text(errors="replace")
    except FileNotFoundError:
        return  # no /proc here: the attempt itself will tell
    except PermissionError:
        raise InspectionError(f"permission denied for process {pid}: {_PTRACE_HINT}") from None
    name = os.path.basename(executable)
    if not name.startswith("python") and "libpython" not in mapped:
        raise InspectionError(f"process {pid} is not a Python process ({executable})")


def _target_python(pid: int) -> tuple[int, int] | None:
    """Return the target's Python version, read from its executable or its libpython."""
    try:
        names = [os.path.basename(os.readlink(f"/proc/{pid}/exe"))]
        names += Path(f"/proc/{pid}/maps").read_text(errors="replace").split()
    except OSError:
        return None
    for name in names:
        for prefix in ("python", "libpython"):
            base = os.path.basename(name)
            if base.startswith(prefix):
                version = base[len(prefix) :].split(".so")[0].split(".")
                if len(version) >= 2 and version[0].isdigit() and version[1].rstrip("t").isdigit():
                    return int(version[0]), int(version[1].rstrip("t"))
    return None


def _can_remote_exec(pid: int) -> bool:
    """Whether to ask through ``sys.remote_exec``: both Pythons are the same 3.14+."""
    target = _target_python(pid)
    ours = sys.version_info[:2]
    if target is not None and target != ours and min(target, ours) >= (3, 14):
        raise InspectionError(
            f"process {pid} runs Python {target[0]}.{target[1]}, this command "
            f"{ours[0]}.{ours[1]}: run python{target[0]}.{target[1]} -m aiothreads.inspect {pid}"
        )
    if not hasattr(sys, "remote_exec"):
        return False
    return target is None or target == ours


@contextlib.contextmanager
def _reader(path: str, *, replace: bool = False) -> Generator[int, None, None]:
    """Make a FIFO at ``path`` and hold it open for reading; remove it afterwards."""
    if replace:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    try:
        os.mkfifo(path, 0o600)
    except OSError as exc:
        raise InspectionError(f"cannot make {path}: {exc.strerror}") from None
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            yield descriptor
        finally:
            os.close(descriptor)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _remote_exec(pid: int, private: str, fifo: str) -> None:
    script = Path(private) / "answer.py"
    script.write_text(_REMOTE_SCRIPT.format(format=FORMAT, path=fifo))
    os.chmod(private, 0o755)  # the target may run as another user (we are root)
    os.chmod(fifo, 0o666)
    try:
        sys.remote_exec(pid, str(script))  # type: ignore[attr-defined,unused-ignore]
    except PermissionError:
        raise InspectionError(f"permission denied for process {pid}: {_PTRACE_HINT}") from None
    except ProcessLookupError:
        raise InspectionError(f"no process {pid}") from None
    except (OSError, RuntimeError) as exc:
        target = _target_python(pid)
        ours = "{}.{}".format(*sys.version_info[:2])
        if target is not None and target != sys.version_info[:2]:
            raise InspectionError(
                f"process {pid} runs Python {target[0]}.{target[1]}, this command {ours}: "
                f"run it with python{target[0]}.{target[1]}"
            ) from None
        raise InspectionError(
            f"process {pid} could not be reached through sys.remote_exec ({exc}); "
            "is it a Python 3.14+ process? Otherwise use --signal with "
            "aiothreads.instrumentation.install_snapshot_signal() in the target"
        ) from None


def _check_catches(pid: int, signum: int) -> None:
    """Refuse to send a signal the target does not catch: by default, it would end it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return  # no /proc here: trust the caller
    except PermissionError:
        raise InspectionError(f"permission denied for process {pid}: {_PTRACE_HINT}") from None
    caught = next(
        (line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0"
    )
    if not int(caught, 16) & (1 << (signum - 1)):
        name = signal.Signals(signum).name
        raise InspectionError(
            f"process {pid} does not catch {name}: call "
            f"aiothreads.instrumentation.install_snapshot_signal(signal.{name}) in it"
            + ("" if hasattr(sys, "remote_exec") else ", or inspect it from Python 3.14+")
        )


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except PermissionError:
        raise InspectionError(f"permission denied for process {pid}: {_PTRACE_HINT}") from None
    except ProcessLookupError:
        raise InspectionError(f"no process {pid}") from None


def _read_answer(descriptor: int, timeout: float, pid: int, *, remote: bool) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        readable = select.select([descriptor], [], [], max(left, 0))[0] if left > 0 else []
        if not readable:
            raise InspectionError(_no_answer(pid, timeout, remote=remote))
        chunk = os.read(descriptor, 65536)
        if not chunk:  # the writer closed: the whole answer is here
            return b"".join(chunks)
        chunks.append(chunk)


def _no_answer(pid: int, timeout: float, *, remote: bool) -> str:
    if remote:
        return (
            f"process {pid} did not answer within {timeout:g} s: its main thread ran no "
            "Python code (an event loop with nothing scheduled runs none). Try again, or "
            "call aiothreads.instrumentation.install_snapshot_signal() in it and use --signal"
        )
    return f"process {pid} did not answer within {timeout:g} s"


def _checked(raw: bytes, pid: int) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise InspectionError(f"process {pid} answered something that is not a snapshot") from None
    if answer.get("error") == "not imported":
        raise InspectionError(f"process {pid} has not imported aiothreads")
    if answer.get("format") != FORMAT:
        raise InspectionError(
            f"process {pid} runs aiothreads {answer.get('aiothreads', '?')}, whose snapshot "
            f"this command (aiothreads {__version__}) cannot read: run the target's own "
            "python -m aiothreads.inspect"
        )
    return answer


_COLUMNS: Final = (
    "function",
    "kind",
    "thread",
    "running for",
    "awaited by",
    "waiting on",
    "where",
    "trace id",
)


def render_table(answer: dict[str, Any]) -> str:
    """Return a payload as a table, one row per running call, each with its stacks below."""
    header = (
        f"process {answer.get('pid')}: aiothreads {answer.get('aiothreads')}, "
        f"Python {answer.get('python')}"
    )
    work: list[dict[str, Any]] = answer.get("work") or []
    if not work:
        return f"{header}\nnothing runs in aiothreads' threads"
    rows = [_row(entry) for entry in work]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(_COLUMNS)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=False)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip() for row in rows
    )
    for entry, row in zip(work, rows, strict=False):
        lines.append("")
        lines.append(f"{row[0]} in {row[2]}:")
        lines.extend(f"    {location}" for location in _strings(entry, "stack"))
        for task in _tasks(entry):
            lines.append(f"  awaited by task {task.get('name')}:")
            lines.extend(f"    {location}" for location in _strings(task, "stack"))
        waited = _waited(entry)
        if waited is not None:
            lines.append(f"  waiting on task {waited.get('name')}:")
            lines.extend(f"    {location}" for location in _strings(waited, "stack"))
    return "\n".join(lines)


def _strings(entry: dict[str, Any], key: str) -> list[str]:
    values: list[Any] = entry.get(key) or []
    return [str(value) for value in values]


def _tasks(entry: dict[str, Any]) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = entry.get("awaited_by") or []
    return tasks


def _waited(entry: dict[str, Any]) -> dict[str, Any] | None:
    waited: dict[str, Any] | None = entry.get("waiting_on") or None
    return waited


def _row(entry: dict[str, Any]) -> list[str]:
    stack = _strings(entry, "stack")
    waited = _waited(entry)
    return [
        str(entry.get("function", "?")),
        str(entry.get("kind", "?")),
        str(entry.get("thread_name") or entry.get("executor") or "?"),
        f"{float(entry.get('running_for', 0.0)):.1f} s",
        ", ".join(str(task.get("name")) for task in _tasks(entry)) or "-",
        str(waited.get("name")) if waited is not None else "-",
        str(entry.get("where") or (stack[-1] if stack else "-")),
        str(entry.get("trace_id") or "-"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m aiothreads.inspect",
        description="Show the calls running in a live process's aiothreads threads.",
    )
    parser.add_argument("pid", type=int, help="the process to inspect")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument(
        "--signal",
        metavar="NAME",
        help="ask through this signal (e.g. USR1), which the target installed with "
        "aiothreads.instrumentation.install_snapshot_signal()",
    )
    parser.add_argument(
        "--file", help="the file the target writes on the signal, if not the default"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
    arguments = parser.parse_args(argv)
    signum = None
    if arguments.signal is not None:
        name = arguments.signal.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if not hasattr(signal, name):
            parser.error(f"unknown signal: {arguments.signal}")
        signum = int(getattr(signal, name))
    try:
        answer = inspect_process(
            arguments.pid, signum=signum, file=arguments.file, timeout=arguments.timeout
        )
    except InspectionError as exc:
        print(f"aiothreads.inspect: {exc}", file=sys.stderr)
        return 1
    if answer.get("aiothreads") != __version__:
        print(
            f"aiothreads.inspect: note: the target runs aiothreads {answer.get('aiothreads')}, "
            f"this command {__version__}",
            file=sys.stderr,
        )
    try:
        print(json.dumps(answer, indent=2) if arguments.json else render_table(answer))
    except BrokenPipeError:  # the reader (``| head``) left: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
