"""Compatibility path for aiothreads 1.x: running a call on a new thread."""

import logging

from ._compat import run_in_new_thread
from .types import EVENT_LOOP, F

log = logging.getLogger(__name__)
"""The 1.x module logger (aiothreads itself logs on the ``aiothreads`` logger)."""

__all__ = ["EVENT_LOOP", "F", "run_in_new_thread"]
