"""Tests for the one answer reader that the native client and every adapter share."""

import pytest

from throttle import QuotaExhaustedError, RateLimitError, TransportError, Verdict
from throttle.answer import Usage, answer_of_call, answer_of_error, read_answer, read_usage
from throttle.errors import ErrorDetails

HEADERS = {
    "X-Request-Id": "req_1",
    "x-ratelimit-limit-tokens": "1000",
    "x-ratelimit-remaining-tokens": "900",
}


def test_success_reads_value_usage_request_id_and_limits() -> None:
    """A 200 gives the decoded body, its usage, the request id and the rate-limit snapshot."""
    body = b'{"id": "c1", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}'
    answer = read_answer(200, HEADERS, body)
    assert answer.error is None
    assert answer.value == {"id": "c1", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    assert answer.usage == Usage(5, 2)
    assert answer.request_id == "req_1"
    assert answer.snapshot is not None
    assert answer.snapshot.tokens is not None
    assert answer.snapshot.tokens.remaining == 900


def test_error_answer_is_classified_and_names_its_request_id() -> None:
    """A 429 insufficient_quota is a quota error carrying the request id."""
    body = (
        b'{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}'
    )
    answer = read_answer(429, HEADERS, body)
    assert answer.classification.verdict is Verdict.QUOTA_EXHAUSTED
    assert isinstance(answer.error, QuotaExhaustedError)
    assert answer.error.request_id == "req_1"
    assert answer.usage is None


def test_native_rule_refuses_a_success_that_is_not_a_json_object() -> None:
    """With require_json, a 200 whose body is HTML is no usable answer."""
    with pytest.raises(TransportError, match="not a JSON object"):
        read_answer(200, {}, b"<html>proxy</html>", require_json=True)


def test_adapters_keep_their_own_value_and_stream_bodies_unread() -> None:
    """An adapter's answer holds its library's response; a stream has no body yet."""
    response = object()
    answer = read_answer(200, HEADERS, None, value=response)
    assert answer.value is response
    assert answer.error is None
    assert answer.usage is None


def test_responses_api_usage_is_read() -> None:
    """input_tokens/output_tokens count like prompt/completion tokens; junk is ignored."""
    assert read_usage({"input_tokens": 9, "output_tokens": 4}) == Usage(9, 4)
    assert read_usage({"prompt_tokens": "9"}) is None
    assert read_usage(None) is None


def test_answers_of_functions_run_under_the_scheduler() -> None:
    """run(): a returned value is a success with its headers; a raised 429 keeps its verdict."""
    success = answer_of_call("result", HEADERS)
    assert success.value == "result"
    assert success.snapshot is not None
    limited = RateLimitError(ErrorDetails(429, "rate_limit_exceeded"))
    failed = answer_of_error(limited)
    assert failed.error is limited
    assert failed.classification.verdict is Verdict.RATE_LIMITED
