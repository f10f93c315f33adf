"""Tests for reading a line's fate from a finished batch's records."""

from throttle.batch_budget import LearningStep
from throttle.batch_outcomes import (
    EXPIRED,
    LINE_TOO_LARGE,
    NOT_RUN,
    RETRY_BATCH_FAILED,
    TOKEN_LIMIT,
    failed_batch,
    final_error,
    not_run,
    one_line_refused,
    read_record,
)
from throttle.errors import (
    APIStatusError,
    BatchLineError,
    RateLimitError,
    RetryExhaustedError,
    ServerError,
)


def record(
    status: int | None = 200, body: object = None, error: object = None
) -> dict[str, object]:
    """An output or error file record of line ``t-1``."""
    response = None if status is None else {"status_code": status, "request_id": "r1", "body": body}
    return {"id": "batch_req_1", "custom_id": "t-1", "response": response, "error": error}


def test_a_200_record_ends_the_line_with_its_body() -> None:
    """The response body is the line's answer, as online."""
    outcome = read_record(record(200, {"object": "list"}))
    assert (outcome.response, outcome.error, outcome.retry) == ({"object": "list"}, None, None)


def test_an_expired_record_asks_for_a_later_batch() -> None:
    """``batch_expired`` goes into a later batch."""
    outcome = read_record(record(None, error={"code": EXPIRED, "message": "too late"}))
    assert outcome.retry == EXPIRED
    assert isinstance(outcome.error, BatchLineError)


def test_a_5xx_or_429_record_asks_for_a_later_batch_and_a_400_ends_the_line() -> None:
    """Transient statuses are retried; a refusal of the body is the line's own error."""
    server = read_record(record(500, {"error": {"message": "boom", "type": "server_error"}}))
    limited = read_record(
        record(429, {"error": {"message": "slow", "code": "rate_limit_exceeded"}})
    )
    refused = read_record(record(400, {"error": {"message": "bad", "code": "invalid_value"}}))
    assert isinstance(server.error, ServerError)
    assert server.retry is not None
    assert isinstance(limited.error, RateLimitError)
    assert limited.retry is not None
    assert isinstance(refused.error, APIStatusError)
    assert refused.retry is None
    assert (refused.error.status, refused.error.code, refused.error.request_id) == (
        400,
        "invalid_value",
        "r1",
    )


def test_an_other_error_record_ends_the_line_and_a_blank_one_is_retried() -> None:
    """An ``error`` that is not an expiry is final; a record with nothing in it is retried."""
    other = read_record(record(None, error={"code": "invalid_request", "message": "no"}))
    blank = read_record(record(None))
    assert other.retry is None
    assert isinstance(other.error, BatchLineError)
    assert other.error.kind == "invalid_request"
    assert blank.retry == NOT_RUN


def test_a_failed_validation_ends_the_named_line_and_retries_the_others() -> None:
    """An error naming line 2 of the file ends that line; the innocent ones go again."""
    outcomes = failed_batch(
        "b1", [{"code": "invalid_url", "message": "bad url", "line": 2}], [10, 11, 12]
    )
    assert outcomes[11].retry is None
    assert isinstance(outcomes[11].error, BatchLineError)
    assert outcomes[11].error.kind == "invalid_url"
    assert outcomes[10].retry == outcomes[12].retry == RETRY_BATCH_FAILED


def test_a_failed_validation_naming_no_line_ends_every_line() -> None:
    """A batch-wide error (a model it cannot run) is every line's."""
    outcomes = failed_batch("b1", [{"code": "model_not_found", "message": "no"}], [1, 2])
    assert all(o.retry is None for o in outcomes.values())
    assert {o.error.kind for o in outcomes.values() if isinstance(o.error, BatchLineError)} == {
        "model_not_found"
    }


def test_a_line_out_of_attempts_ends_with_an_error_naming_the_cause() -> None:
    """Expired each time: a BatchLineError naming batch_expired; 5xx each time: exhausted."""
    expired = final_error(read_record(record(None, error={"code": EXPIRED})), 3, "b9")
    assert isinstance(expired, BatchLineError)
    assert (expired.kind, expired.attempts, expired.batch_id) == (EXPIRED, 3, "b9")
    assert "after 3 batches" in str(expired)
    failing = final_error(read_record(record(503, {"error": {"message": "x"}})), 3, "b9")
    assert isinstance(failing, RetryExhaustedError)
    assert failing.attempts == 3
    cut = final_error(not_run("b9", "cancelled"), 2, "b9")
    assert isinstance(cut, BatchLineError)
    assert cut.kind == NOT_RUN
    assert "cancelled" in str(cut)


def test_a_line_refused_alone_ends_only_over_the_stated_limit() -> None:
    """Alone over the server's stated limit: it never fits; else the refusal is an attempt."""
    over = LearningStep("m", "batch_1", 900, None, 500, tokens=900, stated=500)
    unstated = LearningStep("m", "batch_2", 900, None, 720, tokens=900)
    ended, again = one_line_refused(over, 7), one_line_refused(unstated, 7)
    assert ended.retry is None
    assert isinstance(ended.error, BatchLineError)
    assert ended.error.kind == LINE_TOO_LARGE
    assert "500" in str(ended.error)
    assert again.retry == TOKEN_LIMIT
