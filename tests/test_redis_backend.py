"""Tests of what only a shared backend must do, beyond the contract suite (test_backend.py).

Atomic races, one clock, scripts reloaded, notifications between processes, keys laid out for
a Cluster, a breaker left by an earlier run.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tests.admit_one import admit_one
from tests.heard import Heard
from throttle import AdmissionPolicy, BucketKey, ClosedError, ErrorDetails
from throttle.admission import Admission
from throttle.clock import MonotonicClock
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.redis_backend import RedisBackend
from throttle.redis_backend.backend import SCRIPT
from throttle.redis_backend.key_names import script_keys
from throttle.reservation import Cost, Ticket

KEY = BucketKey("key-shared", "gpt-4o")
POLICY = AdmissionPolicy(reserve_fraction=0.0)
QUOTA = ErrorDetails(429, "insufficient_quota", "insufficient_quota", "You exceeded your quota")
MakeShared = Callable[..., RedisBackend]


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    """Four separate connections, as four worker processes would hold."""
    opened = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
    yield opened
    for client in opened:
        await client.aclose()


@pytest.fixture
async def shared(clients: list[aioredis.Redis]) -> AsyncIterator[MakeShared]:
    """Builds a backend on connection ``i`` (one per worker); closes them all at the end."""
    built: list[RedisBackend] = []

    def make(i: int, **settings: Any) -> RedisBackend:
        settings.setdefault("policy", POLICY)
        built.append(RedisBackend(clients[i], **settings))
        return built[-1]

    yield make
    for backend in built:
        await backend.close()


async def learned(backend: RedisBackend, tokens: float) -> None:
    """End probing with an answer saying `tokens` of a minute's `tokens` are left."""
    probe = await admit_one(backend, KEY, Cost(0))
    assert isinstance(probe, Ticket)
    headers = RateLimitSnapshot(tokens=LimitReading(tokens, tokens))
    assert await backend.complete(KEY, probe, headers, answered=True, succeeded=True)


async def test_concurrent_workers_never_admit_more_than_the_bucket_holds(
    shared: MakeShared,
) -> None:
    """200 admissions raced from 4 connections into a 1,000-token bucket: exactly 100 of 10."""
    backends = [shared(i) for i in range(4)]
    await learned(backends[0], 1000)
    replies = await asyncio.gather(*(admit_one(backends[i % 4], KEY, Cost(10)) for i in range(200)))
    tickets = [reply for reply in replies if isinstance(reply, Ticket)]
    assert len(tickets) == 100
    assert len({ticket.seq for ticket in tickets}) == 100


async def test_time_is_the_servers_for_every_worker(
    shared: MakeShared, clients: list[aioredis.Redis]
) -> None:
    """Without a clock the script reads TIME: tickets carry the server's time, waits are real."""
    server_seconds, micros = await clients[0].time()
    probe = await admit_one(shared(0), KEY, Cost(0))
    assert isinstance(probe, Ticket)
    assert abs(probe.admitted_at - (server_seconds + micros / 1e6)) < 1.0
    await shared(1).cool_down(KEY, 30.0)
    wait = await admit_one(shared(2, recheck_seconds=math.inf), KEY, Cost(0))
    assert isinstance(wait, float)
    assert 29.0 < wait <= 30.0


async def test_a_wait_is_never_reported_longer_than_the_recheck(shared: MakeShared) -> None:
    """A worker waiting on another's probe (a lease of 15 minutes) asks again within 5 s."""
    first, second = shared(0), shared(1)
    probe = await admit_one(first, KEY, Cost(0))
    assert isinstance(probe, Ticket)
    assert await admit_one(second, KEY, Cost(0)) == 5.0
    await first.complete(KEY, probe, None, answered=True, succeeded=True)
    assert isinstance(await admit_one(second, KEY, Cost(0)), Ticket)


