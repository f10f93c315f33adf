"""Tests for the retry policy's one decision per attempt (pure: no clock, no sleeping)."""

import pytest

from throttle import (
    ConfigurationError,
    ErrorDetails,
    QuotaExhaustedError,
    RateLimitError,
    RetryExhaustedError,
    RetryPolicy,
    ServerError,
    StreamTruncatedError,
    TransportError,
)
from throttle.answer import read_answer
from throttle.errors import APIStatusError, ThrottleError
from throttle.retry import Finish, Retry

DETAILS_500 = ErrorDetails(500, None, "server_error", "oops")
DETAILS_429 = ErrorDetails(429, "rate_limit_exceeded", "tokens", "slow down")


def retry_after(decision: Retry | Finish[object]) -> float:
    """The wait of a decision that must be a retry."""
    assert isinstance(decision, Retry), decision
    return decision.after


def test_a_success_finishes_with_its_value() -> None:
    """A successful answer ends the request with the answer's value."""
    answer = read_answer(200, {}, b'{"id": 1}')
    assert RetryPolicy().decide(answer, 1) == Finish(value={"id": 1})


@pytest.mark.parametrize(
    "error",
    [
        APIStatusError(ErrorDetails(400, "invalid_request_error")),
        QuotaExhaustedError(ErrorDetails(429, "insufficient_quota")),
        StreamTruncatedError("cut"),
    ],
)
def test_errors_that_retrying_cannot_fix_finish_at_once(error: ThrottleError) -> None:
    """A client error, a billing error or a half-delivered stream is never retried."""
    assert RetryPolicy().decide(error, 1) == Finish(error=error)


def test_server_refusal_to_retry_is_obeyed() -> None:
    """A 500 carrying x-should-retry: false finishes."""
    answer = read_answer(500, {"x-should-retry": "false"}, b"{}")
    decision = RetryPolicy().decide(answer, 1)
    assert isinstance(decision, Finish)
    assert isinstance(decision.error, ServerError)


def test_server_refusal_to_retry_a_rate_limit_is_obeyed() -> None:
    """A 429 rate_limit_exceeded carrying x-should-retry: false finishes with its error."""
    body = b'{"error": {"message": "slow down", "type": "tokens", "code": "rate_limit_exceeded"}}'
    answer = read_answer(429, {"x-should-retry": "false", "retry-after": "1"}, body)
    decision = RetryPolicy().decide(answer, 1)
    assert isinstance(decision, Finish)
    assert isinstance(decision.error, RateLimitError)


def test_rate_limit_marked_retryable_or_unmarked_is_retried() -> None:
    """Without x-should-retry (or with true), a 429 rate_limit_exceeded is retried."""
    body = b'{"error": {"message": "slow down", "type": "tokens", "code": "rate_limit_exceeded"}}'
    for headers in ({}, {"x-should-retry": "true"}):
        answer = read_answer(429, headers, body)
        assert RetryPolicy().decide(answer, 1) == Retry(after=0.0, reason="RateLimitError")


def test_server_delay_is_honoured_exactly() -> None:
    """A server error with a retry-after waits that long, without jitter."""
    error = ServerError(DETAILS_500, retry_after=3.25)
    assert retry_after(RetryPolicy().decide(error, 1)) == 3.25


def test_server_delay_beyond_max_server_wait_finishes() -> None:
    """A delay over max_server_wait (a daily limit) fails instead of holding the request."""
    error = RateLimitError(DETAILS_429, retry_after=121)
    assert RetryPolicy(max_server_wait=120).decide(error, 1) == Finish(error=error)


def test_rate_limit_is_retried_without_a_sleep_of_its_own() -> None:
    """A 429 retries at once: the key's pause already holds every request on it."""
    error = RateLimitError(DETAILS_429, retry_after=2.0)
    assert RetryPolicy().decide(error, 1) == Retry(after=0.0, reason="RateLimitError")


def test_backoff_doubles_up_to_its_cap_with_bounded_jitter() -> None:
    """Attempt n >= 2 waits min(0.5 * 2**(n-1), 8) plus jitter in [0, 0.5]; jitter varies."""
    policy = RetryPolicy(max_attempts=10)
    for attempt in range(2, 10):
        base = min(0.5 * 2 ** (attempt - 1), 8.0)
        waits = [retry_after(policy.decide(TransportError("x"), attempt)) for _ in range(200)]
        assert all(base <= wait <= base + 0.5 for wait in waits), (attempt, waits[:5])
        assert max(waits) - min(waits) > 0.1  # jittered, not a fixed delay


