"""The signal that makes a process write its snapshot, installed and delivered in this process.

``python -m aiothreads.inspect`` sends it to other processes (``test_inspect.py``); here
the handler runs in the test's own process, so that what it does is seen directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiothreads import _inspection
from aiothreads.instrumentation import install_snapshot_signal
from tests.waiting import PATIENCE


@contextlib.contextmanager
def handlers_restored(*signums: int) -> Iterator[None]:
    """Put back the handlers of ``signums`` as they were, whatever the test installed."""
    previous = {signum: signal.getsignal(signum) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def deliver(signum: int) -> None:
    """Raise ``signum`` here, and wait for the snapshot its handler started writing."""
    signal.raise_signal(signum)  # its handler has run when this returns
    for writer in threading.enumerate():  # started by then; it may have ended already
        if writer.name == "aiothreads-snapshot":
            writer.join(10)


def test_the_signal_handler_writes_the_snapshot_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "snapshot.json"
    with handlers_restored(signal.SIGUSR2):
        assert install_snapshot_signal(signal.SIGUSR2, target) == str(target)
        deliver(signal.SIGUSR2)
    answer = json.loads(target.read_text())
    assert answer["pid"] == os.getpid()
    assert answer["work"] == []


@pytest.mark.parametrize(
    ("signum", "error", "message"),
    [
        ("USR1", TypeError, "signum must be a signal number, got str"),
        (True, TypeError, "signum must be a signal number, got bool"),
        (int(signal.SIGKILL), ValueError, f"signal {int(signal.SIGKILL)} cannot be caught"),
        (int(signal.SIGSTOP), ValueError, f"signal {int(signal.SIGSTOP)} cannot be caught"),
    ],
    ids=["name", "bool", "SIGKILL", "SIGSTOP"],
)
def test_bad_signals_are_refused_early(
    signum: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}"):
        install_snapshot_signal(signum)  # type: ignore[arg-type]


def test_the_signal_can_only_be_installed_from_the_main_thread() -> None:
    raised: list[BaseException] = []

    def install() -> None:
        try:
            install_snapshot_signal(signal.SIGUSR2)
        except ValueError as exc:
            raised.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(10)
    assert [str(exc) for exc in raised] == [
        "install_snapshot_signal() must be called from the main thread "
        "(Python runs signal handlers there)"
    ]


def test_the_snapshot_signal_is_sigusr1_the_one_the_command_sends_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    target = tmp_path / "snapshot.json"
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGUSR1, signal.SIGUSR2)}
    with handlers_restored(signal.SIGUSR1, signal.SIGUSR2):
        assert install_snapshot_signal(file=target) == str(target)
        assert signal.getsignal(signal.SIGUSR2) == previous[signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR1) != previous[signal.SIGUSR1]
        deliver(signal.SIGUSR1)
    assert json.loads(target.read_text())["pid"] == os.getpid()


def test_a_second_install_replaces_the_first_and_writes_where_it_says(tmp_path: Path) -> None:
    # As with signal.signal, the latest install is the one in force.
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    with handlers_restored(signal.SIGUSR2):
        assert install_snapshot_signal(signal.SIGUSR2, first) == str(first)
        assert install_snapshot_signal(signal.SIGUSR2, second) == str(second)
        deliver(signal.SIGUSR2)
    assert json.loads(second.read_text())["pid"] == os.getpid()
    assert not first.exists()


def test_the_snapshot_is_written_from_a_daemon_thread_so_a_stalled_reader_never_holds_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that holds the FIFO open and stops reading blocks the writer for good.

    The writer is a daemon thread, so such a reader never keeps the process
    from exiting.
    """
    written: list[tuple[str, str, bool]] = []
    done = threading.Event()

    def write_payload(path: str) -> None:
        thread = threading.current_thread()
        written.append((path, thread.name, thread.daemon))
        done.set()

    monkeypatch.setattr(_inspection, "write_payload", write_payload)
    target = str(tmp_path / "snapshot.json")
    _inspection.write_payload_soon(target)
    assert done.wait(PATIENCE)
    for writer in threading.enumerate():
        if writer.name == "aiothreads-snapshot":
            writer.join(10)
    assert written == [(target, "aiothreads-snapshot", True)]


def test_without_a_file_the_snapshot_goes_where_the_command_looks_by_default() -> None:
    with handlers_restored(signal.SIGUSR2):
        assert install_snapshot_signal(signal.SIGUSR2) == _inspection.default_path(os.getpid())
