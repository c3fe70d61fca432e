"""Every check of user input, in one place: a clear, early error instead of a later hang.

Each function returns the value it checked (converted where that is all it
takes), or raises ``TypeError`` for the wrong kind of value and ``ValueError``
for a value out of range, with a message that names the argument.
"""

from __future__ import annotations

import inspect
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from ._remote import runs_elsewhere

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "check_blocking_callable",
    "check_executor",
    "check_flag",
    "check_idle_timeout",
    "check_name",
    "check_size",
    "check_thread_executor",
    "check_timeout",
]


def check_size(name: str, value: object) -> int:
    """Return ``value`` if it is a non-negative ``int``, else raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (0 means unbounded), got {value}")
    return value


def check_timeout(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a non-negative number, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0 seconds (0 means no timeout), got {value}")
    return float(value)


def check_idle_timeout(value: object) -> float | None:
    """Return a pool's ``idle_timeout``: ``None``, or positive seconds as a float."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"idle_timeout must be a number of seconds or None, got {type(value).__name__}"
        )
    if not value > 0:  # also rejects NaN
        raise ValueError(f"idle_timeout must be > 0 seconds (None keeps idle workers), got {value}")
    return float(value)


def check_flag(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_name(value: object) -> str | None:
    """Return a ``name=`` argument: ``None``, or a non-empty string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"name must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("name must not be empty")
    return value


def check_executor(executor: object) -> Executor | None:
    """Return ``executor`` if it is ``None`` or an ``Executor``, else raise ``TypeError``."""
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
        )
    return executor


def check_thread_executor(executor: object) -> Executor | None:
    """Like ``check_executor``, and reject executors whose work leaves the process.

    A generator hands its items over in this process (see ``aiothreads._remote``
    for which executors count as running work here).

    Raises:
        TypeError: ``executor`` is not an ``Executor``, or runs work in other processes.
    """
    checked = check_executor(executor)
    if checked is not None and runs_elsewhere(checked):
        name = type(checked).__name__
        raise TypeError(
            f"{name} runs work in other processes, but a threaded generator hands its "
            "items over in this process: iterate on a thread executor (leave executor= "
            "out), or make the remote part a @threaded function that returns a list (or "
            "a batch per call) and iterate over that here; if your executor runs work in "
            f"this process's threads, declare it with aiothreads.runs_in_threads({name})"
        )
    return checked


def check_blocking_callable(decorator: str, func: Callable[..., Any]) -> None:
    """Reject coroutine and async generator functions with a clear ``TypeError``."""
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"@{decorator} runs blocking code in threads, but {name} is an async function; "
            "await it directly instead"
        )
