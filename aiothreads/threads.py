"""Compatibility path for aiothreads 1.x: the threaded-call decorators."""

import logging

from ._compat import run_in_executor, run_in_new_thread
from ._errors import ThreadPoolException
from ._iterable import threaded_iterable
from ._separate import ThreadedSeparate, threaded_separate
from ._threaded import (
    THREADED_ITERABLE_DEFAULT_MAX_SIZE,
    BoundThreaded,
    Threaded,
    ThreadedBase,
    threaded,
)
from ._wrapper import IteratorWrapper
from .types import BP, EVENT_LOOP

log = logging.getLogger(__name__)
"""The 1.x module logger (aiothreads itself logs on the ``aiothreads`` logger)."""

__all__ = [
    "BP",
    "EVENT_LOOP",
    "THREADED_ITERABLE_DEFAULT_MAX_SIZE",
    "BoundThreaded",
    "IteratorWrapper",
    "ThreadPoolException",
    "Threaded",
    "ThreadedBase",
    "ThreadedSeparate",
    "run_in_executor",
    "run_in_new_thread",
    "threaded",
    "threaded_iterable",
    "threaded_separate",
]
