"""FromThreadChannel: ordering, backpressure, close, timeouts, bad input."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from aiothreads import ChannelClosed, ChannelTimeout, FromThreadChannel
from aiothreads._channel import EMPTY, _Empty
from aiothreads._outcomes import StopReason
from tests.waiting import turns_until


def start_thread(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)  # type: ignore[arg-type]
    thread.start()
    return thread


async def join(thread: threading.Thread) -> None:
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
    assert not thread.is_alive()


async def full_channel_of_this_loop() -> FromThreadChannel[int]:
    """A channel of one item, made on the running loop (so bound to it), holding ``1``."""
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=1)
    channel.put(1)
    return channel


async def stream_numbers(channel: FromThreadChannel[int], count: int) -> list[int]:
    """Put ``range(count)`` from a thread that then closes; return what ``get()`` gave."""

    def produce() -> None:
        with channel:
            for number in range(count):
                channel.put(number)

    thread = start_thread(produce)
    received = []
    with pytest.raises(ChannelClosed):
        while True:
            received.append(await channel.get())
    await join(thread)
    return received


@pytest.mark.asyncio
async def test_items_arrive_in_order_then_closed() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=3)

    assert await stream_numbers(channel, 50) == list(range(50))


@pytest.mark.asyncio
async def test_await_the_channel_is_get() -> None:
    channel: FromThreadChannel[str] = FromThreadChannel()
    channel.put("x")
    assert await channel == "x"


@pytest.mark.asyncio
async def test_put_blocks_while_full_until_an_item_is_taken() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=2)
    about_to_block = threading.Event()
    third_put_done = threading.Event()

    def produce() -> None:
        channel.put(1)
        channel.put(2)
        about_to_block.set()
        channel.put(3)
        third_put_done.set()

    thread = start_thread(produce)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, about_to_block.wait, 5)
    assert not await loop.run_in_executor(None, third_put_done.wait, 0.05)
    assert channel.qsize() == 2
    assert await channel.get() == 1
    assert await loop.run_in_executor(None, third_put_done.wait, 5)
    assert [await channel.get(), await channel.get()] == [2, 3]
    await join(thread)


class _CountingCondition(threading.Condition):
    """Counts wake-ups; ``notify_all`` goes through ``notify``."""

    notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


@pytest.mark.asyncio
async def test_a_blocked_producer_is_woken_once_per_wait_not_once_per_item() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=8)
    condition = _CountingCondition(channel._lock)
    channel._not_full = condition
    waits: list[float] = []
    channel.on_blocked = waits.append

    assert await stream_numbers(channel, 2000) == list(range(2000))
    closing = 1
    assert condition.notified <= len(waits) + closing


@pytest.mark.asyncio
async def test_close_wakes_a_blocked_producer() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=1)
    outcome: list[BaseException] = []
    about_to_block = threading.Event()

    def produce() -> None:
        channel.put(1)
        about_to_block.set()
        try:
            channel.put(2)
        except ChannelClosed as exc:
            outcome.append(exc)

    thread = start_thread(produce)
    assert await asyncio.get_running_loop().run_in_executor(None, about_to_block.wait, 5)
    channel.close()
    await join(thread)
    assert len(outcome) == 1


@pytest.mark.asyncio
async def test_close_wakes_every_blocked_producer() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=1)
    channel.put(0)
    refused: list[BaseException] = []

    def produce(item: int) -> None:
        try:
            channel.put(item)
        except ChannelClosed as exc:
            refused.append(exc)

    producers = [start_thread(produce, item) for item in (1, 2)]
    await turns_until(
        lambda: len(channel._not_full._waiters) == 2,  # type: ignore[attr-defined]
        "both producers wait for room",
    )
    channel.close()
    loop = asyncio.get_running_loop()
    for producer in producers:
        await loop.run_in_executor(None, producer.join, 5)
    stuck = [producer for producer in producers if producer.is_alive()]
    with channel._lock:  # a producer the close left waiting must not outlive the test
        channel._not_full.notify_all()
    for producer in stuck:
        await join(producer)
    assert not stuck, "a producer still waits for room in the closed channel"
    assert len(refused) == 2


@pytest.mark.asyncio
async def test_close_keeps_buffered_items_for_the_consumer() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    channel.put(1)
    channel.put(2)
    channel.close()
    assert channel.is_closed
    assert [await channel.get(), await channel.get()] == [1, 2]
    with pytest.raises(ChannelClosed, match=r"^the channel is closed and drained$"):
        await channel.get()
    with pytest.raises(ChannelClosed, match=r"^put\(\) on a closed channel$"):
        channel.put(3)


def test_a_put_after_the_consumer_saw_its_loop_close_says_so() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    channel.abandon(StopReason.LOOP_CLOSED)
    with pytest.raises(
        ChannelClosed, match=r"^the event loop closed: put\(\) on a closed channel$"
    ):
        channel.put(1)
    channel_left: FromThreadChannel[int] = FromThreadChannel()
    channel_left.abandon(StopReason.BREAK)
    with pytest.raises(ChannelClosed, match=r"^put\(\) on a closed channel$"):
        channel_left.put(1)


def test_the_first_close_of_a_channel_decides_its_reason() -> None:
    left: FromThreadChannel[int] = FromThreadChannel()
    left.abandon(StopReason.BREAK)
    left.loop_closed()  # the loop shuts down after the consumer left
    assert left.close_reason is StopReason.BREAK
    with pytest.raises(ChannelClosed, match=r"^put\(\) on a closed channel$"):
        left.put(1)
    loop_gone: FromThreadChannel[int] = FromThreadChannel()
    loop_gone.loop_closed()
    loop_gone.close()  # the producer's ``with channel:`` ends after the loop closed
    assert loop_gone.close_reason is StopReason.LOOP_CLOSED
    with pytest.raises(
        ChannelClosed, match=r"^the event loop closed: put\(\) on a closed channel$"
    ):
        loop_gone.put(1)
    finished: FromThreadChannel[int] = FromThreadChannel()
    finished.close()  # the producer was done before the consumer left
    finished.abandon(StopReason.BREAK)
    assert finished.close_reason is None


@pytest.mark.asyncio
async def test_close_wakes_a_waiting_getter() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    getter = asyncio.create_task(channel.get())
    await turns_until(lambda: len(channel._getters) == 1, "the getter waits")
    start_thread(channel.close).join(5)
    with pytest.raises(ChannelClosed):
        await getter


@pytest.mark.asyncio
async def test_get_timeout() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(timeout=10.0)
    with pytest.raises(ChannelTimeout, match=r"^no item arrived within the timeout$"):
        await channel.get(timeout=0.01)
    assert issubclass(ChannelTimeout, asyncio.TimeoutError)


@pytest.mark.asyncio
async def test_a_getter_that_timed_out_leaves_the_next_item_to_the_next_getter() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    with pytest.raises(ChannelTimeout):
        await channel.get(timeout=0.01)
    assert not channel._getters  # it left the queue: no wake-up goes to it
    second = asyncio.create_task(channel.get())
    await turns_until(lambda: len(channel._getters) == 1, "only the second getter waits")
    thread = start_thread(channel.put, 5)
    assert await asyncio.wait_for(second, 5) == 5
    await join(thread)


@pytest.mark.asyncio
async def test_default_timeout_applies() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(timeout=0.01)
    with pytest.raises(ChannelTimeout):
        await channel.get()


@pytest.mark.asyncio
async def test_a_zero_timeout_waits_for_ever_despite_the_channels_default() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(timeout=0.01)
    patient = asyncio.create_task(channel.get(timeout=0))
    await turns_until(lambda: len(channel._getters) == 1, "the patient getter waits")
    with pytest.raises(ChannelTimeout):  # ends after the default would have ended the first
        await channel.get(timeout=0.05)
    assert not patient.done()
    thread = start_thread(channel.put, 5)
    assert await asyncio.wait_for(patient, 5) == 5
    await join(thread)


@pytest.mark.asyncio
async def test_an_item_put_while_a_getter_waits_with_a_timeout_is_delivered() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    getter = asyncio.create_task(channel.get(timeout=5))
    await turns_until(lambda: len(channel._getters) == 1, "the getter waits")
    thread = start_thread(channel.put, 5)
    assert await getter == 5
    await join(thread)


@pytest.mark.asyncio
async def test_item_arriving_before_the_timeout_is_delivered() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    thread = start_thread(channel.put, 5)
    assert await channel.get(timeout=5) == 5
    await join(thread)


@pytest.mark.asyncio
async def test_cancelled_getter_leaves_items_for_the_next() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    first = asyncio.create_task(channel.get())
    second = asyncio.create_task(channel.get())
    await turns_until(lambda: len(channel._getters) == 2, "both getters wait")
    first.cancel()
    thread = start_thread(channel.put, 9)
    assert await second == 9
    with pytest.raises(asyncio.CancelledError):
        await first
    await join(thread)


@pytest.mark.asyncio
async def test_several_getters_each_get_one_item() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    getters = [asyncio.create_task(channel.get()) for _ in range(5)]
    await turns_until(lambda: len(channel._getters) == 5, "every getter waits")

    def produce() -> None:
        for number in range(5):
            channel.put(number)

    thread = start_thread(produce)
    assert sorted(await asyncio.gather(*getters)) == [0, 1, 2, 3, 4]
    await join(thread)


@pytest.mark.asyncio
async def test_put_that_would_block_the_loop_thread_fails_at_once() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=1)
    channel.put(1)
    with pytest.raises(RuntimeError, match="event loop's own thread"):
        channel.put(2)


@pytest.mark.asyncio
async def test_channel_is_bound_to_one_loop() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    channel.put(1)

    def other_loop() -> None:
        async def get() -> int:
            return await channel.get()

        with pytest.raises(
            RuntimeError, match=r"^this FromThreadChannel is bound to another event loop$"
        ):
            asyncio.run(get())

    thread = start_thread(other_loop)
    await join(thread)


def test_an_item_for_a_getter_whose_loop_was_closed_by_hand_stays_in_the_channel(
    loop_factory: object,
) -> None:
    loop = loop_factory()  # type: ignore[operator]
    channel: FromThreadChannel[int] = FromThreadChannel()

    async def start_waiting() -> Coroutine[Any, Any, int]:
        getting = channel.get()
        getting.send(None)  # queues a getter and suspends on it
        return getting

    getting = loop.run_until_complete(start_waiting())
    loop.close()  # by hand: the getter is still queued, and nobody is left to wake
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            channel.put(1)
        except BaseException as exc:  # whatever it is, the test reports it
            errors.append(exc)

    try:
        start_thread(produce).join(5)
    finally:
        getting.close()
    assert errors == []
    assert channel.qsize() == 1


def test_a_channel_made_outside_its_loop_releases_a_blocked_producer_when_the_loop_shuts_down(
    loop_factory: object,
) -> None:
    """Bound by its first get(), it is released by the loop's shutdown as one made on the loop."""
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=1)
    released: list[str] = []

    def produce() -> None:
        try:
            for item in range(3):
                channel.put(item)  # the third waits for room for ever: nobody takes it
        except ChannelClosed as exc:
            released.append(str(exc))

    async def take_one_then_leave() -> int:
        first = await channel.get()
        await turns_until(lambda: channel.waiting_for_room, "the producer blocking")
        return first

    loop = loop_factory()  # type: ignore[operator]
    thread = start_thread(produce)
    try:
        assert loop.run_until_complete(take_one_then_leave()) == 0
        loop.run_until_complete(loop.shutdown_asyncgens())  # as asyncio.run() does
        thread.join(5)
        assert not thread.is_alive(), "the producer stayed blocked after the loop shut down"
        assert released == ["the event loop closed: put() on a closed channel"]
        assert channel.close_reason is StopReason.LOOP_CLOSED
    finally:
        channel.close()
        thread.join(5)
        loop.close()


