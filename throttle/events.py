"""Everything the scheduler sees, as events, through one narrow hook.

Metrics, logs and progress displays subscribe with :meth:`EventHub.subscribe`; the scheduler
never knows who listens. A listener that raises is logged and never breaks a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from throttle.classify import Verdict
from throttle.estimate import TokenEstimate
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.outcomes import RequestOutcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestAdmitted:
    """An attempt left the queue: the buckets had room for it.

    Attributes:
        key: the bucket it was charged to.
        attempt: 1 for the first try.
        estimate: the tokens it was charged (``estimate.exact`` is False on fallback counts).
        waited_seconds: time spent queued for this attempt.
    """

    key: BucketKey
    attempt: int
    estimate: TokenEstimate
    waited_seconds: float


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """An attempt got an answer, or failed to.

    Attributes:
        key: the bucket it was charged to.
        attempt: 1 for the first try.
        verdict: what happened.
        status: HTTP status, ``None`` when no answer arrived.
        latency_seconds: time from sending to the answer.
        request_id: the server's ``x-request-id``, when it sent one.
        limit: for a 429 ``rate_limit_exceeded``, the limit it names (see
            :func:`throttle.outcomes.rate_limit_kind`); else ``None``.
    """

    key: BucketKey
    attempt: int
    verdict: Verdict
    status: int | None
    latency_seconds: float
    request_id: str | None = None
    limit: str | None = None


@dataclass(frozen=True, slots=True)
class LimitsObserved:
    """A response carried rate-limit headers and the buckets were corrected from them."""

    key: BucketKey
    snapshot: RateLimitSnapshot


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """An attempt failed in a way another attempt can fix.

    Attributes:
        key: the bucket of the request.
        attempt: the attempt that failed.
        delay_seconds: backoff before the next attempt (rate limits wait in the queue instead).
        reason: the error's class name.
    """

    key: BucketKey
    attempt: int
    delay_seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """A request is done, for good.

    Attributes:
        key: the bucket of the request.
        attempts: how many times it was sent.
        error_type: the class name of the error that ended it, ``None`` on success.
        elapsed_seconds: time from submission to the end.
        outcome: how it ended, in the bounded words of :class:`RequestOutcome`.
        client_request_id: the ``X-Client-Request-Id`` every attempt sent, to find the
            request in the provider's logs; ``None`` for :meth:`throttle.Throttle.run`.
            One value per request: log it, never use it as a metric label.
    """

    key: BucketKey
    attempts: int
    error_type: str | None
    elapsed_seconds: float
    outcome: RequestOutcome = RequestOutcome.SUCCESS
    client_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class UsageReported:
    """An answer said how many tokens it used (the body's or a stream's final ``usage``).

    Attributes:
        key: the bucket of the request.
        prompt_tokens: input tokens the server counted.
        completion_tokens: output tokens the server counted.
        estimated_prompt_tokens: the prompt tokens estimated before it was sent (``None``
            when unknown).
    """

    key: BucketKey
    prompt_tokens: int
    completion_tokens: int
    estimated_prompt_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaBreakerOpened:
    """A credential hit insufficient_quota: nothing more is sent on it.

    Attributes:
        identity: the credential identity (a hash, never the key).
        message: the server's message.
    """

    identity: str
    message: str


@dataclass(frozen=True, slots=True)
class QuotaBreakerReset:
    """A credential's quota breaker was closed (here or by another process): sending resumes.

    Attributes:
        identity: the credential identity.
    """

    identity: str


@dataclass(frozen=True, slots=True)
class BackendAvailabilityChanged:
    """The shared limit state became unreachable, or came back.

    Attributes:
        problem: what went wrong and what the backend does meanwhile (admit on local state,
            or admit nothing); ``None`` when it came back.
    """

    problem: str | None


Event = (
    RequestAdmitted
    | AttemptFinished
    | LimitsObserved
    | RetryScheduled
    | RequestFinished
    | UsageReported
    | QuotaBreakerOpened
    | QuotaBreakerReset
    | BackendAvailabilityChanged
)
EventListener = Callable[[Event], None]


class EventHub:
    """Delivers every event to every subscribed listener, synchronously and in order."""

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []

    def __repr__(self) -> str:
        return f"EventHub(listeners={len(self._listeners)})"

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Add a listener.

        Args:
            listener: called with each event; must not block.

        Returns:
            A function that removes the listener again.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def listened(self) -> bool:
        """Whether anyone listens: an event nobody hears need not be built."""
        return bool(self._listeners)

    def emit(self, event: Event) -> None:
        """Deliver ``event``; a listener's exception is logged, never raised."""
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("event listener %r failed on %r", listener, event)
