"""The future of a threaded call: wakes whoever awaits it in the loop turn the outcome arrives.

A plain ``asyncio.Future`` settled from a loop callback schedules its done
callbacks with ``call_soon``, so the task awaiting it resumes one loop turn
after the outcome reached the loop. :class:`CallFuture` runs the callbacks
registered before the outcome arrived at once, inside the callback that
delivers it, which saves that turn on every threaded call. In every other
respect it is an ``asyncio.Future``: cancelling it, or settling it through
``set_result``/``set_exception``, schedules callbacks as usual.

Every method runs on the loop's thread; worker threads only ever ask
``cancelled()`` and hand outcomes to the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CallFuture"]

T = TypeVar("T")

_Callback = tuple["Callable[[Any], object]", contextvars.Context]

# Called unbound on the hot path: cheaper than super().set_result() per call.
_future_set_result: Callable[[asyncio.Future[Any], Any], None] = asyncio.Future.set_result  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


class CallFuture(asyncio.Future[T]):
    """An ``asyncio.Future`` whose waiters run as soon as a thread's outcome is delivered."""

    # No __init__ of its own and no slots: a future is made per call, and this
    # keeps making one as cheap as making a plain future. The tuple is replaced,
    # never mutated.
    _waiting: tuple[_Callback, ...] = ()

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        """Call ``fn(future)`` once the future is done (at once if it is already)."""
        if self.done():
            super().add_done_callback(fn, context=context)
            return
        entry = (fn, context if context is not None else contextvars.copy_context())
        self._waiting = (*self._waiting, entry)

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        """Remove every registration of ``fn``; return how many there were."""
        kept = tuple(entry for entry in self._waiting if entry[0] != fn)
        removed = len(self._waiting) - len(kept)
        self._waiting = kept
        return removed + super().remove_done_callback(fn)

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the future and schedule its callbacks; ``False`` if it is done."""
        if not super().cancel(msg):
            return False
        self._schedule_waiting()
        return True

    def set_result(self, result: T, /) -> None:
        """Mark the future done with ``result`` and schedule its callbacks."""
        super().set_result(result)
        self._schedule_waiting()

    def set_exception(self, exception: type | BaseException, /) -> None:
        """Mark the future done with ``exception`` and schedule its callbacks."""
        super().set_exception(exception)
        self._schedule_waiting()

    def resolve(self, result: T) -> None:
        """Settle with ``result`` unless already done, and run the callbacks now."""
        if not self.done():
            _future_set_result(self, result)
            self._run_waiting()

    def fail(self, exception: BaseException) -> None:
        """Settle with ``exception`` unless already done, and run the callbacks now.

        ``asyncio.CancelledError`` cancels the future instead.
        """
        if self.done():
            return
        if isinstance(exception, asyncio.CancelledError):
            super().cancel()
        else:
            super().set_exception(exception)
        self._run_waiting()

    def _schedule_waiting(self) -> None:
        waiting, self._waiting = self._waiting, ()
        loop = self.get_loop()
        for fn, context in waiting:
            loop.call_soon(fn, self, context=context)

    def _run_waiting(self) -> None:
        """Run the callbacks here, reporting their errors as the loop would."""
        waiting, self._waiting = self._waiting, ()
        for index, (fn, context) in enumerate(waiting):
            try:
                context.run(fn, self)
            except (SystemExit, KeyboardInterrupt):
                self._waiting = waiting[index + 1 :]
                self._schedule_waiting()
                raise
            except BaseException as exc:
                self.get_loop().call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc, "future": self}
                )
