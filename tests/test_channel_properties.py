"""Properties of FromThreadChannel under random interleavings (hypothesis).

Producers put ``(producer, sequence)`` pairs from threads, consumers get them
with random timeouts, and the channel is closed either once every producer is
done or early, at a random point, by a consumer. Whatever the interleaving:
every item a ``put()`` accepted is delivered exactly once, in order per
producer; a ``put()`` after close raises ``ChannelClosed``; a ``get()`` on a
drained, closed channel raises ``ChannelClosed``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiothreads import ChannelClosed, ChannelTimeout, FromThreadChannel
from tests.conftest import LOOP_FACTORIES

EXAMPLES = 60


@dataclass(frozen=True)
class Plan:
    producers: list[int]
    maxsize: int
    consumers: int
    timeouts: list[float]
    close_after: int | None


plans = st.builds(
    Plan,
    producers=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    maxsize=st.integers(0, 6),
    consumers=st.integers(1, 3),
    timeouts=st.lists(st.sampled_from([0.0, 0.0005, 0.002, 0.05]), min_size=1, max_size=5),
    close_after=st.one_of(st.none(), st.integers(0, 60)),
)


async def exercise(plan: Plan) -> tuple[dict[int, list[int]], list[tuple[int, int]]]:
    channel: FromThreadChannel[tuple[int, int]] = FromThreadChannel(maxsize=plan.maxsize)
    accepted: dict[int, list[int]] = defaultdict(list)
    received: list[tuple[int, int]] = []
    loop = asyncio.get_running_loop()

    def produce(producer: int, count: int) -> None:
        for sequence in range(count):
            try:
                channel.put((producer, sequence))
            except ChannelClosed:
                return
            accepted[producer].append(sequence)

    async def consume(number: int) -> None:
        attempt = 0
        while True:
            timeout = plan.timeouts[(number + attempt) % len(plan.timeouts)]
            attempt += 1
            try:
                received.append(await channel.get(timeout=timeout))
            except ChannelTimeout:
                continue
            except ChannelClosed:
                return
            if plan.close_after is not None and len(received) >= plan.close_after:
                channel.close()

    producers = [
        threading.Thread(target=produce, args=(producer, count))
        for producer, count in enumerate(plan.producers)
    ]
    for thread in producers:
        thread.start()
    consumers = [asyncio.create_task(consume(number)) for number in range(plan.consumers)]

    def join_producers() -> None:
        for thread in producers:
            thread.join()

    if plan.close_after is not None and plan.close_after == 0:
        channel.close()
    await loop.run_in_executor(None, join_producers)
    channel.close()
    await asyncio.gather(*consumers)
    with pytest.raises(ChannelClosed):
        channel.put((-1, -1))
    with pytest.raises(ChannelClosed):
        await channel.get(timeout=0.01)
    return dict(accepted), received


@pytest.mark.parametrize("loop_kind", sorted(LOOP_FACTORIES))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=plans)
def test_nothing_lost_duplicated_or_reordered(loop_kind: str, plan: Plan) -> None:
    loop = LOOP_FACTORIES[loop_kind]()
    try:
        accepted, received = loop.run_until_complete(exercise(plan))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    assert len(received) == len(set(received)), "an item was delivered twice"
    by_producer: dict[int, list[int]] = defaultdict(list)
    for producer, sequence in received:
        by_producer[producer].append(sequence)
    for producer, sequences in by_producer.items():
        assert sequences == sorted(sequences), f"producer {producer} reordered"
    assert dict(by_producer) == {p: s for p, s in accepted.items() if s}, "an item was lost"
    if plan.close_after is None:
        assert sum(plan.producers) == len(received)
