"""Compatibility path for aiothreads 1.x: the threaded-iterable decorators."""

from ._iterable import (
    BoundThreadedIterable,
    ThreadedIterable,
    ThreadedIterableBase,
    ThreadedIterableSeparate,
    threaded_iterable,
    threaded_iterable_separate,
)
from ._wrapper import IteratorWrapper, IteratorWrapperSeparate

__all__ = [
    "BoundThreadedIterable",
    "IteratorWrapper",
    "IteratorWrapperSeparate",
    "ThreadedIterable",
    "ThreadedIterableBase",
    "ThreadedIterableSeparate",
    "threaded_iterable",
    "threaded_iterable_separate",
]
