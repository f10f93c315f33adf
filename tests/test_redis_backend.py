"""Tests of what only a shared backend must do: atomic races, one clock, scripts reloaded."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from throttle import AdmissionPolicy, BucketKey
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.redis_backend import RedisBackend
from throttle.reservation import Cost, Ticket

KEY = BucketKey("key-shared", "gpt-4o")
POLICY = AdmissionPolicy(reserve_fraction=0.0)


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    """Four separate connections, as four worker processes would hold."""
    opened = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
    yield opened
    for client in opened:
        await client.aclose()


async def learned(backend: RedisBackend, tokens: float) -> None:
    """End probing with an answer saying `tokens` of a minute's `tokens` are left."""
    probe = await backend.try_admit(KEY, Cost(0))
    assert isinstance(probe, Ticket)
    headers = RateLimitSnapshot(tokens=LimitReading(tokens, tokens))
    assert await backend.complete(KEY, probe, headers, answered=True, succeeded=True)


async def test_concurrent_workers_never_admit_more_than_the_bucket_holds(
    clients: list[aioredis.Redis],
) -> None:
    """200 admissions raced from 4 connections into a 1,000-token bucket: exactly 100 of 10."""
    backends = [RedisBackend(client, policy=POLICY) for client in clients]
    await learned(backends[0], 1000)
    replies = await asyncio.gather(*(backends[i % 4].try_admit(KEY, Cost(10)) for i in range(200)))
    tickets = [reply for reply in replies if isinstance(reply, Ticket)]
    assert len(tickets) == 100
    assert len({ticket.seq for ticket in tickets}) == 100


async def test_time_is_the_servers_for_every_worker(clients: list[aioredis.Redis]) -> None:
    """Without a clock the script reads TIME: tickets carry the server's time, waits are real."""
    backend = RedisBackend(clients[0], policy=POLICY)
    server_seconds, micros = await clients[0].time()
    probe = await backend.try_admit(KEY, Cost(0))
    assert isinstance(probe, Ticket)
    assert abs(probe.admitted_at - (server_seconds + micros / 1e6)) < 1.0
    await RedisBackend(clients[1], policy=POLICY).cool_down(KEY, 30.0)
    exact = RedisBackend(clients[2], policy=POLICY, recheck_seconds=math.inf)
    wait = await exact.try_admit(KEY, Cost(0))
    assert isinstance(wait, float)
    assert 29.0 < wait <= 30.0


async def test_waits_are_rechecked_so_other_workers_answers_are_seen(
    clients: list[aioredis.Redis],
) -> None:
    """A worker waiting on another's probe asks again within recheck_seconds, not the lease."""
    first, second = (RedisBackend(client, policy=POLICY) for client in clients[:2])
    probe = await first.try_admit(KEY, Cost(0))
    assert isinstance(probe, Ticket)
    assert await second.try_admit(KEY, Cost(0)) == 0.25
    await first.complete(KEY, probe, None, answered=True, succeeded=True)
    assert isinstance(await second.try_admit(KEY, Cost(0)), Ticket)


async def test_scripts_are_reloaded_after_the_server_forgot_them(
    clients: list[aioredis.Redis],
) -> None:
    """SCRIPT FLUSH (a restart, a failover) costs one reload, not an error."""
    backend = RedisBackend(clients[0], policy=POLICY)
    await backend.try_admit(KEY, Cost(0))
    await clients[0].script_flush()
    await backend.cool_down(KEY, 1.0)
    assert isinstance(await backend.try_admit(KEY, Cost(0)), float)


async def test_keys_share_a_hash_tag_and_expire_when_idle(clients: list[aioredis.Redis]) -> None:
    """A key's state and leases live in one Cluster slot and carry an expiry."""
    backend = RedisBackend(clients[0], policy=POLICY, prefix="job7:")
    await backend.try_admit(KEY, Cost(0))
    names = sorted(
        name.decode() if isinstance(name, bytes) else name
        for name in await clients[0].keys("job7:*")
    )
    assert names == ["job7:{key-shared/gpt-4o}:leases", "job7:{key-shared/gpt-4o}:state"]
    ttls = [await clients[0].ttl(name) for name in names]
    assert all(ttl > 86_400 for ttl in ttls), ttls
