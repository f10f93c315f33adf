"""Several workers on one key through Redis, against the simulated API, end to end."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from throttle import AdmissionPolicy, Limits, Throttle
from throttle.redis_backend import RedisBackend
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

RPM = 1200  # 20 requests a second, shared by every worker
REQUESTS_PER_WORKER = 30


def body(i: int) -> dict[str, object]:
    """A small chat request."""
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"{i}"}],
    }


async def test_workers_sharing_redis_stay_under_a_limit_the_server_never_tells(
    redis_url: str,
) -> None:
    """Two workers given the true RPM, no headers from the server: together they keep to it."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=RPM, tpm=10_000_000),
        start_level=0.0,
        latency=0.01,
        rate_limit_headers=False,
    )
    connections = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    policy = AdmissionPolicy(reserve_fraction=0.0)
    try:
        async with SimulatedAPI(config) as sim:
            backends = [
                RedisBackend(connection, lambda _key: Limits(rpm=RPM), policy)
                for connection in connections
            ]
            workers = [Throttle(sim.base_url, "sk-shared", backend=b) for b in backends]
            started = time.monotonic()
            try:
                answers = await asyncio.gather(
                    *(
                        worker.post("chat/completions", body(i))
                        for worker in workers
                        for i in range(REQUESTS_PER_WORKER)
                    )
                )
            finally:
                for worker, backend in zip(workers, backends, strict=True):
                    await worker.close()
                    await backend.close()
            elapsed = time.monotonic() - started
            rate_limited = sim.stats.total_429
    finally:
        for connection in connections:
            await connection.aclose()
    assert len(answers) == 2 * REQUESTS_PER_WORKER
    assert rate_limited <= 1  # one worker alone at the same pace would see none either
    # 60 requests at 20/s from an empty bucket (the probe goes first): about 3 s, not 1.5 s.
    assert elapsed >= (2 * REQUESTS_PER_WORKER - 1) / (RPM / 60) * 0.9
