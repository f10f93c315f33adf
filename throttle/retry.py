"""When to try again, and how long to wait first: a small policy over tenacity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from throttle.errors import APIStatusError, ConfigurationError, RateLimitError, ThrottleError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a request that failed transiently is retried.

    Attributes:
        max_attempts: attempts per request, the first included.
        initial_backoff: seconds before the second attempt after a server error; doubles after
            each further failure, with jitter.
        max_backoff: the most seconds between two attempts after server errors.
        max_server_wait: a server delay longer than this (a daily limit's "try again in
            28m48s") fails the request instead of holding it.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    max_server_wait: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1: {self.max_attempts}")
        if not 0 <= self.initial_backoff <= self.max_backoff or self.max_server_wait < 0:
            raise ConfigurationError(
                "need 0 <= initial_backoff <= max_backoff and max_server_wait >= 0"
            )

    def should_retry(self, error: BaseException) -> bool:
        """Return whether another attempt can help after ``error``."""
        if not isinstance(error, ThrottleError) or not error.retryable:
            return False
        retry_after = error.retry_after if isinstance(error, APIStatusError) else None
        return retry_after is None or retry_after <= self.max_server_wait

    def retrying(
        self,
        sleep: Callable[[float], Awaitable[None]],
        before_sleep: Callable[[RetryCallState], None],
    ) -> AsyncRetrying:
        """Return a tenacity controller for one request.

        Args:
            sleep: waits between attempts (interruptible by the quota breaker).
            before_sleep: told of each retry, for events.
        """
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=_ServerAwareWait(
                wait_exponential(multiplier=self.initial_backoff, max=self.max_backoff)
                + wait_random(0, self.initial_backoff)
            ),
            retry=retry_if_exception(self.should_retry),
            sleep=sleep,
            before_sleep=before_sleep,
        )


class _ServerAwareWait(wait_base):
    """Backoff that defers to the server.

    A rate-limited attempt waits 0 here: its key's queue already holds every request until
    the server's delay is over, so waiting here too would double it. Another error with a
    server-given delay waits that long; the rest back off exponentially with jitter.
    """

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, RateLimitError):
            return 0.0
        if isinstance(error, APIStatusError) and error.retry_after is not None:
            return error.retry_after
        return self._backoff(retry_state)
