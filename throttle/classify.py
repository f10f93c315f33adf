"""Classifying a server's answer: what happened, and whether retrying can help.

OpenAI-protocol specific but transport-agnostic: adapters for aiohttp, httpx and the SDK all
hand the status, headers and decoded body here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from throttle.durations import parse_duration
from throttle.errors import (
    APIStatusError,
    CapacityUnavailableError,
    ErrorDetails,
    QuotaExhaustedError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
    ThrottleError,
)
from throttle.headers import parse_retry_after, parse_should_retry, request_id_of

BILLING_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_hard_limit_reached",
        "credit_balance_exhausted",
        "organization_usage_limit_exceeded",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
    }
)
RETRYABLE_STATUSES = frozenset({408, 409, 529})
_TRY_AGAIN = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?\s*(?:ms|h|m|s)\s*)+)", re.IGNORECASE)
_RETRY_AFTER_SECONDS = re.compile(r"retry after\s+(\d+(?:\.\d+)?)\s+seconds?", re.IGNORECASE)
_LIMIT_KIND = re.compile(r"on (tokens|requests) per (min|day)", re.IGNORECASE)
# A count starts with a digit: "Limit ,, Requested 1" names no count at all.
_TOO_LARGE = re.compile(r"Limit\s+(\d[\d,]*)\s*,\s*Requested\s+(\d[\d,]*)", re.IGNORECASE)


class Verdict(StrEnum):
    """What kind of answer a request got."""

    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    TOO_LARGE = "too_large"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    TRANSPORT_ERROR = "transport_error"


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one answer.

    Attributes:
        verdict: what happened.
        error: the error to raise, ``None`` on success; ``error.retryable`` says whether
            another attempt can help.
    """

    verdict: Verdict
    error: ThrottleError | None = None


SUCCESS = Classification(Verdict.SUCCESS)


def decode_body(raw: bytes) -> object:
    """Return a response body as :func:`classify_response` reads it: JSON, else its text."""
    try:
        decoded: object = json.loads(raw)
    except (ValueError, RecursionError):
        # RecursionError: a body nested past the decoder's limit is still readable as text.
        return raw.decode("utf-8", "replace")
    return decoded


def _field_text(value: object) -> str | None:
    """Return an error field as text; a value too deep or too big to print is its type name."""
    if value is None:
        return None
    try:
        return str(value)
    except (ValueError, RecursionError):
        # ValueError: an int past Python's digit limit; RecursionError: a list nested deeper
        # than the interpreter can print. Classifying must never fail on a server's body.
        return type(value).__name__


def _error_fields(body: object) -> tuple[str | None, str | None, str]:
    """Return (code, type, message) from an OpenAI, Azure or Anthropic-style error body."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        code, kind, message = error.get("code"), error.get("type"), error.get("message")
        return (
            _field_text(code),
            _field_text(kind),
            message if isinstance(message, str) else "",
        )
    if isinstance(body, str):
        return None, None, body.strip()[:500]
    return None, None, ""


def retry_delay_from_message(message: str) -> float | None:
    """Read "Please try again in 1.146s" or Azure's "retry after 60 seconds" from a message.

    Args:
        message: the server's error message.

    Returns:
        Seconds to wait (finite, non-negative), or ``None`` when the message names no delay
        or one too big to be a float.
    """
    match = _TRY_AGAIN.search(message) or _RETRY_AFTER_SECONDS.search(message)
    if not match:
        return None
    try:
        return parse_duration(match.group(1).strip())
    except ValueError:
        return None


def _limit_type(kind: str | None, message: str) -> str | None:
    match = _LIMIT_KIND.search(message)
    if match:
        unit, period = match.group(1).lower(), match.group(2).lower()
        return unit if period == "min" else f"{unit}_per_day"
    return kind if kind in ("tokens", "requests") else None


def _token_count(text: str) -> float:
    """Read "50,000" as 50000.0; a count too big to be a float is unknown (0.0)."""
    try:
        count = float(text.replace(",", ""))
    except ValueError:
        return 0.0
    return count if math.isfinite(count) else 0.0


def _capacity_unavailable(code: str | None, kind: str | None, message: str) -> bool:
    """Flex processing's 429 "Resource Unavailable" (in the message, code or type)."""
    named = " ".join(part for part in (code, kind, message[:200]) if part)
    return "resource unavailable" in named.replace("_", " ").lower()


def _too_large(details: ErrorDetails) -> RequestTooLargeError:
    match = _TOO_LARGE.search(details.message)
    limit, requested = (
        (_token_count(match.group(1)), _token_count(match.group(2))) if match else (0.0, 0.0)
    )
    return RequestTooLargeError(
        f"request is larger than the whole bucket: {details.describe()}",
        requested=requested,
        limit=limit,
        details=details,
    )


def classify_response(status: int, headers: Mapping[str, str], body: object) -> Classification:
    """Decide what a response means and whether to retry it.

    Args:
        status: HTTP status code.
        headers: response headers (any case).
        body: the decoded JSON body, or its text when it was not JSON.

    Returns:
        The classification; ``error`` holds the exception to raise when it is not a success.
        Never raises, whatever the status, headers or body: a server's answer, however
        malformed, is classified (at worst as a client or server error with no delay).
    """
    if 200 <= status < 300:
        return SUCCESS
    code, kind, message = _error_fields(body)
    details = ErrorDetails(status, code, kind, message, request_id_of(headers))
    retry_after = parse_retry_after(headers)
    if retry_after is None:
        retry_after = retry_delay_from_message(message)
    if status == 429 and (
        kind in BILLING_CODES or code in BILLING_CODES or "exceeded your current quota" in message
    ):
        return Classification(Verdict.QUOTA_EXHAUSTED, QuotaExhaustedError(details))
    if status == 429 and message.startswith("Request too large"):
        return Classification(Verdict.TOO_LARGE, _too_large(details))
    if status == 429 and _capacity_unavailable(code, kind, message):
        unavailable = CapacityUnavailableError(details, retry_after=retry_after)
        unavailable.retryable = parse_should_retry(headers) is not False
        return Classification(Verdict.SERVER_ERROR, unavailable)
    slow_down = code == "slow_down" or (status == 503 and message.startswith("Slow Down"))
    if status == 429 or slow_down:
        limit_type = _limit_type(kind, message)
        limited = RateLimitError(
            details, retry_after=retry_after, limit_type=limit_type, slow_down=slow_down
        )
        # Only an explicit "false" stops it: a rate limit is retryable by nature.
        limited.retryable = parse_should_retry(headers) is not False
        return Classification(Verdict.RATE_LIMITED, limited)
    server_side = status >= 500 or status in RETRYABLE_STATUSES
    error = (ServerError if server_side else APIStatusError)(details, retry_after=retry_after)
    should_retry = parse_should_retry(headers)
    error.retryable = server_side if should_retry is None else should_retry
    return Classification(Verdict.SERVER_ERROR if server_side else Verdict.CLIENT_ERROR, error)


def verdict_for(error: ThrottleError) -> Verdict:
    """Return the verdict an error stands for (for errors raised by user code in ``run``)."""
    if isinstance(error, RateLimitError):
        return Verdict.RATE_LIMITED
    if isinstance(error, QuotaExhaustedError):
        return Verdict.QUOTA_EXHAUSTED
    if isinstance(error, RequestTooLargeError):
        return Verdict.TOO_LARGE
    if isinstance(error, ServerError):
        return Verdict.SERVER_ERROR
    return Verdict.CLIENT_ERROR
