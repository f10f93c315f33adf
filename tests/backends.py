"""The backends every contract test runs on, and the small steps those tests take.

``make_backend`` (a fixture: import it into a test module) builds the in-memory backend, then
a Redis one on a real redis-server, each on a hand-driven clock.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from tests.admit_one import admit_one
from throttle import (
    AdmissionPolicy,
    BucketKey,
    ErrorDetails,
    LimitBackend,
    Limits,
    MemoryBackend,
)
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.redis_backend import RedisBackend
from throttle.reservation import Cost, Ticket
from throttle.testing import ManualClock

KEY = BucketKey("key-a", "gpt-4o")
OTHER = BucketKey("key-a", "gpt-4o-mini")
POLICY = AdmissionPolicy(reserve_fraction=0.0, lease_seconds=30.0)
QUOTA = ErrorDetails(429, "insufficient_quota", "insufficient_quota", "You exceeded your quota")


class MakeBackend:
    """Builds backends of one kind; :meth:`peer` is another client of the same state.

    Args:
        client: the Redis connection, or ``None`` for the in-memory backend.
    """

    def __init__(self, client: aioredis.Redis | None) -> None:
        self.client = client
        self.built: list[LimitBackend] = []
        self._made: dict[int, tuple[Callable[[BucketKey], Limits], ManualClock]] = {}

    def __call__(
        self, limits_for: Callable[[BucketKey], Limits], clock: ManualClock
    ) -> LimitBackend:
        """A backend without a reserve, so the arithmetic reads plainly."""
        backend: LimitBackend
        if self.client is None:
            backend = MemoryBackend(limits_for, POLICY, clock)
        else:
            backend = RedisBackend(
                self.client, limits_for, POLICY, clock=clock, recheck_seconds=math.inf
            )
        self.built.append(backend)
        self._made[id(backend)] = (limits_for, clock)
        return backend

    def peer(self, backend: LimitBackend) -> LimitBackend:
        """Another worker on ``backend``'s state.

        The same object in memory; a second RedisBackend (its own subscription) on Redis.
        """
        if self.client is None:
            return backend
        return self(*self._made[id(backend)])


@pytest.fixture(params=["memory", "redis"])
async def make_backend(request: pytest.FixtureRequest) -> AsyncIterator[MakeBackend]:
    """Each backend in turn; the Redis one on a real redis-server, emptied for the test."""
    if request.param == "memory":
        yield MakeBackend(None)
        return
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    make = MakeBackend(client)
    yield make
    for backend in make.built:
        await backend.close()
    await client.aclose()


def unknown(_key: BucketKey) -> Limits:
    """No limits configured: learn them all."""
    return Limits()


async def ticket(backend: LimitBackend, key: BucketKey, cost: Cost) -> Ticket:
    """Admit now, insisting it was admitted."""
    result = await admit_one(backend, key, cost)
    assert isinstance(result, Ticket), result
    return result


def tokens_left(limit: float, remaining: float) -> RateLimitSnapshot:
    """An answer's headers about the tokens bucket."""
    return RateLimitSnapshot(tokens=LimitReading(limit, remaining))


async def answered(backend: LimitBackend, sent: Ticket, headers: RateLimitSnapshot | None) -> bool:
    """Hand back a ticket whose request succeeded; return whether its headers were applied."""
    return await backend.complete(KEY, sent, headers, answered=True, succeeded=True)
