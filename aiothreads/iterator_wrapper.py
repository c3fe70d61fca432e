"""Compatibility path for aiothreads 1.x: ``IteratorWrapper`` and the channel.

Subclass [`IteratorWrapper`][aiothreads.IteratorWrapper] and override ``_run()`` to start
``self._in_thread`` on a thread of your own, returning an awaitable that
completes when that thread is done.
"""

from ._channel import ChannelClosed, ChannelTimeout, FromThreadChannel
from ._wrapper import IteratorWrapper, IteratorWrapperSeparate
from .types import BP, P, S, T

__all__ = [
    "BP",
    "ChannelClosed",
    "ChannelTimeout",
    "FromThreadChannel",
    "IteratorWrapper",
    "IteratorWrapperSeparate",
    "P",
    "S",
    "T",
]
