"""The scheduler: one request's whole flow, each step handed to its own module.

estimate (done by the caller, see ``estimate``) -> admit (``admission``) -> send and classify
(the client layer, see ``classify``) -> learn from headers (``limits`` via the backend) ->
retry or finish (``retry``, ``breaker``) -> record (``events``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar, cast

from tenacity import RetryCallState, RetryError

from throttle.admission import Admission
from throttle.backend import LimitBackend
from throttle.breaker import QuotaBreakers
from throttle.classify import Classification, Verdict
from throttle.clock import Clock
from throttle.errors import (
    DeadlineExceededError,
    QuotaExhaustedError,
    RateLimitError,
    RetryExhaustedError,
    ThrottleError,
)
from throttle.estimate import TokenEstimate
from throttle.events import (
    AttemptFinished,
    EventHub,
    LimitsObserved,
    QuotaBreakerOpened,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
)
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.limits import Cost, Ticket
from throttle.retry import RetryPolicy

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """One attempt's answer, as the client layer read it.

    Attributes:
        classification: what the answer means.
        snapshot: its rate-limit headers, if any.
        value: the decoded result on success.
        status: HTTP status, when there was one.
        request_id: the server's ``x-request-id``.
    """

    classification: Classification
    snapshot: RateLimitSnapshot | None = None
    value: T | None = None
    status: int | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduledRequest(Generic[T]):
    """A request ready for the scheduler.

    Attributes:
        key: the buckets it draws from.
        estimate: its estimated tokens.
        send: sends it once and reads the answer; raises :class:`TransportError` when no
            answer arrived.
        priority: smaller goes first.
        deadline: seconds from submission after which it fails, or ``None``.
    """

    key: BucketKey
    estimate: TokenEstimate
    send: Callable[[], Awaitable[Reply[T]]]
    priority: int = 0
    deadline: float | None = None


@dataclass(slots=True)
class _Progress:
    attempts: int = 0
    last_error: ThrottleError | None = None


class Scheduler:
    """Sends requests as fast as their buckets allow, retrying what can be retried.

    Args:
        backend: where bucket state lives.
        clock: time source.
        retry: the retry policy.
        events: where every event goes.
        max_in_flight: attempts admitted and not yet answered, over all keys.
    """

    def __init__(
        self,
        backend: LimitBackend,
        *,
        clock: Clock,
        retry: RetryPolicy,
        events: EventHub,
        max_in_flight: int,
    ) -> None:
        self.breakers = QuotaBreakers()
        self._admission = Admission(backend, clock, max_in_flight)
        self._clock = clock
        self._retry = retry
        self._events = events
        self._sequence = itertools.count()

    def __repr__(self) -> str:
        return f"Scheduler({self._admission!r}, {self.breakers!r})"

    def waiting(self) -> int:
        """Return how many attempts are queued for admission."""
        return self._admission.waiting()

    async def submit(self, request: ScheduledRequest[T]) -> T:
        """Send ``request`` through the buckets until it succeeds or fails for good.

        Returns:
            The decoded result of the successful attempt.

        Raises:
            ThrottleError: the subclass that names what ended the request.
        """
        started = self._clock.now()
        progress = _Progress()
        error_type: str | None = None
        seq = next(self._sequence)
        retrying = self._retry.retrying(
            sleep=partial(self._backoff, request.key.identity),
            before_sleep=partial(self._on_retry, request.key),
        )
        try:
            async with asyncio.timeout(request.deadline) as scope:
                return await retrying(self._attempt, request, seq, progress)
        except RetryError as exhausted:
            last = exhausted.last_attempt.exception()
            if not isinstance(last, ThrottleError):  # only ThrottleErrors are ever retried
                raise
            error_type = RetryExhaustedError.__name__
            raise RetryExhaustedError(last, progress.attempts) from last
        except TimeoutError as timeout:
            if request.deadline is None or not scope.expired():
                raise
            error = DeadlineExceededError(request.deadline, progress.attempts, progress.last_error)
            error_type = type(error).__name__
            raise error from timeout
        except ThrottleError as error:
            error_type = type(error).__name__
            raise
        finally:
            elapsed = self._clock.now() - started
            self._events.emit(RequestFinished(request.key, progress.attempts, error_type, elapsed))

    async def _attempt(self, request: ScheduledRequest[T], seq: int, progress: _Progress) -> T:
        progress.attempts += 1
        attempt, key = progress.attempts, request.key
        self.breakers.check(key.identity, attempt - 1)
        queued_at = self._clock.now()
        cost = Cost(tokens=request.estimate.total)
        try:
            ticket = await self._admission.admit(key, cost, request.priority, seq)
        except ThrottleError as refused:  # too large, out of quota, closed: never sent this time
            refused.attempts = attempt - 1
            raise
        sent_at = self._clock.now()
        self._events.emit(RequestAdmitted(key, attempt, request.estimate, sent_at - queued_at))
        try:
            reply = await request.send()
        except ThrottleError as error:
            await self._admission.release(key, ticket, None, answered=False, succeeded=False)
            self._events.emit(
                AttemptFinished(
                    key, attempt, Verdict.TRANSPORT_ERROR, None, self._clock.now() - sent_at
                )
            )
            raise self._failed(error, progress) from None
        except BaseException:
            await self._admission.release(key, ticket, None, answered=False, succeeded=False)
            raise
        await self._learn(key, ticket, reply, attempt)
        self._events.emit(
            AttemptFinished(
                key,
                attempt,
                reply.classification.verdict,
                reply.status,
                self._clock.now() - sent_at,
                reply.request_id,
            )
        )
        if reply.classification.error is not None:
            raise self._failed(reply.classification.error, progress)
        return cast(T, reply.value)

    async def _learn(self, key: BucketKey, ticket: Ticket, reply: Reply[T], attempt: int) -> None:
        """Correct the buckets from the answer; cool the key down or open its breaker."""
        verdict, error = reply.classification.verdict, reply.classification.error
        applied = await self._admission.release(
            key, ticket, reply.snapshot, answered=True, succeeded=verdict is Verdict.SUCCESS
        )
        if applied and reply.snapshot is not None:
            self._events.emit(LimitsObserved(key, reply.snapshot))
        if isinstance(error, RateLimitError):
            delay = error.retry_after
            if delay is None:  # no delay and no headers: back off as for a server error
                delay = min(
                    self._retry.initial_backoff * 2 ** (attempt - 1), self._retry.max_backoff
                )
            if delay <= self._retry.max_server_wait:
                await self._admission.cool_down(key, self._clock.now() + delay)
        elif isinstance(error, QuotaExhaustedError):
            self._open_breaker(key.identity, error)

    def _open_breaker(self, identity: str, error: QuotaExhaustedError) -> None:
        if not self.breakers.trip(identity, error.details):
            return
        self._events.emit(QuotaBreakerOpened(identity, error.server_message))
        self._admission.fail_waiting(
            lambda key: key.identity == identity, lambda: self.breakers.error(identity)
        )

    def reset_quota_breaker(self, identity: str | None = None) -> None:
        """Let requests flow again on ``identity`` (or every identity) after billing was fixed."""
        self.breakers.reset(identity)

    def _failed(self, error: ThrottleError, progress: _Progress) -> ThrottleError:
        error.attempts = progress.attempts
        progress.last_error = error
        return error

    async def _backoff(self, identity: str, seconds: float) -> None:
        """Sleep between attempts, cut short when the credential's breaker opens."""
        await self._clock.wait(self.breakers.opened(identity), seconds)

    def _on_retry(self, key: BucketKey, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.upcoming_sleep
        self._events.emit(RetryScheduled(key, state.attempt_number, delay, type(error).__name__))

    async def close(self) -> None:
        """Stop admitting; queued attempts fail with :class:`ClosedError`."""
        await self._admission.close()
