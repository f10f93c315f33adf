"""max_queued bounds the requests a Throttle holds: producers wait for room, or hear no."""

from __future__ import annotations

import asyncio

import pytest

from throttle import ConfigurationError, Throttle
from throttle.errors import QueueFullError
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
SLOW = SimulatorConfig(latency=0.05, default_limits=ModelLimits(rpm=10**6, tpm=10**9))


async def test_producers_wait_for_room_beyond_max_queued() -> None:
    """50 posts with max_queued=10: never more than 10 held, and all 50 succeed."""
    most_held = 0
    async with SimulatedAPI(SLOW) as sim, Throttle(sim.base_url, "sk-q", max_queued=10) as t:

        async def watch() -> None:
            nonlocal most_held
            while True:
                held = sum(load.queued + load.in_flight for load in t.load().values())
                most_held = max(most_held, held)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        answers = await asyncio.gather(*(t.post("chat/completions", BODY) for _ in range(50)))
        watcher.cancel()
    assert len(answers) == 50
    assert 0 < most_held <= 10


async def test_a_full_queue_says_so_when_the_caller_will_not_wait() -> None:
    """wait_for_room=False raises QueueFullError at once instead of queueing an 11th."""
    async with SimulatedAPI(SLOW) as sim, Throttle(sim.base_url, "sk-q", max_queued=2) as t:
        held = [asyncio.create_task(t.post("chat/completions", BODY)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="max_queued"):
            await t.post("chat/completions", BODY, wait_for_room=False)
        await asyncio.gather(*held)
        assert await t.post("chat/completions", BODY, wait_for_room=False)


def test_max_queued_must_be_a_positive_whole_number() -> None:
    """0, a fraction or a bool is refused when the options are built."""
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigurationError, match="max_queued"):
            Throttle(max_queued=bad)  # type: ignore[arg-type]
