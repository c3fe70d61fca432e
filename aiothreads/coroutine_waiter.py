"""Compatibility path for aiothreads 1.x: calling async code from threads."""

from ._bridge import sync_await, sync_wait_coroutine, wait_coroutine
from .types import EVENT_LOOP, T

__all__ = ["EVENT_LOOP", "T", "sync_await", "sync_wait_coroutine", "wait_coroutine"]
