"""Tests for classifying every error body the facts page lists."""

from typing import Any

import pytest

from throttle import (
    APIStatusError,
    CapacityUnavailableError,
    QuotaExhaustedError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
    Verdict,
    classify_response,
)
from throttle.classify import decode_body, retry_delay_from_message


def body(message: str, kind: str | None, code: str | None) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


TPM_429 = body(
    "Rate limit reached for gpt-4o-mini in project proj_X organization org-Y on tokens per min "
    "(TPM): Limit 50000, Used 47949, Requested 3006. Please try again in 1.146s. Visit "
    "https://platform.openai.com/account/rate-limits to learn more.",
    "tokens",
    "rate_limit_exceeded",
)
RPM_429 = body(
    "Rate limit reached for gpt-4o in organization org-Y on requests per min (RPM): Limit 3, "
    "Used 3, Requested 1. Please try again in 20s.",
    "requests",
    "rate_limit_exceeded",
)
RPD_429 = body(
    "Rate limit reached for gpt-4o in organization org-Y on requests per day (RPD): Limit 50, "
    "Used 50, Requested 1. Please try again in 28m48s.",
    "requests",
    "rate_limit_exceeded",
)
TOO_LARGE_429 = body(
    "Request too large for gpt-4o in organization org-xxx on tokens per min (TPM): Limit 30000, "
    "Requested 34307. The input or output tokens must be reduced in order to run successfully.",
    "tokens",
    "rate_limit_exceeded",
)
QUOTA_429 = body(
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs.",
    "insufficient_quota",
    "insufficient_quota",
)
AZURE_429 = {
    "error": {
        "code": "429",
        "message": (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. "
            "Please retry after 60 seconds."
        ),
    }
}


def test_tokens_429_is_a_retryable_rate_limit_with_the_servers_delay() -> None:
    """429 on TPM: rate limited, retry in 1.146 s, limit type tokens."""
    result = classify_response(429, {"x-request-id": "req_1"}, TPM_429)
    assert result.verdict is Verdict.RATE_LIMITED
    assert isinstance(result.error, RateLimitError)
    assert result.error.retryable
    assert result.error.retry_after == pytest.approx(1.146)
    assert result.error.limit_type == "tokens"
    assert result.error.request_id == "req_1"
    assert "Limit 50000" in str(result.error)


def test_requests_429_names_the_requests_limit() -> None:
    """429 on RPM: limit type requests, retry in 20 s."""
    error = classify_response(429, {}, RPM_429).error
    assert isinstance(error, RateLimitError)
    assert (error.limit_type, error.retry_after) == ("requests", 20.0)


def test_daily_limit_429_is_recognised_as_daily() -> None:
    """429 on RPD: limit type requests_per_day, retry in 28m48s."""
    error = classify_response(429, {}, RPD_429).error
    assert isinstance(error, RateLimitError)
    assert (error.limit_type, error.retry_after) == ("requests_per_day", 1728.0)


def test_request_too_large_never_retries_and_carries_the_numbers() -> None:
    """A request larger than the whole TPM budget fails at once with limit and size."""
    result = classify_response(429, {}, TOO_LARGE_429)
    assert result.verdict is Verdict.TOO_LARGE
    assert isinstance(result.error, RequestTooLargeError)
    assert not result.error.retryable
    assert (result.error.limit, result.error.requested) == (30000, 34307)


@pytest.mark.parametrize(
    "code",
    [
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_usage_limit_exceeded",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
    ],
)
def test_billing_codes_are_quota_exhaustion(code: str) -> None:
    """Every billing code under type insufficient_quota stops instead of retrying."""
    result = classify_response(429, {}, body("Billing problem.", "insufficient_quota", code))
    assert result.verdict is Verdict.QUOTA_EXHAUSTED
    assert isinstance(result.error, QuotaExhaustedError)
    assert not result.error.retryable


