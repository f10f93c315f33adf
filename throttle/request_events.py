"""What listeners hear about each request: the events the scheduler's steps emit.

Each event is built only when someone listens (most clients have no listener, and an event
object per step is a good part of a request's cost). The order is the request's flow:
admitted, then per attempt its end (and usage, and a retry if one follows), then finished.
"""

from __future__ import annotations

from typing import TypeVar

from throttle.answer import Answer
from throttle.classify import Verdict
from throttle.clock import Clock
from throttle.errors import RateLimitError
from throttle.events import (
    AttemptFinished,
    EventHub,
    LimitsObserved,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
    UsageReported,
)
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.outcomes import outcome_of, rate_limit_kind
from throttle.retry import Finish, Retry
from throttle.scheduled import Attempts, Outcome, ScheduledRequest

T = TypeVar("T")


class RequestEvents:
    """Emits a request's events to ``hub``, timed by ``clock``.

    Args:
        hub: where the events go.
        clock: time source of waits and latencies.
    """

    def __init__(self, hub: EventHub, clock: Clock) -> None:
        self._hub = hub
        self._clock = clock

    def __repr__(self) -> str:
        return f"RequestEvents({self._hub!r})"

    def admitted(self, request: ScheduledRequest[T], attempts: Attempts, queued_at: float) -> None:
        """The attempt was admitted after waiting since ``queued_at``."""
        if self._hub.listened:
            waited = attempts.sent_at - queued_at
            self._hub.emit(RequestAdmitted(request.key, attempts.count, request.estimate, waited))

    def attempt_ended(
        self,
        request: ScheduledRequest[T],
        attempts: Attempts,
        outcome: Outcome[T],
        decision: Retry | Finish[T],
    ) -> None:
        """The attempt came to ``outcome``: its answer, its usage, and a retry if one follows."""
        if not self._hub.listened:
            return
        key, latency, count = request.key, self._clock.now() - attempts.sent_at, attempts.count
        if isinstance(outcome, Answer):
            failure = outcome.error
            limit = rate_limit_kind(failure) if isinstance(failure, RateLimitError) else None
            verdict, status = outcome.classification.verdict, outcome.status
            self._hub.emit(
                AttemptFinished(key, count, verdict, status, latency, outcome.request_id, limit)
            )
            if outcome.usage is not None:
                usage = outcome.usage
                prompt, completion = usage.prompt_tokens, usage.completion_tokens
                self.usage(key, prompt, completion, request.estimate.prompt)
        else:
            self._hub.emit(AttemptFinished(key, count, Verdict.TRANSPORT_ERROR, None, latency))
        if isinstance(decision, Retry):
            self._hub.emit(RetryScheduled(key, count, decision.after, decision.reason))

    def usage(
        self, key: BucketKey, prompt_tokens: int, completion_tokens: int, estimated: int | None
    ) -> None:
        """An answer (or a stream at its end) reported the tokens it was charged.

        ``estimated`` is the request's estimated prompt tokens, when known.
        """
        if self._hub.listened:
            self._hub.emit(UsageReported(key, prompt_tokens, completion_tokens, estimated))

    def limits_observed(self, key: BucketKey, snapshot: RateLimitSnapshot) -> None:
        """An answer's rate-limit headers corrected ``key``'s buckets."""
        if self._hub.listened:
            self._hub.emit(LimitsObserved(key, snapshot))

    def finished(
        self, request: ScheduledRequest[T], attempts: Attempts, ended_by: BaseException | None
    ) -> None:
        """The request ended: with its value (``ended_by`` is ``None``) or an error."""
        if self._hub.listened:
            self._hub.emit(
                RequestFinished(
                    request.key,
                    attempts.count,
                    None if ended_by is None else type(ended_by).__name__,
                    self._clock.now() - attempts.started,
                    outcome_of(ended_by),
                    request.client_request_id,
                )
            )
