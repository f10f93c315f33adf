"""Tests every bucket backend must pass, through the LimitBackend interface only.

Parametrized over the backends: the in-memory one today; a shared one joins the same suite.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from throttle import (
    AdmissionPolicy,
    BucketKey,
    LimitBackend,
    Limits,
    MemoryBackend,
    RequestTooLargeError,
)
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.reservation import Cost, Ticket

KEY = BucketKey("key-a", "gpt-4o")
OTHER = BucketKey("key-a", "gpt-4o-mini")
MakeBackend = Callable[[Callable[[BucketKey], Limits]], LimitBackend]


def memory(limits_for: Callable[[BucketKey], Limits]) -> LimitBackend:
    """The in-process backend, without a reserve so the arithmetic reads plainly."""
    return MemoryBackend(limits_for, AdmissionPolicy(reserve_fraction=0.0))


@pytest.fixture(params=[memory], ids=["memory"])
def make_backend(request: pytest.FixtureRequest) -> MakeBackend:
    """Each backend in turn."""
    maker: MakeBackend = request.param
    return maker


def unknown(_key: BucketKey) -> Limits:
    """No limits configured: learn them all."""
    return Limits()


async def ticket(backend: LimitBackend, key: BucketKey, cost: Cost, now: float) -> Ticket:
    """Admit, insisting it was admitted."""
    result = await backend.try_admit(key, cost, now)
    assert isinstance(result, Ticket), result
    return result


def tokens_left(limit: float, remaining: float) -> RateLimitSnapshot:
    """An answer's headers about the tokens bucket."""
    return RateLimitSnapshot(tokens=LimitReading(limit, remaining))


async def test_unknown_limits_admit_one_probe_until_an_answer(make_backend: MakeBackend) -> None:
    """Before any headers a key lets one request through and waits for its answer."""
    backend = make_backend(unknown)
    probe = await ticket(backend, KEY, Cost(10), 0.0)
    assert await backend.try_admit(KEY, Cost(10), 0.0) == math.inf
    assert await backend.complete(
        KEY, probe, tokens_left(1000, 990), 0.1, answered=True, succeeded=True
    )
    await ticket(backend, KEY, Cost(10), 0.1)


async def test_headers_set_the_level_and_admission_waits_for_refill(
    make_backend: MakeBackend,
) -> None:
    """A bucket of 600 tokens/min with 0 left needs 10 s for 100 tokens."""
    backend = make_backend(unknown)
    probe = await ticket(backend, KEY, Cost(0), 0.0)
    await backend.complete(KEY, probe, tokens_left(600, 0), 0.0, answered=True, succeeded=True)
    wait = await backend.try_admit(KEY, Cost(100), 0.0)
    assert wait == pytest.approx(10.0)
    await ticket(backend, KEY, Cost(100), 10.0)


async def test_an_older_answer_does_not_undo_a_newer_one(make_backend: MakeBackend) -> None:
    """Answers out of order: the headers of an earlier-admitted request are not applied."""
    backend = make_backend(unknown)
    probe = await ticket(backend, KEY, Cost(0), 0.0)
    await backend.complete(KEY, probe, tokens_left(6000, 6000), 0.0, answered=True, succeeded=True)
    early = await ticket(backend, KEY, Cost(10), 0.0)
    late = await ticket(backend, KEY, Cost(10), 0.0)
    snapshot = tokens_left(6000, 5000)
    assert await backend.complete(KEY, late, snapshot, 0.1, answered=True, succeeded=True)
    assert not await backend.complete(KEY, early, snapshot, 0.2, answered=True, succeeded=True)


async def test_configured_limits_pace_a_server_without_headers(make_backend: MakeBackend) -> None:
    """A headerless success turns the key blind: the configured 60 RPM, starting empty."""
    backend = make_backend(lambda _key: Limits(rpm=60))
    probe = await ticket(backend, KEY, Cost(0), 0.0)
    await backend.complete(KEY, probe, None, 0.0, answered=True, succeeded=True)
    assert await backend.try_admit(KEY, Cost(0), 0.0) == pytest.approx(1.0)
    await ticket(backend, KEY, Cost(0), 1.0)


async def test_cool_down_holds_the_key_until_it_ends(make_backend: MakeBackend) -> None:
    """After cool_down(until=5) the key answers the seconds left, then admits."""
    backend = make_backend(unknown)
    await backend.cool_down(KEY, 5.0)
    assert await backend.try_admit(KEY, Cost(0), 2.0) == pytest.approx(3.0)
    await ticket(backend, KEY, Cost(0), 5.0)


async def test_request_larger_than_the_whole_bucket_is_refused(make_backend: MakeBackend) -> None:
    """Waiting can never admit 2,000 tokens into a 1,000-token bucket."""
    backend = make_backend(unknown)
    probe = await ticket(backend, KEY, Cost(0), 0.0)
    await backend.complete(KEY, probe, tokens_left(1000, 1000), 0.0, answered=True, succeeded=True)
    with pytest.raises(RequestTooLargeError) as caught:
        await backend.try_admit(KEY, Cost(2000), 0.0)
    assert caught.value.limit == 1000


async def test_keys_are_independent(make_backend: MakeBackend) -> None:
    """A drained or cooling key does not hold another model's key."""
    backend = make_backend(unknown)
    await backend.cool_down(KEY, 60.0)
    await ticket(backend, OTHER, Cost(10), 0.0)
