"""Compatibility path for aiothreads 1.x: the threaded-iterable decorators."""

from ._compat import run_in_new_thread
from ._iterable import (
    BoundThreadedIterable,
    ThreadedIterable,
    ThreadedIterableBase,
    ThreadedIterableSeparate,
    threaded_iterable,
    threaded_iterable_separate,
)
from ._wrapper import IteratorWrapper, IteratorWrapperSeparate
from .types import BP, P, S, T

__all__ = [
    "BP",
    "BoundThreadedIterable",
    "IteratorWrapper",
    "IteratorWrapperSeparate",
    "P",
    "S",
    "T",
    "ThreadedIterable",
    "ThreadedIterableBase",
    "ThreadedIterableSeparate",
    "run_in_new_thread",
    "threaded_iterable",
    "threaded_iterable_separate",
]