def test_first_retry_waits_the_jitter_alone() -> None:
    """After one failure the wait is random in [0, initial_backoff], with no fixed part."""
    waits = [retry_after(RetryPolicy().decide(ServerError(DETAILS_500), 1)) for _ in range(400)]
    assert all(0 <= wait <= 0.5 for wait in waits)
    assert min(waits) < 0.1  # spread over the whole window
    assert max(waits) > 0.4


def test_six_attempts_span_at_least_fifteen_seconds_of_failures() -> None:
    """The five backoffs of a request that keeps failing add up to 15 s or more (at most 17.5)."""
    policy = RetryPolicy()
    for _ in range(50):
        total = sum(retry_after(policy.decide(TransportError("x"), n)) for n in range(1, 6))
        assert 15.0 <= total <= 17.5


def test_rate_limits_before_a_server_error_leave_its_first_retry_short() -> None:
    """A 500 after two 429s is the request's first counted failure: jitter alone."""
    policy = RetryPolicy()
    waits = [
        retry_after(policy.decide(ServerError(DETAILS_500), 3, rate_limited=2)) for _ in range(50)
    ]
    assert all(0 <= wait <= 0.5 for wait in waits)


def test_attempt_budget_ends_with_retry_exhausted() -> None:
    """The last allowed attempt's retryable error becomes RetryExhaustedError."""
    error = ServerError(DETAILS_500)
    decision: Retry | Finish[object] = RetryPolicy(max_attempts=3).decide(error, 3)
    assert isinstance(decision, Finish)
    assert isinstance(decision.error, RetryExhaustedError)
    assert decision.error.last_error is error
    assert decision.error.attempts == 3
    assert isinstance(RetryPolicy(max_attempts=3).decide(error, 2), Retry)


def test_rate_limits_are_not_counted_against_the_attempt_budget() -> None:
    """A 429 on attempt 50 of 3 still retries; a 500 after 48 refusals has 2 of 3 used."""
    policy = RetryPolicy(max_attempts=3)
    limited = RateLimitError(DETAILS_429)
    assert isinstance(policy.decide(limited, 50, rate_limited=50), Retry)
    assert isinstance(policy.decide(ServerError(DETAILS_500), 50, rate_limited=48), Retry)
    exhausted: Retry | Finish[object] = policy.decide(ServerError(DETAILS_500), 51, rate_limited=48)
    assert isinstance(exhausted, Finish)
    assert isinstance(exhausted.error, RetryExhaustedError)
    assert exhausted.error.attempts == 51


def test_rate_limit_pause_is_the_server_delay_or_plain_backoff() -> None:
    """The key pauses for the server's delay; without one, the unjittered backoff."""
    policy = RetryPolicy()
    assert policy.rate_limit_pause(RateLimitError(DETAILS_429, retry_after=1.5), 1) == 1.5
    no_delay = RateLimitError(DETAILS_429)
    assert [policy.rate_limit_pause(no_delay, n) for n in (1, 2, 3, 6)] == [0.5, 1.0, 2.0, 8.0]
    assert policy.rate_limit_pause(RateLimitError(DETAILS_429, retry_after=86_400), 1) is None


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_attempts": 0},
        {"initial_backoff": -1},
        {"initial_backoff": 10, "max_backoff": 5},
        {"max_server_wait": -1},
    ],
)
def test_invalid_policy_is_refused(arguments: dict[str, float]) -> None:
    """Nonsense settings raise ConfigurationError when the policy is built."""
    with pytest.raises(ConfigurationError):
        RetryPolicy(**arguments)  # type: ignore[arg-type]


def test_without_a_server_delay_the_key_pauses_even_past_max_server_wait() -> None:
    """Our own backoff (8 s) is never "too long": only a server's delay fails a request."""
    policy = RetryPolicy(max_server_wait=2.0)
    assert policy.rate_limit_pause(RateLimitError(DETAILS_429), 6) == 8.0
    assert policy.rate_limit_pause(RateLimitError(DETAILS_429, retry_after=3.0), 1) is None