def test_old_quota_capture_with_null_code_is_quota_exhaustion() -> None:
    """Old captures carry `"code": null`; the message still identifies billing."""
    result = classify_response(429, {}, body(QUOTA_429["error"]["message"], None, None))
    assert result.verdict is Verdict.QUOTA_EXHAUSTED


def test_quota_error_is_not_retried_even_if_the_server_says_retry() -> None:
    """`x-should-retry: true` does not make a billing problem retryable."""
    result = classify_response(429, {"x-should-retry": "true"}, QUOTA_429)
    assert result.error is not None
    assert not result.error.retryable


def test_azure_429_reads_retry_after_ms_header() -> None:
    """Azure's 429 (code "429", no type) is a rate limit; retry-after-ms gives the delay."""
    result = classify_response(429, {"retry-after-ms": "6000", "retry-after": "6"}, AZURE_429)
    assert isinstance(result.error, RateLimitError)
    assert result.error.retry_after == 6.0
    assert result.error.code == "429"


def test_azure_429_without_header_reads_the_message() -> None:
    """Azure's message "Please retry after 60 seconds" gives the delay."""
    error = classify_response(429, {}, AZURE_429).error
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 60.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 529])
def test_transient_statuses_are_retryable_server_errors(status: int) -> None:
    """5xx, 408, 409 and 529 are retried with backoff."""
    result = classify_response(status, {}, body("The server had an error.", "server_error", None))
    assert result.verdict is Verdict.SERVER_ERROR
    assert isinstance(result.error, ServerError)
    assert result.error.retryable


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "context_length_exceeded"),
        (401, "invalid_api_key"),
        (403, "unsupported_country"),
        (404, "model_not_found"),
        (413, None),
        (422, None),
    ],
)
def test_client_errors_fail_without_retry(status: int, code: str | None) -> None:
    """400 (incl. context_length_exceeded), 401, 403, 404, 413, 422 are never retried."""
    result = classify_response(
        status, {"x-request-id": "req_9"}, body("You did it wrong.", "invalid_request_error", code)
    )
    assert result.verdict is Verdict.CLIENT_ERROR
    assert isinstance(result.error, APIStatusError)
    assert not result.error.retryable
    assert result.error.status == status
    assert result.error.code == code
    assert "You did it wrong." in str(result.error)
    assert "req_9" in str(result.error)


def test_should_retry_false_overrides_a_server_error() -> None:
    """The server's `x-should-retry: false` wins over the status."""
    error = classify_response(500, {"x-should-retry": "false"}, {}).error
    assert error is not None
    assert not error.retryable


def test_should_retry_true_overrides_a_client_error() -> None:
    """The server's `x-should-retry: true` makes even a 400 retryable."""
    error = classify_response(400, {"x-should-retry": "true"}, {}).error
    assert error is not None
    assert error.retryable


def test_non_json_error_body_keeps_the_text() -> None:
    """A proxy's HTML 502 still becomes a ServerError carrying the text."""
    error = classify_response(502, {}, "<html>Bad Gateway</html>").error
    assert isinstance(error, ServerError)
    assert "Bad Gateway" in error.server_message


def test_success_has_no_error() -> None:
    """2xx is a success."""
    assert classify_response(200, {}, {"ok": True}).verdict is Verdict.SUCCESS


def test_server_error_honours_retry_after_header() -> None:
    """A 503 with retry-after carries the delay for the backoff."""
    error = classify_response(503, {"retry-after": "3"}, {}).error
    assert isinstance(error, ServerError)
    assert error.retry_after == 3.0


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Please try again in 1.146s.", 1.146),
        ("Please try again in 20s.", 20.0),
        ("Please try again in 28m48s.", 1728.0),
        ("Please try again in 425ms.", 0.425),
        ("Please retry after 60 seconds.", 60.0),
        ("Nothing here.", None),
    ],
)
def test_retry_delay_from_message(message: str, seconds: float | None) -> None:
    """Every delay phrasing seen in 429 messages is read."""
    assert retry_delay_from_message(message) == seconds


