"""Tests for the scheduler's decisions, on a hand-driven clock: no HTTP, no real sleeping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from throttle import (
    AdmissionPolicy,
    APIStatusError,
    AttemptFinished,
    BucketKey,
    DeadlineExceededError,
    Event,
    LimitsObserved,
    MemoryBackend,
    QuotaBreakerOpened,
    QuotaExhaustedError,
    RateLimitError,
    RequestAdmitted,
    RequestFinished,
    RetryExhaustedError,
    RetryPolicy,
    RetryScheduled,
    ServerError,
    TokenEstimate,
    TransportError,
    UsageReported,
    Verdict,
)
from throttle.answer import Answer, read_answer
from throttle.events import EventHub
from throttle.scheduled import ScheduledRequest
from throttle.scheduler import Scheduler
from throttle.testing import ManualClock

KEY = BucketKey("key-a", "gpt-4o")
LIMITS = {"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "5999"}
RATE_LIMITED = {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}
NO_QUOTA = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}

Step = Answer[Any] | BaseException | asyncio.Event


def answer(status: int, body: object = None, **headers: str) -> Answer[Any]:
    """A real answer, read by the one answer reader from a status, headers and JSON body."""
    raw = json.dumps({"ok": True} if body is None else body).encode()
    return read_answer(status, {**LIMITS, **headers}, raw)


class Server:
    """Plays one scripted outcome per attempt: an answer, an exception, or a wait."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.sent = 0

    async def send(self) -> Answer[Any]:
        """One attempt."""
        self.sent += 1
        step = self.steps.pop(0) if self.steps else answer(200)
        while isinstance(step, asyncio.Event):  # hold the answer until the test sets it
            await step.wait()
            step = self.steps.pop(0) if self.steps else answer(200)
        if isinstance(step, BaseException):
            raise step
        return step


class Rig:
    """A scheduler over the in-memory backend, recording every event."""

    def __init__(self, retry: RetryPolicy | None = None, probes: int = 64) -> None:
        self.clock = ManualClock()
        self.events: list[Event] = []
        hub = EventHub()
        hub.subscribe(self.events.append)
        self.scheduler = Scheduler(
            MemoryBackend(
                policy=AdmissionPolicy(reserve_fraction=0.0, probe_concurrency=probes),
                clock=self.clock,
            ),
            clock=self.clock,
            retry=retry or RetryPolicy(),
            events=hub,
            max_in_flight=64,
        )

    def submit(
        self,
        send: Callable[[], Awaitable[Answer[Any]]],
        key: BucketKey = KEY,
        deadline: float | None = None,
    ) -> asyncio.Task[Any]:
        """Submit a request as a task."""
        request = ScheduledRequest(key, TokenEstimate(10, 0), send, deadline=deadline)
        return asyncio.create_task(self.scheduler.submit(request))

    def of(self, kind: type[Any]) -> list[Any]:
        """The events of one type, in order."""
        return [event for event in self.events if isinstance(event, kind)]


