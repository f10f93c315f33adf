"""Tests for reading rate-limit and retry headers."""

from datetime import UTC, datetime

import pytest

from throttle import LimitReading, RateLimitSnapshot, parse_rate_limit_headers
from throttle.headers import header, parse_retry_after, parse_should_retry

OPENAI = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}


def test_openai_headers_give_both_buckets() -> None:
    """The six documented headers become a snapshot of both buckets."""
    assert parse_rate_limit_headers(OPENAI) == RateLimitSnapshot(
        requests=LimitReading(60, 59, 1.0), tokens=LimitReading(150000, 149984, 360.0)
    )


def test_header_names_are_case_insensitive() -> None:
    """HTTP header names are case-insensitive, so is the parser."""
    upper = {name.upper(): value for name, value in OPENAI.items()}
    assert parse_rate_limit_headers(upper) == parse_rate_limit_headers(OPENAI)


def test_azure_plain_number_resets_are_seconds() -> None:
    """Azure writes resets as plain numbers; they are read as seconds."""
    snapshot = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-tokens": "300000",
            "x-ratelimit-remaining-tokens": "299000",
            "x-ratelimit-reset-tokens": "10",
        }
    )
    assert snapshot == RateLimitSnapshot(tokens=LimitReading(300000, 299000, 10.0))


def test_missing_headers_give_none() -> None:
    """A response without rate-limit headers yields no snapshot."""
    assert parse_rate_limit_headers({"content-type": "application/json"}) is None


def test_azure_responses_api_bogus_minus_one_is_ignored() -> None:
    """Limit -1, remaining -1, reset 0 (seen from Azure) never reach a bucket."""
    assert (
        parse_rate_limit_headers(
            {
                "x-ratelimit-limit-tokens": "-1",
                "x-ratelimit-remaining-tokens": "-1",
                "x-ratelimit-reset-tokens": "0",
                "x-ratelimit-limit-requests": "-1",
                "x-ratelimit-remaining-requests": "-1",
            }
        )
        is None
    )


@pytest.mark.parametrize(
    ("limit", "remaining"),
    [("abc", "10"), ("100", "ten"), ("0", "0"), ("nan", "1"), ("inf", "5"), ("100", "")],
)
def test_garbage_values_are_ignored(limit: str, remaining: str) -> None:
    """Unparsable, zero, or non-finite values leave the bucket unknown instead of raising."""
    headers = {"x-ratelimit-limit-tokens": limit, "x-ratelimit-remaining-tokens": remaining}
    assert parse_rate_limit_headers(headers) is None


def test_garbage_reset_keeps_limit_and_remaining() -> None:
    """A bad reset value only drops the reset, not the bucket."""
    snapshot = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "10",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "soon",
        }
    )
    assert snapshot == RateLimitSnapshot(requests=LimitReading(10, 3, None))


def test_remaining_above_limit_is_clamped() -> None:
    """After a limit was lowered, remaining may exceed it; it is clamped to the limit."""
    snapshot = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "5000",
        }
    )
    assert snapshot is not None
    assert snapshot.tokens == LimitReading(1000, 1000, None)


def test_usage_based_variant_is_read_when_plain_is_missing() -> None:
    """The `_usage_based` suffix seen on the wire is understood."""
    snapshot = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-tokens_usage_based": "40000",
            "x-ratelimit-remaining-tokens_usage_based": "39000",
            "x-ratelimit-reset-tokens_usage_based": "1.5s",
        }
    )
    assert snapshot == RateLimitSnapshot(tokens=LimitReading(40000, 39000, 1.5))


def test_most_restrictive_family_wins() -> None:
    """With organization and project headers, the bucket with less left is the binding one."""
    snapshot = parse_rate_limit_headers(
        {
            **OPENAI,
            "x-ratelimit-limit-project-tokens": "50000",
            "x-ratelimit-remaining-project-tokens": "1000",
        }
    )
    assert snapshot is not None
    assert snapshot.tokens == LimitReading(50000, 1000, None)
    assert snapshot.requests == LimitReading(60, 59, 1.0)


def test_retry_after_ms_wins_over_retry_after() -> None:
    """`retry-after-ms` is more precise and is preferred."""
    assert parse_retry_after({"retry-after-ms": "1500.5", "retry-after": "2"}) == 1.5005


def test_retry_after_seconds_may_be_a_float() -> None:
    """`retry-after` in seconds, fractional allowed."""
    assert parse_retry_after({"Retry-After": "0.25"}) == 0.25


def test_retry_after_http_date_is_relative_to_now() -> None:
    """An HTTP-date retry-after is turned into seconds from now."""
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "Sun, 22 Nov 2026 12:00:30 GMT"}, now=now) == 30.0


@pytest.mark.parametrize("value", ["soon", "-3", ""])
def test_unreadable_retry_after_is_none(value: str) -> None:
    """A retry-after that is neither seconds nor a date is ignored."""
    assert parse_retry_after({"retry-after": value}) is None


def test_should_retry_header() -> None:
    """`x-should-retry` true/false is read; anything else means the server did not say."""
    assert parse_should_retry({"x-should-retry": "true"}) is True
    assert parse_should_retry({"X-Should-Retry": "False"}) is False
    assert parse_should_retry({"x-should-retry": "maybe"}) is None
    assert parse_should_retry({}) is None


def test_header_lookup_ignores_the_case_of_names() -> None:
    """One lookup serves plain dicts whatever case the server or client used."""
    assert header({"X-Request-Id": "req_1"}, "x-request-id") == "req_1"
    assert header({"content-type": "application/json"}, "Content-Type") == "application/json"
    assert header({}, "api-key") is None


def test_reset_too_big_for_a_float_is_ignored() -> None:
    """A 310-digit reset header leaves the reset unknown instead of infinite."""
    snapshot = parse_rate_limit_headers({**OPENAI, "x-ratelimit-reset-tokens": "9" * 310})
    assert snapshot is not None
    assert snapshot.tokens is not None
    assert snapshot.tokens.reset_seconds is None
