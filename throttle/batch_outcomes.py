"""What a finished batch says about each of its lines: an answer, an error, or "try again".

And, for the whole job, which failures of the API end it at once (:func:`abort_reason`).

A line's fate comes from one record of the batch's output or error file (joined on its
``custom_id``), from the batch's validation errors when it failed, or from its absence (a
cancel drops the lines not yet run). Each becomes a :class:`LineOutcome`: a response, a final
error, or a reason to put the line into a later batch (it expired, met a 5xx or a 429, or its
batch stopped before reaching it). Pure: the same records give the same outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from throttle.batch_budget import LearningStep
from throttle.classify import classify_response
from throttle.errors import (
    APIStatusError,
    BatchLineError,
    QuotaExhaustedError,
    RetryExhaustedError,
    ThrottleError,
)
from throttle.setup_check import setup_problem

EXPIRED = "batch_expired"
LINE_TOO_LARGE = "line_too_large"  # a line no batch can hold
TOKEN_LIMIT = "token_limit_exceeded"  # noqa: S105 - an error code, not a secret
NOT_RUN = "not_run"  # the batch stopped (a cancel) before it ran the line
RETRY_BATCH_FAILED = "batch_failed"  # another line of its file failed the batch's validation


@dataclass(frozen=True, slots=True)
class LineOutcome:
    """How one line came out of one batch.

    Attributes:
        response: the answer's body, on success.
        error: the error: final when ``retry`` is ``None``, else the one to report if no
            later batch does better.
        retry: why the line goes into a later batch (``batch_expired``, a status's code,
            ...), or ``None`` when this outcome ends it.
    """

    response: Any = None
    error: ThrottleError | None = None
    retry: str | None = None


def read_record(record: Mapping[str, Any]) -> LineOutcome:
    """Return the outcome one output or error file record tells of its line.

    Args:
        record: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
            "error": {"code", "message"}}``.
    """
    error = record.get("error")
    if isinstance(error, Mapping):
        code = str(error.get("code") or "batch_error")
        message = str(error.get("message") or code)
        problem = BatchLineError(f"{code}: {message}", code, attempts=1)
        return LineOutcome(error=problem, retry=code if code == EXPIRED else None)
    response = record.get("response")
    if not isinstance(response, Mapping) or not isinstance(response.get("status_code"), int):
        problem = BatchLineError("the batch returned neither a response nor an error", NOT_RUN)
        return LineOutcome(error=problem, retry=NOT_RUN)
    status: int = response["status_code"]
    body = response.get("body")
    if 200 <= status < 300:
        return LineOutcome(response=body)
    request_id = response.get("request_id")
    headers = {"x-request-id": request_id} if isinstance(request_id, str) else {}
    failure = classify_response(status, headers, body).error
    assert failure is not None  # noqa: S101 - a status outside 2xx always classifies as one
    failure.attempts = 1
    if failure.retryable:
        return LineOutcome(error=failure, retry=failure.__class__.__name__)
    return LineOutcome(error=failure)


def not_run(batch_id: str, status: str) -> LineOutcome:
    """The outcome of a line its ``status`` batch (cancelled, expired, ...) never ran."""
    problem = BatchLineError(
        f"batch {batch_id} ended {status} without running it", NOT_RUN, batch_id=batch_id
    )
    return LineOutcome(error=problem, retry=NOT_RUN)


def failed_batch(
    batch_id: str, errors: Sequence[Mapping[str, Any]], indexes: Sequence[int]
) -> dict[int, LineOutcome]:
    """Return each line's outcome when validation failed a batch (not over the token limit).

    A line an error names (``line``, 1-based in the file) ends with that error; the others
    go into a later batch when some error named a line (they were not at fault), and end
    with the first error otherwise (it was the whole batch's: a model it cannot run, ...).

    Args:
        batch_id: the failed batch.
        errors: its ``errors.data``.
        indexes: its file's lines' indexes, in file order.
    """
    named: dict[int, LineOutcome] = {}
    for error in errors:
        line = error.get("line")
        if isinstance(line, int) and 1 <= line <= len(indexes):
            problem = _validation_error(batch_id, error)
            named.setdefault(indexes[line - 1], LineOutcome(error=problem))
    if named:
        innocent = BatchLineError(
            f"batch {batch_id} failed validation over another line",
            RETRY_BATCH_FAILED,
            batch_id=batch_id,
        )
        rest = LineOutcome(error=innocent, retry=RETRY_BATCH_FAILED)
    else:
        rest = LineOutcome(error=_validation_error(batch_id, errors[0] if errors else {}))
    return {index: named.get(index, rest) for index in indexes}


def _validation_error(batch_id: str, error: Mapping[str, Any]) -> BatchLineError:
    code = str(error.get("code") or "batch_failed")
    message = str(error.get("message") or "the batch failed validation")
    return BatchLineError(f"batch {batch_id} failed: {code}: {message}", code, batch_id=batch_id)


def one_line_refused(lesson: LearningStep, index: int) -> LineOutcome:
    """The outcome of a line whose batch, holding it alone, went over the enqueued limit.

    It ends when the server's stated limit is below its estimated tokens (it never fits);
    otherwise the refusal is one of its attempts (a later batch may pass).
    """
    if lesson.too_large:
        why = (
            f"line {index} cannot go into a batch: alone it needs ~{lesson.tokens:,} enqueued "
            f"tokens, more than {lesson.model}'s limit of {lesson.stated:,} the server states"
        )
        return LineOutcome(error=BatchLineError(why, LINE_TOO_LARGE, batch_id=lesson.batch_id))
    why = f"batch {lesson.batch_id} of line {index} alone went over {lesson.model}'s limit"
    error = BatchLineError(why, TOKEN_LIMIT, batch_id=lesson.batch_id)
    return LineOutcome(error=error, retry=TOKEN_LIMIT)


def final_error(outcome: LineOutcome, attempts: int, batch_id: str | None) -> ThrottleError:
    """The error that ends a line whose last outcome still asked for a retry.

    Args:
        outcome: the line's last outcome (``retry`` set).
        attempts: the batches the line was in.
        batch_id: the last of them.
    """
    error = outcome.error
    if error is not None and not isinstance(error, BatchLineError):
        return RetryExhaustedError(error, attempts)  # a 5xx or 429 each time
    cause = outcome.retry or NOT_RUN
    why = str(error) if error is not None else cause
    return BatchLineError(
        f"no answer after {attempts} batches; last: {why}",
        cause,
        batch_id=batch_id,
        attempts=attempts,
    )


def abort_reason(error: ThrottleError, *, proven: bool, api_root: str) -> str | None:
    """Say why ``error`` ends the whole job (no batch can be made or read), else ``None``.

    A rejected key (401, 403) or exhausted quota does, always; a wrong URL (no server, no
    such endpoint) does until some call has succeeded (``proven``).
    """
    last = error.last_error if isinstance(error, RetryExhaustedError) else error
    if isinstance(last, APIStatusError) and last.status in (401, 403):
        return f"the server rejected the key: {last}; fix it and run the same command again"
    if isinstance(last, QuotaExhaustedError):
        return f"out of quota: {last}; run the same command again once it is restored"
    problem = None if proven else setup_problem(error)
    if problem is None:
        return None
    return (
        f"{problem} at {api_root}: check --url (the API's base URL, such as "
        "https://api.openai.com/v1) and run the same command again"
    )
