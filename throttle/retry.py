"""When to try again, and how long to wait first: one decision per attempt.

The scheduler asks :meth:`RetryPolicy.decide` once after every attempt and acts on the value
it returns, :class:`Retry` or :class:`Finish`. tenacity supplies the strategies (exponential
wait, jitter, the attempt budget); it does not own the control flow, which stays readable in
``scheduler.submit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_attempt,
    wait_chain,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from throttle.answer import Answer
from throttle.errors import (
    APIStatusError,
    ConfigurationError,
    RateLimitError,
    RetryExhaustedError,
    ThrottleError,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the request again.

    Attributes:
        after: seconds to wait first (0 after a rate limit: the key's queue already holds
            every request until the server's delay is over).
        reason: the class name of the error that failed the attempt.
    """

    after: float
    reason: str


@dataclass(frozen=True, slots=True)
class Finish(Generic[T]):
    """The request is over, with a value or an error.

    Attributes:
        value: what the caller gets on success.
        error: what ended the request, ``None`` on success.
    """

    value: T | None = None
    error: ThrottleError | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a request that failed transiently is retried.

    Without a server delay, the n-th retry after a server error or a dropped connection waits
    ``min(initial_backoff * 2**(n-1), max_backoff)`` plus a random jitter up to
    ``initial_backoff``; the first retry waits the jitter alone (0-0.5 s by default, then
    1-1.5 s, 2-2.5 s, 4-4.5 s, 8-8.5 s). Why no fixed wait first: one failure among successes
    (a 500 from one replica, one dropped connection) is the common case and is over at once,
    and a fixed wait then only delays that request, and the whole job when the request is
    among its last. It would not lighten the server: every attempt, retries included, is
    admitted by its key's buckets, and while one request backs off the key sends the next.
    The jitter still spreads a burst of failures over 0.5 s; a second failure of the same
    request says the trouble lasts, and the wait doubles from there as before, so six
    attempts still span at least 15 s of an outage (docs/reliability.md).

    Attributes:
        max_attempts: attempts per request, the first included. Attempts refused by a rate
            limit (429 ``rate_limit_exceeded`` or ``slow_down``) are not counted: a rate limit
            says "wait", never "give up", so only the request's deadline (or a server delay
            longer than ``max_server_wait``) ends a request that keeps meeting it.
        initial_backoff: the most seconds of random jitter in a backoff, and all of the first
            retry's; the fixed part before the third attempt is twice this, doubling after
            each further failure.
        max_backoff: the most seconds of exponential backoff between two attempts.
        max_server_wait: a server delay longer than this (a daily limit's "try again in
            28m48s") fails the request instead of holding it.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    max_server_wait: float = 120.0
    _exponential: wait_base = field(init=False, repr=False, compare=False)
    _backoff: wait_base = field(init=False, repr=False, compare=False)
    _stop: stop_base = field(init=False, repr=False, compare=False)
    _retrying: Retrying = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1: {self.max_attempts}")
        if not 0 <= self.initial_backoff <= self.max_backoff or self.max_server_wait < 0:
            raise ConfigurationError(
                "need 0 <= initial_backoff <= max_backoff and max_server_wait >= 0"
            )
        exponential = wait_exponential(multiplier=self.initial_backoff, max=self.max_backoff)
        object.__setattr__(self, "_exponential", exponential)
        jitter = wait_random(0, self.initial_backoff)
        # wait_chain: the first retry waits the jitter alone, later ones exponential + jitter.
        object.__setattr__(self, "_backoff", wait_chain(jitter, exponential + jitter))
        object.__setattr__(self, "_stop", stop_after_attempt(self.max_attempts))
        object.__setattr__(self, "_retrying", Retrying())

    def decide(
        self, outcome: Answer[T] | ThrottleError, attempt: int, *, rate_limited: int = 0
    ) -> Retry | Finish[T]:
        """Decide what follows an attempt.

        Args:
            outcome: the attempt's answer, or the error raised when no answer arrived.
            attempt: how many attempts were made so far, this one included.
            rate_limited: how many of them a rate limit refused (not counted in the budget).

        Returns:
            :class:`Finish` with the value on success; :class:`Finish` with the error when
            retrying cannot help (wrapped in :class:`RetryExhaustedError` when only the
            attempt budget stopped it); otherwise :class:`Retry`.
        """
        if isinstance(outcome, ThrottleError):
            error = outcome
        elif outcome.error is None:
            return Finish(value=outcome.value)
        else:
            error = outcome.error
        if not self.should_retry(error):
            return Finish(error=error)
        if isinstance(error, RateLimitError):
            return Retry(0.0, type(error).__name__)  # the key's queue holds it (see _wait)
        state = self._state(attempt - rate_limited)
        if self._stop(state):
            return Finish(error=RetryExhaustedError(error, attempt))
        return Retry(self._wait(error, state), type(error).__name__)

    def should_retry(self, error: BaseException) -> bool:
        """Return whether another attempt can help after ``error``."""
        if not isinstance(error, ThrottleError) or not error.retryable:
            return False
        retry_after = error.retry_after if isinstance(error, APIStatusError) else None
        return retry_after is None or retry_after <= self.max_server_wait

    def rate_limit_pause(self, error: RateLimitError, refusals: int) -> float | None:
        """Return how long a key pauses after a 429, or ``None`` when it should not.

        The server's delay when it gave one, else the exponential backoff of the request's
        ``refusals`` so far
        (without jitter: the pause is shared by every request on the key). A server's delay
        longer than ``max_server_wait`` (a daily limit) pauses nothing: the request fails.
        """
        delay = error.retry_after
        if delay is None:  # our own backoff: at most max_backoff, never a reason to give up
            return float(self._exponential(self._state(refusals)))
        return delay if delay <= self.max_server_wait else None

    def _wait(self, error: ThrottleError, state: RetryCallState) -> float:
        if isinstance(error, APIStatusError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def _state(self, attempt: int) -> RetryCallState:
        """The one value tenacity's strategies read: how many attempts were made."""
        state = RetryCallState(self._retrying, None, (), {})
        state.attempt_number = attempt
        return state
