"""Tests for `Throttle.run`: any coroutine under the same buckets, retries and breaker."""

import asyncio
from collections.abc import Mapping

import pytest

from throttle import (
    AdmissionPolicy,
    ErrorDetails,
    Limits,
    QuotaExhaustedError,
    RateLimitError,
    RetryPolicy,
    Throttle,
    TokenEstimate,
)
from throttle.errors import InvalidRequestError
from throttle.testing import ManualClock

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.0, max_backoff=0.0)


async def test_run_returns_the_result() -> None:
    """A coroutine that succeeds returns its value."""

    async def work() -> str:
        return "done"

    async with Throttle() as client:
        assert await client.run(work, model="gpt-4o", tokens=10) == "done"


async def test_run_retries_rate_limits_raised_by_the_function() -> None:
    """A RateLimitError from user code cools the key down and is retried."""
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimitError(ErrorDetails(429, "rate_limit_exceeded"), retry_after=0.01)
        return calls

    async with Throttle(retry=FAST) as client:
        assert await client.run(flaky, model="gpt-4o", tokens=10) == 2


async def test_run_retries_os_errors_as_transport_failures() -> None:
    """Connection errors raised by user code are retried."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("peer reset")
        return "ok"

    async with Throttle(retry=FAST) as client:
        assert await client.run(flaky, model="gpt-4o", tokens=1) == "ok"
    assert calls == 3


async def test_run_propagates_foreign_exceptions_unretried() -> None:
    """A bug in user code (KeyError) is not retried and not wrapped."""
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("oops")

    async with Throttle(retry=FAST) as client:
        with pytest.raises(KeyError):
            await client.run(broken, model="gpt-4o", tokens=1)
    assert calls == 1


async def test_run_quota_error_opens_the_breaker_for_the_identity() -> None:
    """A QuotaExhaustedError from user code stops later calls on that identity."""

    async def broke() -> None:
        raise QuotaExhaustedError(ErrorDetails(429, "insufficient_quota", "insufficient_quota"))

    async def fine() -> str:
        return "never called"

    async with Throttle(retry=FAST) as client:
        with pytest.raises(QuotaExhaustedError):
            await client.run(broke, model="m", tokens=1)
        with pytest.raises(QuotaExhaustedError):
            await client.run(fine, model="m", tokens=1)
        assert await client.run(fine, model="m", tokens=1, identity="other") == "never called"


async def test_run_learns_limits_from_returned_headers() -> None:
    """With `headers_of`, the function's response headers correct the buckets."""

    async def call() -> Mapping[str, str]:
        return {"x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "0"}

    clock = ManualClock()
    async with Throttle(clock=clock) as client:
        await client.run(call, model="m", tokens=100, headers_of=lambda headers: headers)
        second = asyncio.create_task(
            client.run(call, model="m", tokens=100, headers_of=lambda headers: headers)
        )
        await clock.advance(1.0)  # 100 tokens at 100/s, but the 2% reserve needs 1.2 s more
        assert not second.done()
        await clock.advance(1.3)
        await second


async def test_run_paces_by_configured_limits_without_headers() -> None:
    """Without headers, configured limits pace calls on a hand-driven clock."""
    clock = ManualClock()
    started: list[float] = []

    async def work() -> None:
        started.append(clock.now())

    exact = AdmissionPolicy(reserve_fraction=0.0)
    async with Throttle(clock=clock, limits=Limits(rpm=60), admission=exact) as client:
        tasks = [
            asyncio.create_task(client.run(work, model="m", tokens=TokenEstimate(1, 0)))
            for _ in range(3)
        ]
        await clock.advance(0)
        for _ in range(3):
            await clock.advance(1.0)
        await asyncio.gather(*tasks)
    assert started == [0.0, 1.0, 2.0]


async def test_run_refuses_negative_tokens() -> None:
    """A negative token estimate is bad input, named as such."""

    async def work() -> None:
        return None

    async with Throttle() as client:
        with pytest.raises(InvalidRequestError, match="negative"):
            await client.run(work, model="m", tokens=-1)