async def test_an_answer_in_one_process_wakes_the_waiters_of_the_others(
    shared: MakeShared,
) -> None:
    """The probe's answer is published once; the other process hears it, its sender does not."""
    first, second = shared(0), shared(1)
    heard_first, heard_second = Heard(), Heard()
    first.subscribe(heard_first)
    second.subscribe(heard_second)
    probe = await admit_one(first, KEY, Cost(0))
    assert isinstance(probe, Ticket)
    assert isinstance(await admit_one(second, KEY, Cost(0)), float)
    await first.complete(KEY, probe, None, answered=True, succeeded=True)
    await heard_second.until(lambda: heard_second.capacity == [KEY])
    assert heard_first.capacity == []


async def test_an_answer_that_frees_nothing_is_not_published(
    shared: MakeShared, clients: list[aioredis.Redis]
) -> None:
    """Without headers, once the limits are known, a hand-back changes nothing for waiters."""
    first, second = shared(0), shared(1)
    heard = Heard()
    second.subscribe(heard)
    await admit_one(second, BucketKey("key-shared", "other"), Cost(0))  # at work: listening
    await learned(first, 1000)
    await heard.until(lambda: heard.capacity == [KEY])  # the headers raised the level
    sent = await admit_one(first, KEY, Cost(10))
    assert isinstance(sent, Ticket)
    await first.complete(KEY, sent, None, answered=True, succeeded=True)
    await clients[0].ping()  # a round trip after the publish it would have made
    await asyncio.sleep(0.1)
    assert heard.capacity == [KEY]


async def test_a_breaker_opened_by_one_process_stops_and_resets_in_the_others(
    shared: MakeShared,
) -> None:
    """Opened in one, refused at the next admission and heard in another; reset reaches both."""
    first, second = shared(0), shared(1)
    await learned(first, 1000)
    heard = Heard()
    second.subscribe(heard)
    await admit_one(second, KEY, Cost(10))
    assert await first.open_breaker(KEY.identity, QUOTA)
    assert not await second.open_breaker(KEY.identity, QUOTA)
    await heard.until(lambda: heard.breakers == [(KEY.identity, QUOTA)])
    with pytest.raises(Exception, match="exceeded your quota") as refused:
        await admit_one(second, KEY, Cost(10))
    assert refused.typename == "QuotaExhaustedError"
    await first.reset_breaker(None)
    await heard.until(lambda: heard.breakers[-1] == (KEY.identity, None))
    assert isinstance(await admit_one(second, KEY, Cost(10)), Ticket)


async def test_a_breaker_left_by_an_earlier_run_does_not_stop_a_new_one(
    shared: MakeShared,
) -> None:
    """A process started after it opened (the re-run once billing is fixed) sends again.

    It opens the breaker afresh, for every running process, if billing still fails.
    """
    earlier = shared(0)
    await learned(earlier, 1000)
    assert await earlier.open_breaker(KEY.identity, QUOTA)
    await asyncio.sleep(0.01)
    rerun = shared(1)
    assert isinstance(await admit_one(rerun, KEY, Cost(10)), Ticket)
    assert await rerun.open_breaker(KEY.identity, QUOTA)
    with pytest.raises(Exception, match="exceeded your quota"):
        await admit_one(rerun, KEY, Cost(10))


async def test_leases_renewed_in_flight_outlive_their_first_term(shared: MakeShared) -> None:
    """A renewed probe keeps its place past its first lease; an unrenewed one is reclaimed."""
    short = AdmissionPolicy(reserve_fraction=0.0, lease_seconds=0.3)
    first, second = shared(0, policy=short), shared(1, policy=short)
    probe = await admit_one(first, KEY, Cost(0))
    assert isinstance(probe, Ticket)
    for _ in range(3):
        await asyncio.sleep(0.15)
        await first.renew(KEY, [probe])
    assert isinstance(await admit_one(second, KEY, Cost(0)), float)
    await asyncio.sleep(0.35)
    assert isinstance(await admit_one(second, KEY, Cost(0)), Ticket)


async def test_scripts_are_reloaded_after_the_server_forgot_them(
    shared: MakeShared, clients: list[aioredis.Redis]
) -> None:
    """SCRIPT FLUSH (a restart, a failover) costs one reload, not an error."""
    backend = shared(0)
    await admit_one(backend, KEY, Cost(0))
    await clients[0].script_flush()
    await backend.cool_down(KEY, 1.0)
    assert isinstance(await admit_one(backend, KEY, Cost(0)), float)


