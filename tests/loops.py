"""Event loops the tests run beside their own: one in a thread of its own, and a coroutine."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Generator


@contextlib.contextmanager
def loop_in_thread(
    factory: Callable[[], asyncio.AbstractEventLoop], *, debug: bool = False
) -> Generator[asyncio.AbstractEventLoop, None, None]:
    """Run a loop made by ``factory`` in a thread of its own; stop and close it on exit.

    With ``debug``, touching it from another thread raises, as it must not happen.
    """
    loop = factory()
    loop.set_debug(debug)
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def cancels_itself() -> None:
    """Cancel the task running this coroutine, then let the cancellation arrive."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)
