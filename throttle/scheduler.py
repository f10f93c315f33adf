"""The scheduler: one request's whole flow, in :meth:`Scheduler.submit`.

estimate (the caller, with ``estimate``) -> admit (``admission``, which asks the backend) ->
send (the request's own ``send``: the native client or an adapter) -> read the answer
(``answer``) -> settle the reservation with what the headers say (the backend; a 429 pauses
the key, a billing error opens the ``breaker``) -> decide (``retry``) -> record
(``request_events``). The request and its attempts are the types of ``scheduled``.

Every event is emitted from this module's steps, so what listeners see follows this flow
exactly. The
scheduler also listens to its backend: a breaker opened or reset, or capacity handed back, by
another process sharing the backend reaches this one's queues and breakers.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TypeVar, cast

from throttle.admission import Admission, KeyLoad
from throttle.answer import Answer, read_usage
from throttle.backend import LimitBackend
from throttle.breaker import QuotaBreakers
from throttle.clock import Clock
from throttle.diagnostics import Diagnostics
from throttle.errors import (
    DeadlineExceededError,
    ErrorDetails,
    QuotaExhaustedError,
    RateLimitError,
    ThrottleError,
)
from throttle.events import (
    BackendAvailabilityChanged,
    EventHub,
    QuotaBreakerOpened,
    QuotaBreakerReset,
)
from throttle.keys import BucketKey
from throttle.long_limits import LongLimits
from throttle.pacing import refusal_of
from throttle.request_events import RequestEvents
from throttle.reservation import Cost, Ticket
from throttle.retry import Finish, Retry, RetryPolicy
from throttle.scheduled import Attempts, Outcome, ScheduledRequest, error_of
from throttle.setup_check import SetupCheck, setup_problem

T = TypeVar("T")

_NO_DEADLINE: contextlib.nullcontext[None] = contextlib.nullcontext()
"""Entered instead of a timeout scope by a request without deadline (most): allocates nothing."""


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
        self._backend = backend
        self._breakers = QuotaBreakers()  # this process's view of the backend's breakers
        self._long_limits = LongLimits()  # keys out of a daily limit, until it ends
        self._diagnostics = Diagnostics()
        self._setup = SetupCheck()  # fails every request at once when the URL cannot work
        self._admission = Admission(backend, clock, max_in_flight)
        self._clock = clock
        self._retry = retry
        self._events = events
        self._told = RequestEvents(events, clock)  # each request's events
        self._sequence = itertools.count()
        self._unsubscribe = backend.subscribe(self)

    def __repr__(self) -> str:
        return f"Scheduler({self._admission!r}, {self._breakers!r})"

    async def submit(self, request: ScheduledRequest[T]) -> T:
        """Send ``request`` through the buckets until it succeeds or fails for good.

        Returns:
            The value of the successful answer.

        Raises:
            ThrottleError: the subclass that names what ended the request.
        """
        # Few locals: this frame is most of what a waiting request holds.
        attempts = Attempts(self._clock.now(), next(self._sequence))
        ended_by: BaseException | None = None
        try:
            deadline = request.deadline
            async with _NO_DEADLINE if deadline is None else self._clock.timeout(deadline) as scope:
                while True:
                    # Admission inline, not in a method of its own: one coroutine frame less.
                    queued_at = attempts.started if not attempts.count else self._clock.now()
                    try:
                        ticket = await self._admission.admit(
                            request.key, self._cost(request), request.priority, attempts.seq
                        )
                    except ThrottleError as refused:
                        self._not_admitted(request.key, refused, attempts)
                        raise
                    self._admitted(request, attempts, queued_at)
                    outcome = await self._send(request, ticket)
                    if isinstance(error_of(outcome), RateLimitError):
                        attempts.rate_limited += 1
                    await self._settle(request.key, ticket, outcome, attempts.rate_limited)
                    decision = self._retry.decide(
                        outcome, attempts.count, rate_limited=attempts.rate_limited
                    )
                    self._record(request, attempts, outcome, decision)
                    if isinstance(decision, Finish):
                        return self._finish(decision, attempts.count)
                    await self._pause(request.key.identity, decision.after)
        except TimeoutError as timeout:
            if request.deadline is None or scope is None or not scope.expired():
                ended_by = timeout
                raise
            ended_by = DeadlineExceededError(request.deadline, attempts.count, attempts.last_error)
            raise ended_by from timeout
        except BaseException as error:
            ended_by = error
            if self._setup.ended(error):  # the set-up is wrong: this and every request fail
                self._admission.fail_waiting(lambda _key: True, self._setup.error)
            if self._setup.tripped and setup_problem(error) is not None:
                ended_by = self._setup.error()
                raise ended_by from error
            raise
        finally:
            if isinstance(ended_by, ThrottleError) and request.client_request_id is not None:
                ended_by.client_request_id = request.client_request_id  # as the caller sees it
            self._told.finished(request, attempts, ended_by)

    def _cost(self, request: ScheduledRequest[T]) -> Cost:
        """Return what an attempt draws.

        Raises:
            ThrottleError: the attempt is refused now: out of quota, a wrong set-up, or a
                daily limit holding its key.
        """
        key = request.key
        self._breakers.check(key.identity)
        if self._setup.tripped:
            raise self._setup.error()
        held = self._long_limits.error(key, self._clock.now())
        if held is not None:
            raise held
        return Cost(tokens=request.estimate.total)

    def _not_admitted(self, key: BucketKey, refused: ThrottleError, attempts: Attempts) -> None:
        """Too large, out of quota, closed: the attempt is not sent; say how many were."""
        refused.attempts = attempts.count
        if isinstance(refused, QuotaExhaustedError):  # opened by another process
            self.breaker_changed(key.identity, refused.details)

    def _admitted(self, request: ScheduledRequest[T], attempts: Attempts, queued_at: float) -> None:
        """Count the attempt and tell the listeners how long it waited."""
        attempts.count += 1
        attempts.sent_at = self._clock.now()
        self._told.admitted(request, attempts, queued_at)

    async def _send(self, request: ScheduledRequest[T], ticket: Ticket) -> Outcome[T]:
        """Send once; return the answer, or the error when no answer arrived."""
        try:
            return await request.send()
        except ThrottleError as no_answer:
            return no_answer
        except BaseException:  # cancelled, or a foreign error from user code: not retried
            await self._admission.release(
                request.key, ticket, None, answered=False, succeeded=False
            )
            raise

    async def _settle(
        self, key: BucketKey, ticket: Ticket, outcome: Outcome[T], refusals: int
    ) -> None:
        """Pause the key or stop it as the answer says; then hand the reservation back.

        In that order: a waiter (here, or in another process sharing the backend) woken by
        the hand-back must already find the key cooling down or its breaker open.
        """
        answer = outcome if isinstance(outcome, Answer) else None
        error = error_of(outcome)
        snapshot = answer.snapshot if answer is not None else None
        answered = answer is not None
        if isinstance(error, RateLimitError):
            refusal = refusal_of(error)
            if refusal is not None:
                await self._admission.refused(key, ticket, refusal)  # before the ticket is gone
            pause = self._retry.rate_limit_pause(error, refusals)
            if pause is not None:
                self._diagnostics.cooling_down(key, error, pause)
                await self._admission.cool_down(key, pause)
            elif error.retry_after is not None:  # a long (daily) limit: hold the key till then
                self._hold(key, error)
        elif isinstance(error, QuotaExhaustedError):
            self.breaker_changed(key.identity, error.details)  # here at once, then everywhere
            await self._backend.open_breaker(key.identity, error.details)
        applied = await self._admission.release(
            key, ticket, snapshot, answered=answered, succeeded=answered and error is None
        )
        if applied and snapshot is not None:
            self._diagnostics.limits_applied(key, snapshot)
            self._told.limits_observed(key, snapshot)

    def _hold(self, key: BucketKey, error: RateLimitError) -> None:
        """Send nothing more on ``key`` until ``error``'s delay ends; fail its queue now."""
        now = self._clock.now()
        self._long_limits.hold(key, error, now)
        failed = self._admission.fail_waiting(
            lambda queued: queued == key, lambda: self._long_limits.error(key, now) or error
        )
        self._diagnostics.held(key, error, failed)

    def _record(
        self,
        request: ScheduledRequest[T],
        attempts: Attempts,
        outcome: Outcome[T],
        decision: Retry | Finish[T],
    ) -> None:
        """Keep what failed the attempt, log a retry, and tell the listeners."""
        attempts.last_error = error_of(outcome) or attempts.last_error
        if isinstance(decision, Retry):
            key, after = request.key, decision.after
            self._diagnostics.retrying(key, attempts.count, decision.reason, after)
        self._told.attempt_ended(request, attempts, outcome, decision)

    def _finish(self, decision: Finish[T], attempts: int) -> T:
        if decision.error is None:
            self._setup.succeeded()
            return cast(T, decision.value)
        decision.error.attempts = attempts
        raise decision.error

    async def _pause(self, identity: str, seconds: float) -> None:
        """Back off before the next attempt, cut short when the credential's breaker opens."""
        if seconds > 0:
            await self._clock.wait(self._breakers.opened(identity), seconds)

    def capacity_returned(self, key: BucketKey | None) -> None:
        """See :meth:`throttle.backend.BackendListener.capacity_returned`."""
        self._admission.wake(key)

    def breaker_changed(self, identity: str, details: ErrorDetails | None) -> None:
        """See :meth:`throttle.backend.BackendListener.breaker_changed`."""
        if details is None:
            if self._breakers.is_open(identity):
                self._breakers.reset(identity)
                self._diagnostics.breaker_reset(identity)
                self._events.emit(QuotaBreakerReset(identity))
            return
        if not self._breakers.trip(identity, details):
            return
        self._diagnostics.breaker_opened(identity, details)
        self._events.emit(QuotaBreakerOpened(identity, details.message))
        self._admission.fail_waiting(
            lambda key: key.identity == identity, lambda: self._breakers.error(identity)
        )

    def availability_changed(self, problem: str | None) -> None:
        """See :meth:`throttle.backend.BackendListener.availability_changed`."""
        self._events.emit(BackendAvailabilityChanged(problem))
        self._admission.wake()

    def record_usage(self, key: BucketKey, usage: object, estimated: int | None = None) -> None:
        """Report the ``usage`` a stream carried at its end (after its request finished)."""
        counts = read_usage(usage)
        if counts is not None:
            self._told.usage(key, counts.prompt_tokens, counts.completion_tokens, estimated)

    def quota_error(self, identity: str) -> QuotaExhaustedError | None:
        """Return the error requests on ``identity`` get while its quota breaker is open."""
        return self._breakers.error(identity) if self._breakers.is_open(identity) else None

    async def reset_quota_breaker(self, identity: str | None = None) -> None:
        """Let requests flow again on ``identity`` (or every identity) after billing was fixed.

        The reset reaches every process sharing the backend.
        """
        await self._backend.reset_breaker(identity)
        for name in [identity] if identity is not None else self._breakers.open_identities():
            self.breaker_changed(name, None)

    def load(self) -> dict[BucketKey, KeyLoad]:
        """Return each busy key's attempts queued and in flight."""
        return self._admission.load()

    def waiting(self) -> int:
        """Return how many attempts are queued for admission."""
        return self._admission.waiting()

    async def close(self) -> None:
        """Stop admitting; queued attempts fail with :class:`ClosedError`."""
        self._unsubscribe()
        await self._admission.close()