def test_bodies_decode_as_json_or_else_as_text() -> None:
    """JSON bodies become data; anything else (a proxy's HTML) stays readable text."""
    assert decode_body(b'{"error": {"code": "x"}}') == {"error": {"code": "x"}}
    assert decode_body(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert decode_body(b"\xff") == "\ufffd"


@pytest.mark.parametrize(
    "message",
    [
        "Request too large for gpt-4o. Limit ,, Requested 1",
        "Request too large for gpt-4o. Limit 1, Requested ,",
        f"Request too large for gpt-4o. Limit {'9' * 400}, Requested {'9' * 400}",
    ],
)
def test_too_large_with_unreadable_counts_is_still_classified(message: str) -> None:
    """Commas without digits or counts too big for a float leave the sizes unknown (0)."""
    error = classify_response(429, {}, body(message, "tokens", "rate_limit_exceeded")).error
    assert isinstance(error, RequestTooLargeError)
    assert (error.limit, error.requested) == (0.0, 0.0)


@pytest.mark.parametrize(
    "message",
    [f"Please try again in {'9' * 310}s.", f"Please retry after {'9' * 310} seconds."],
)
def test_retry_delay_too_big_for_a_float_is_no_delay(message: str) -> None:
    """A delay that overflows to inf is read as no delay, never as an infinite wait."""
    assert retry_delay_from_message(message) is None


def test_unreadable_error_fields_never_escape_classification() -> None:
    """Error codes nested too deeply or too big to print become their type name."""
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    huge = 10**5000
    error = classify_response(400, {}, {"error": {"code": deep, "type": huge}}).error
    assert isinstance(error, APIStatusError)
    assert (error.code, error.type) == ("list", "int")


def test_body_nested_too_deeply_for_json_decodes_as_text() -> None:
    """A body nested past the JSON decoder's recursion limit stays readable text."""
    raw = b"[" * 100_000
    assert decode_body(raw) == raw.decode()


SLOW_DOWN_429 = body(
    "Your request rate increased too quickly. To ensure system stability, please adjust your "
    "traffic to grow more gradually. Please try again in 2s.",
    "rate_limit_error",
    "slow_down",
)


def test_slow_down_is_a_rate_limit_that_slows_the_key() -> None:
    """429 slow_down: retried like a rate limit, marked so the key's pace is halved."""
    verdict = classify_response(429, {}, SLOW_DOWN_429)
    assert verdict.verdict is Verdict.RATE_LIMITED
    assert isinstance(verdict.error, RateLimitError)
    assert verdict.error.slow_down
    assert verdict.error.retryable
    assert verdict.error.retry_after == 2.0
    plain = classify_response(429, {}, TPM_429).error
    assert isinstance(plain, RateLimitError)
    assert not plain.slow_down


def test_the_older_503_slow_down_is_a_slow_down_too() -> None:
    """503 "Slow Down: reduce your request rate ..." asks the same as 429 slow_down."""
    message = "Slow Down: reduce your request rate to its original level, hold it 15+ minutes"
    error = classify_response(503, {}, body(message, None, None)).error
    assert isinstance(error, RateLimitError)
    assert error.slow_down
    overloaded = body("That model is currently overloaded with other requests.", None, None)
    assert type(classify_response(503, {}, overloaded).error) is ServerError


@pytest.mark.parametrize(
    "unavailable",
    [
        body("Resource Unavailable", None, None),
        body("Resource unavailable, please retry later.", "invalid_request_error", None),
        body("Flex capacity is short", None, "resource_unavailable"),
    ],
)
def test_flex_resource_unavailable_is_retried_but_is_no_rate_limit(
    unavailable: dict[str, Any],
) -> None:
    """Flex 429 "Resource Unavailable": a retryable server-side shortage, not a rate limit."""
    verdict = classify_response(429, {"retry-after": "3"}, unavailable)
    assert verdict.verdict is Verdict.SERVER_ERROR
    assert isinstance(verdict.error, CapacityUnavailableError)
    assert not isinstance(verdict.error, RateLimitError)
    assert verdict.error.retryable
    assert verdict.error.retry_after == 3.0
