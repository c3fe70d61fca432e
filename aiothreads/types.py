"""Shared type variables and the ``EVENT_LOOP`` context variable.

``aiothreads.types.EVENT_LOOP`` is a stable import path: code written for
aiothreads 1.1 reads the loop from it inside threads.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = ["BP", "EVENT_LOOP", "F", "FuncType", "GenType", "P", "R", "S", "T"]

P = ParamSpec("P")
"""The parameters of a decorated function."""
BP = ParamSpec("BP")
"""The parameters of a bound method, without ``self``."""
T = TypeVar("T")
"""What a decorated function returns (or its generator yields)."""
S = TypeVar("S", bound=object)
"""The instance a method is bound to."""
F = TypeVar("F", bound=Callable[..., Any])
"""Any callable."""
R = TypeVar("R")
"""Another return type."""

GenType = Generator[T, None, None]
"""The generator type accepted by the threaded-iterable decorators."""

FuncType = Callable[..., Any]
"""Any callable (kept for code written for aiothreads 1.x)."""

EVENT_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop] = contextvars.ContextVar("EVENT_LOOP")
"""The event loop that started the current threaded call.

Every aiothreads decorator sets it in the context the thread runs in, so
[`aiothreads.sync_await`][aiothreads.sync_await] and
[`aiothreads.wait_coroutine`][aiothreads.wait_coroutine] find the loop without being told.
"""
