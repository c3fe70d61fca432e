"""Generators shared by the tests of what a stream shows while it runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from aiothreads import IteratorWrapper, threaded_iterable


def one_ahead_of_its_consumer(full: threading.Event) -> IteratorWrapper[[], int]:
    """Return an endless stream of 1, 2, 3...; ``full`` is set as it makes the third item.

    With room for one item, a consumer that took the first and went away
    leaves the second in the channel and the producer blocked putting the third.
    """

    @threaded_iterable(max_size=1, name="endless")
    def endless() -> Iterator[int]:
        number = 0
        while True:
            number += 1
            if number == 3:
                full.set()
            yield number

    return endless()
