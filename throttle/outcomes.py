"""How a request ended and why an answer was a 429, in the few words metrics and logs use.

An error's class says it exactly; these bounded names group the classes (a metric label must
take few values, and dashboards must not change when an error class is added).
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from throttle.errors import (
    APIStatusError,
    BackendUnavailableError,
    ClosedError,
    DeadlineExceededError,
    InvalidRequestError,
    JobAbortedError,
    QuotaExhaustedError,
    RateLimitError,
    RequestTooLargeError,
    RetryExhaustedError,
    ServerError,
    TransportError,
)


class RequestOutcome(StrEnum):
    """How a request ended, for good."""

    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    TRANSPORT_ERROR = "transport_error"
    GAVE_UP = "gave_up"
    TOO_LARGE = "too_large"
    CANCELLED = "cancelled"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    OTHER_ERROR = "other_error"


# Most specific first: a subclass before its base class.
_OUTCOMES: tuple[tuple[type[BaseException], RequestOutcome], ...] = (
    (QuotaExhaustedError, RequestOutcome.QUOTA_EXHAUSTED),
    (RateLimitError, RequestOutcome.RATE_LIMITED),
    (ServerError, RequestOutcome.SERVER_ERROR),
    (APIStatusError, RequestOutcome.CLIENT_ERROR),
    (InvalidRequestError, RequestOutcome.CLIENT_ERROR),
    (RequestTooLargeError, RequestOutcome.TOO_LARGE),
    (TransportError, RequestOutcome.TRANSPORT_ERROR),
    (RetryExhaustedError, RequestOutcome.GAVE_UP),
    (DeadlineExceededError, RequestOutcome.GAVE_UP),
    (BackendUnavailableError, RequestOutcome.BACKEND_UNAVAILABLE),
    (ClosedError, RequestOutcome.CANCELLED),
    (JobAbortedError, RequestOutcome.CANCELLED),
    (asyncio.CancelledError, RequestOutcome.CANCELLED),
)


def outcome_of(error: BaseException | None) -> RequestOutcome:
    """Return how a request that ended with ``error`` (``None``: its answer) ended."""
    if error is None:
        return RequestOutcome.SUCCESS
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return RequestOutcome.OTHER_ERROR


def rate_limit_kind(error: RateLimitError) -> str:
    """Which limit a 429 ``rate_limit_exceeded`` names.

    Returns:
        ``"requests"``, ``"tokens"``, ``"daily"`` (requests or tokens per day),
        ``"slow_down"`` (traffic grew too fast) or ``"unknown"``.
    """
    if error.slow_down:
        return "slow_down"
    if error.limit_type in ("requests", "tokens"):
        return error.limit_type
    if error.limit_type is not None and error.limit_type.endswith("_per_day"):
        return "daily"
    return "unknown"
