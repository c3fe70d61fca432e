"""The quick start: a blocking call, a blocking generator and a call back into the loop."""

import asyncio
import time

from aiothreads import sync_await, threaded, threaded_iterable


@threaded
def blocking_io(n: int) -> int:
    time.sleep(0.01)  # a blocking driver call
    return n * n


async def log(message: str) -> None:
    print(message)


@threaded_iterable(max_size=8)
def rows(count: int):
    for row in range(count):
        sync_await(log, f"producing row {row}")
        yield row


async def main() -> None:
    squares = await asyncio.gather(*(blocking_io(n) for n in range(5)))
    print("squares:", squares)
    async for row in rows(100):
        if row == 3:
            break  # stops the generator thread
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
