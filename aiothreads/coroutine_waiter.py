"""Compatibility path for aiothreads 1.x: calling async code from threads."""

from ._bridge import sync_await, sync_wait_coroutine, wait_coroutine

__all__ = ["sync_await", "sync_wait_coroutine", "wait_coroutine"]
