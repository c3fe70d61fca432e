"""The future of a threaded call: wakes whoever awaits it in the loop turn the outcome arrives.

A plain ``asyncio.Future`` settled from a loop callback schedules its done
callbacks with ``call_soon``, so the task awaiting it resumes one loop turn
after the outcome reached the loop. ``CallFuture.resolve`` and
``CallFuture.fail`` run the callbacks registered before the outcome
arrived at once, inside the callback that delivers it, which saves that turn
on every threaded call. In every other respect it is an ``asyncio.Future``
(callbacks are stored by asyncio itself, so registering one costs what it
costs on any future); cancelling it, or settling it through
``set_result``/``set_exception``, schedules callbacks as usual.

Every method runs on the loop's thread; worker threads only ever call
``cancelled()`` and ``get_loop()``, and hand outcomes to the loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from ._asyncio_internals import future_callbacks

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Callable

__all__ = ["CallFuture"]

T = TypeVar("T")

_Callback = tuple["Callable[[Any], object]", "contextvars.Context"]

# Called unbound on the hot path: cheaper than super() per call.
_future_set_result: Callable[[asyncio.Future[Any], Any], None] = asyncio.Future.set_result  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
_future_unregister: Callable[[asyncio.Future[Any], Any], int] = asyncio.Future.remove_done_callback  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


class CallFuture(asyncio.Future[T]):
    """An ``asyncio.Future`` whose waiters run as soon as a thread's outcome is delivered."""

    __slots__ = ()

    def resolve(self, result: T) -> None:
        """Settle with ``result`` unless already done, and run the callbacks now."""
        if self.done():
            return
        waiting = self._unregister_callbacks()
        _future_set_result(self, result)
        if waiting:
            self._run(waiting)

    def fail(self, exception: BaseException) -> None:
        """Settle with ``exception`` unless already done, and run the callbacks now.

        ``asyncio.CancelledError`` cancels the future instead.
        """
        if self.done():
            return
        waiting = self._unregister_callbacks()
        if isinstance(exception, asyncio.CancelledError):
            self.cancel()
        else:
            self.set_exception(exception)
        if waiting:
            self._run(waiting)

    def _unregister_callbacks(self) -> tuple[_Callback, ...]:
        """Take the callbacks out of asyncio's hands, so settling schedules none."""
        registered = future_callbacks(self)
        if not registered:
            return ()
        waiting = tuple(registered)
        for fn, _ in waiting:
            _future_unregister(self, fn)
        return waiting

    def _run(self, waiting: tuple[_Callback, ...]) -> None:
        """Run the callbacks here, reporting their errors as the loop would."""
        for index, (fn, context) in enumerate(waiting):
            try:
                context.run(fn, self)
            except (SystemExit, KeyboardInterrupt):
                loop = self.get_loop()
                for later, later_context in waiting[index + 1 :]:
                    loop.call_soon(later, self, context=later_context)
                raise
            except BaseException as exc:
                self.get_loop().call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc, "future": self}
                )