async def test_success_returns_the_value_and_records_the_flow_in_order() -> None:
    """One successful attempt: admitted, limits learned, answered, usage, finished, in order."""
    rig = Rig()
    usage = {"usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    task = rig.submit(Server(answer(200, usage)).send)
    await rig.clock.advance(0)
    assert await task == usage
    kinds = [type(event) for event in rig.events]
    assert kinds == [
        RequestAdmitted,
        LimitsObserved,
        AttemptFinished,
        UsageReported,
        RequestFinished,
    ]
    assert rig.of(AttemptFinished)[0].verdict is Verdict.SUCCESS
    assert rig.of(RequestFinished)[0].error_type is None
    assert rig.of(RequestFinished)[0].attempts == 1


async def test_server_error_is_retried_after_the_jittered_backoff() -> None:
    """A 500 waits its backoff (a first retry: up to 0.5 s of jitter), then succeeds."""
    rig, server = Rig(), Server(answer(500))
    task = rig.submit(server.send)
    await rig.clock.advance(0)
    (retry,) = rig.of(RetryScheduled)
    assert 0 < retry.delay_seconds <= 0.5
    assert retry.reason == "ServerError"
    await rig.clock.advance(retry.delay_seconds * 0.99)
    assert server.sent == 1
    await rig.clock.advance(retry.delay_seconds * 0.02)
    assert await task == {"ok": True}
    assert server.sent == 2


async def test_a_server_error_holds_only_its_own_request() -> None:
    """While a request backs off after a 503, the next one on its key is sent and answered."""
    rig, failing, other = Rig(), Server(answer(503, **{"retry-after": "5"})), Server()
    first = rig.submit(failing.send)
    await rig.clock.advance(0)
    second = rig.submit(other.send)
    await rig.clock.advance(0)
    assert await second == {"ok": True}
    assert not first.done()
    await rig.clock.advance(5)
    assert await first == {"ok": True}
    assert failing.sent == 2


async def test_client_error_finishes_at_once_without_a_retry() -> None:
    """A 400 is the caller's mistake: one attempt, the error, no retry."""
    rig = Rig()
    task = rig.submit(Server(answer(400, {"error": {"message": "bad"}})).send)
    await rig.clock.advance(0)
    with pytest.raises(APIStatusError) as caught:
        await task
    assert caught.value.status == 400
    assert caught.value.attempts == 1
    assert rig.of(RetryScheduled) == []
    assert rig.of(RequestFinished)[0].error_type == "APIStatusError"


async def test_rate_limit_pauses_the_whole_key_for_the_server_delay() -> None:
    """After a 429 with retry-after-ms 2000 nothing on the key is sent for 2 s, then both go."""
    rig = Rig()
    limited = Server(answer(429, RATE_LIMITED, **{"retry-after-ms": "2000"}))
    first = rig.submit(limited.send)
    await rig.clock.advance(0)
    other = Server()
    second = rig.submit(other.send)
    await rig.clock.advance(1.9)
    assert (limited.sent, other.sent) == (1, 0)
    assert rig.of(RetryScheduled)[0].delay_seconds == 0  # the key's pause holds it, not a sleep
    await rig.clock.advance(0.2)
    assert await first == {"ok": True}
    assert await second == {"ok": True}
    assert (limited.sent, other.sent) == (2, 1)


async def test_a_daily_limit_fails_the_request_and_holds_the_key_until_it_ends() -> None:
    """An hour's delay fails the request, and its key's queued and new ones unsent, till then.

    Another key goes on meanwhile; after the hour the key sends again.
    """
    rig = Rig(probes=1)  # one in flight per key: the second request is queued behind the first
    gate = asyncio.Event()
    limited = Server(gate, answer(429, RATE_LIMITED, **{"retry-after": "3600"}))
    first = rig.submit(limited.send)
    queued = rig.submit(limited.send)
    await rig.clock.advance(0)
    gate.set()
    for task in (first, queued):
        with pytest.raises(RateLimitError):
            await task
    assert limited.sent == 1  # the queued one was never sent
    later = rig.submit(limited.send)
    elsewhere = rig.submit(Server().send, key=BucketKey("key-a", "gpt-4o-mini"))
    await rig.clock.advance(0)
    with pytest.raises(RateLimitError) as caught:
        await later
    assert caught.value.attempts == 0
    assert caught.value.retry_after == pytest.approx(3600)
    assert await elsewhere == {"ok": True}
    await rig.clock.advance(3600)
    assert await rig.submit(limited.send) == {"ok": True}


async def test_transport_failure_is_retried_and_recorded_as_one() -> None:
    """No answer (a dropped connection) counts as a transport error and is retried."""
    rig = Rig(RetryPolicy(initial_backoff=0.0, max_backoff=0.0))
    task = rig.submit(Server(TransportError("reset"), answer(200)).send)
    await rig.clock.advance(0)
    assert await task == {"ok": True}
    verdicts = [event.verdict for event in rig.of(AttemptFinished)]
    assert verdicts == [Verdict.TRANSPORT_ERROR, Verdict.SUCCESS]
    assert rig.of(AttemptFinished)[0].status is None


async def test_retry_budget_ends_with_the_last_error_and_the_attempt_count() -> None:
    """Three 500s with max_attempts=3 give RetryExhaustedError naming the last one."""
    rig = Rig(RetryPolicy(max_attempts=3, initial_backoff=0.0, max_backoff=0.0))
    task = rig.submit(Server(answer(500), answer(500), answer(500)).send)
    await rig.clock.advance(0)
    with pytest.raises(RetryExhaustedError) as caught:
        await task
    assert caught.value.attempts == 3
    assert isinstance(caught.value.last_error, ServerError)
    assert len(rig.of(RetryScheduled)) == 2


async def test_rate_limits_never_use_up_the_attempt_budget() -> None:
    """Ten 429s then a success with max_attempts=2: the request succeeds (a 429 says wait)."""
    rig = Rig(RetryPolicy(max_attempts=2))
    limited = answer(429, RATE_LIMITED, **{"retry-after-ms": "100"})
    server = Server(*[limited] * 10, answer(200))
    task = rig.submit(server.send)
    for _ in range(11):
        await rig.clock.advance(0.1)
    assert await task == {"ok": True}
    assert server.sent == 11


async def test_server_errors_between_rate_limits_still_count_against_the_budget() -> None:
    """429, 500, 429, 500 with max_attempts=2: the second 500 ends it after 4 attempts."""
    rig = Rig(RetryPolicy(max_attempts=2, initial_backoff=0.0, max_backoff=0.0))
    limited = answer(429, RATE_LIMITED, **{"retry-after-ms": "100"})
    task = rig.submit(Server(limited, answer(500), limited, answer(500)).send)
    for _ in range(4):
        await rig.clock.advance(0.1)
    with pytest.raises(RetryExhaustedError) as caught:
        await task
    assert caught.value.attempts == 4
    assert isinstance(caught.value.last_error, ServerError)


async def test_a_deadline_ends_a_request_that_keeps_meeting_rate_limits() -> None:
    """429s forever: the deadline, not the budget, ends it, naming the last 429."""
    rig = Rig(RetryPolicy(max_attempts=2))
    limited = answer(429, RATE_LIMITED, **{"retry-after-ms": "500"})
    task = rig.submit(Server(*[limited] * 100).send, deadline=5.0)
    for _ in range(60):
        await rig.clock.advance(0.1)
    with pytest.raises(DeadlineExceededError) as caught:
        await task
    assert caught.value.attempts > 2
    assert isinstance(caught.value.last_error, RateLimitError)


async def test_quota_error_opens_the_breaker_and_fails_queued_requests_unsent() -> None:
    """insufficient_quota fails the queued request on the identity; another identity goes on."""
    rig = Rig(probes=1)  # limits unknown: one request in flight per key, the rest queue
    release = asyncio.Event()
    first = rig.submit(Server(release, answer(429, NO_QUOTA)).send)
    await rig.clock.advance(0)
    queued_server = Server()
    queued = rig.submit(queued_server.send)
    elsewhere = rig.submit(Server().send, key=BucketKey("key-b", "gpt-4o"))
    await rig.clock.advance(0)
    release.set()
    await rig.clock.advance(0)
    with pytest.raises(QuotaExhaustedError):
        await first
    with pytest.raises(QuotaExhaustedError) as refused:
        await queued
    assert refused.value.attempts == 0
    assert queued_server.sent == 0
    assert await elsewhere == {"ok": True}
    assert [event.identity for event in rig.of(QuotaBreakerOpened)] == ["key-a"]
    assert rig.scheduler.quota_error("key-a") is not None
    assert rig.scheduler.quota_error("key-b") is None


async def test_backoff_is_cut_short_when_the_breaker_opens() -> None:
    """A request sleeping 8 s in backoff fails as soon as its identity runs out of quota."""
    rig = Rig(RetryPolicy(initial_backoff=8.0, max_backoff=8.0))
    sleeper = rig.submit(Server(answer(500)).send)
    await rig.clock.advance(0)
    billing = rig.submit(Server(answer(429, NO_QUOTA)).send)
    await rig.clock.advance(0)
    with pytest.raises(QuotaExhaustedError):
        await billing
    with pytest.raises(QuotaExhaustedError) as caught:
        await sleeper
    assert caught.value.attempts == 1
    assert rig.clock.now() < 8.0


async def test_deadline_ends_a_request_in_backoff_with_its_last_error() -> None:
    """A deadline of 3 s passes during an 8 s backoff: DeadlineExceededError, last error kept."""
    rig = Rig()
    task = rig.submit(Server(answer(503, **{"retry-after": "8"})).send, deadline=3.0)
    await rig.clock.advance(0)
    await rig.clock.advance(2.9)
    assert not task.done()
    await rig.clock.advance(0.2)
    with pytest.raises(DeadlineExceededError) as caught:
        await task
    assert caught.value.attempts == 1
    assert isinstance(caught.value.last_error, ServerError)
    assert rig.of(RequestFinished)[0].error_type == "DeadlineExceededError"


async def test_cancelled_request_hands_its_reservation_back() -> None:
    """Cancelling a request in flight frees its place: the next one on the key is sent."""
    rig = Rig(probes=1)
    task = rig.submit(Server(asyncio.Event()).send)  # never answers
    await rig.clock.advance(0)
    waiting = Server()
    queued = rig.submit(waiting.send)
    await rig.clock.advance(0)
    assert waiting.sent == 0
    task.cancel()
    await rig.clock.advance(0)
    assert await queued == {"ok": True}
    assert rig.of(RequestFinished)[0].error_type == "CancelledError"


async def test_foreign_exception_from_send_propagates_unretried() -> None:
    """An exception that is not throttle's (a bug in user code) is not retried."""
    rig = Rig()
    server = Server(KeyError("boom"))
    task = rig.submit(server.send)
    await rig.clock.advance(0)
    with pytest.raises(KeyError):
        await task
    assert server.sent == 1
    assert rig.of(RequestFinished)[0].error_type == "KeyError"