@pytest.mark.watchdog  # the application's executor: nothing announces the close
def test_loop_closing_releases_a_blocked_producer(
    loop_factory: object,
) -> None:
    loop = loop_factory()  # type: ignore[operator]
    channel = loop.run_until_complete(full_channel_of_this_loop())
    released: list[BaseException] = []
    about_to_block = threading.Event()

    def produce() -> None:
        about_to_block.set()
        try:
            channel.put(2)
        except ChannelClosed as exc:
            released.append(exc)

    thread = start_thread(produce)
    assert about_to_block.wait(5)
    loop.close()
    thread.join(5)  # a hang guard: the backstop's poll is what ends the wait
    assert not thread.is_alive(), "the producer stayed blocked after the loop closed"
    assert len(released) == 1
    assert str(released[0]) == "the event loop closed while put() waited for room"
    assert channel.close_reason is StopReason.LOOP_CLOSED


@pytest.mark.watchdog  # polls every few milliseconds: a live loop must not look closed
@pytest.mark.asyncio
async def test_a_producer_waiting_through_many_polls_of_a_live_loop_still_delivers() -> None:
    channel = await full_channel_of_this_loop()
    polls = threading.Semaphore(0)
    channel.on_blocked = lambda _: polls.release()  # at the end of each wait for room
    thread = start_thread(channel.put, 2)
    for _ in range(3):  # three waits ended with no room made: three polls of the loop
        assert await asyncio.to_thread(polls.acquire, True, 5)
    assert [await channel.get(), await channel.get()] == [1, 2]
    await join(thread)


