"""Compatibility path for aiothreads 1.x: running a call on a new thread."""

from ._compat import run_in_new_thread

__all__ = ["run_in_new_thread"]
