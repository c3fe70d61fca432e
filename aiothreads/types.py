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

__all__ = ["EVENT_LOOP", "GenType", "P", "T"]

P = ParamSpec("P")
T = TypeVar("T")

GenType = Generator[T, None, None]
"""The generator type accepted by the threaded-iterable decorators."""

FuncType = Callable[..., Any]

EVENT_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop] = contextvars.ContextVar("EVENT_LOOP")
"""The event loop that started the current threaded call.

Every aiothreads decorator sets it in the context the thread runs in, so
:func:`aiothreads.sync_await` and :func:`aiothreads.wait_coroutine` find the
loop without being told.
"""