def test_room_made_just_before_the_loop_closes_by_hand_still_takes_the_item(
    loop_factory: object,
) -> None:
    loop = loop_factory()  # type: ignore[operator]
    channel = loop.run_until_complete(full_channel_of_this_loop())
    woken, proceed = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            channel.put(2)
        except BaseException as exc:  # whatever it is, the test reports it
            errors.append(exc)

    def woken_for_room(_: float) -> None:
        woken.set()
        assert proceed.wait(5)  # holds the producer between its wake-up and its check

    channel.on_blocked = woken_for_room
    thread = start_thread(produce)
    loop.run_until_complete(turns_until(lambda: channel.waiting_for_room, "the producer blocking"))
    assert loop.run_until_complete(channel.get()) == 1  # room: the producer is woken
    assert woken.wait(5)
    loop.close()
    proceed.set()
    thread.join(5)
    assert errors == []
    assert channel.take_nowait() == 2


@pytest.mark.asyncio
async def test_an_item_arriving_while_a_getter_queues_is_taken_at_once() -> None:
    class PutWhileTheGetterLooks(FromThreadChannel[int]):
        def take_nowait(self) -> int | _Empty:
            taken = super().take_nowait()
            if taken is EMPTY and not self.items_put:  # the first look finds nothing...
                start_thread(self.put, 7).join(5)  # ...and an item arrives right after it
            return taken

    channel = PutWhileTheGetterLooks()
    assert await asyncio.wait_for(channel.get(), 5) == 7


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"maxsize": -1}, ValueError),
        ({"maxsize": 1.5}, TypeError),
        ({"maxsize": True}, TypeError),
        ({"timeout": -0.1}, ValueError),
        ({"timeout": float("nan")}, ValueError),
        ({"timeout": "1"}, TypeError),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], error: type[Exception]) -> None:
    (argument,) = kwargs
    with pytest.raises(error, match=rf"^{argument} must be "):
        FromThreadChannel(**kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_bad_get_timeout_is_rejected() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel()
    with pytest.raises(
        ValueError, match=r"^timeout must be >= 0 seconds \(0 means no timeout\), got -1$"
    ):
        await channel.get(timeout=-1)


def test_a_new_channel_is_open_and_nobody_waits_for_room() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=1)
    assert channel.is_closed is False
    assert channel.waiting_for_room is False
    assert channel.close_reason is None


def test_repr_and_size() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=4)
    channel.put(1)
    assert len(channel) == 1
    assert channel.maxsize == 4
    assert "open" in repr(channel)


@pytest.mark.asyncio
async def test_repr_shows_state_size_and_maxsize() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=2)
    channel.put(1)
    assert repr(channel) == "<FromThreadChannel open size=1 maxsize=2>"
    channel.close()
    assert repr(channel) == "<FromThreadChannel closed size=1 maxsize=2>"


@pytest.mark.asyncio
async def test_a_full_channel_refuses_to_block_the_loop_thread() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=1)
    channel.put(1)
    assert await channel.get() == 1  # the channel now knows its loop
    channel.put(2)
    with pytest.raises(
        RuntimeError,
        match=r"^FromThreadChannel.put\(\) would block the event loop's own thread: "
        r"the channel is full; call put\(\) from a worker thread$",
    ):
        channel.put(3)