async def test_keys_share_a_hash_tag_per_identity_and_expire_when_idle(
    shared: MakeShared, clients: list[aioredis.Redis]
) -> None:
    """A key's state, its leases and its identity's breaker share a slot and an expiry."""
    backend = shared(0, prefix="job7:")
    await admit_one(backend, KEY, Cost(0))
    await backend.open_breaker(KEY.identity, QUOTA)
    names = sorted(
        name.decode() if isinstance(name, bytes) else name
        for name in await clients[0].keys("job7:*")
    )
    assert names == [
        "job7:{key-shared}:gpt-4o:leases",
        "job7:{key-shared}:gpt-4o:state",
        "job7:{key-shared}:quota",
    ]
    ttls = [await clients[0].ttl(name) for name in names]
    assert all(ttl > 86_400 for ttl in ttls), ttls


async def script_calls(client: aioredis.Redis) -> int:
    """How many EVALSHA commands the server has run so far."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_what_many_tasks_ask_at_once_travels_in_one_call(
    shared: MakeShared, clients: list[aioredis.Redis]
) -> None:
    """100 tasks admitting and 100 handing back, at once: a few round trips, not 200."""
    backend = shared(0)
    await learned(backend, 1e6)
    before = await script_calls(clients[0])
    tickets = await asyncio.gather(*(admit_one(backend, KEY, Cost(10)) for _ in range(100)))
    assert all(isinstance(ticket, Ticket) for ticket in tickets)
    assert len({ticket.seq for ticket in tickets if isinstance(ticket, Ticket)}) == 100
    handed_back = await asyncio.gather(
        *(
            backend.complete(KEY, ticket, None, answered=True, succeeded=True)
            for ticket in tickets
            if isinstance(ticket, Ticket)
        )
    )
    assert handed_back == [False] * 100  # no headers to apply
    assert await script_calls(clients[0]) - before <= 4
    assert await clients[0].zcard("throttle:{key-shared}:gpt-4o:leases") == 0


async def test_a_batch_with_an_unknown_operation_changes_nothing(
    clients: list[aioredis.Redis],
) -> None:
    """The script checks every operation before running any: no half-applied batch."""
    script = clients[0].register_script(SCRIPT)
    header = ["", "60", "channel", "key-shared", "process", "0", "0", "1", "30", "3"]
    admit_then_typo = ["admit", "1", "2", "10", "1", "complete!", "1", "0"]
    with pytest.raises(ResponseError, match="unknown operation complete!"):
        await script(
            keys=script_keys("throttle:", "key-shared", ["gpt-4o"]),
            args=[*header, "1", "gpt-4o", *admit_then_typo],
        )
    assert await clients[0].keys("throttle:*") == []


async def test_a_caller_who_leaves_during_a_fast_admission_hands_its_place_back(
    shared: MakeShared,
) -> None:
    """Cancelled while Redis admits it: the ticket goes back at once, not after its lease."""
    backend = shared(0)
    admission = Admission(backend, MonotonicClock(), max_in_flight=10)
    leaving = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 0))  # the key's one probe
    await asyncio.sleep(0)  # its call to Redis is on its way
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    async with asyncio.timeout(POLICY.lease_seconds / 3):  # a leaked probe would hold 30 s
        while True:
            admitted = await admit_one(backend, KEY, Cost(0))
            if isinstance(admitted, Ticket):
                break
            await asyncio.sleep(0.01)
    await admission.close()


async def test_a_request_deciding_while_the_throttle_closes_is_refused_and_handed_back(
    shared: MakeShared,
) -> None:
    """close() during a fast admission on Redis: ClosedError, its place back, no task left."""
    backend = shared(0)
    admission = Admission(backend, MonotonicClock(), max_in_flight=10)
    deciding = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 0))  # the key's one probe
    await asyncio.sleep(0)  # its call to Redis is on its way
    await admission.close()
    with pytest.raises(ClosedError):
        await deciding
    admission_tasks = ("throttle-pump", "throttle-leases")  # the backend's own close later
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith(admission_tasks)] == []
    assert isinstance(await admit_one(backend, KEY, Cost(0)), Ticket)  # the probe came back
