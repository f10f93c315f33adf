"""Reading the script's replies: numbers travel as strings ("%.17g"), kinds as bulk strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from throttle.errors import ErrorDetails, QuotaExhaustedError, RequestTooLargeError
from throttle.reservation import Cost, Ticket


def text(value: bytes | str | int) -> str:
    """Return a reply field as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def number(value: bytes | str | int) -> float:
    """Return a reply field as a number."""
    return float(text(value))


def ticket_of(reply: Sequence[Any], cost: Cost) -> Ticket:
    """Build the ticket of an ``admit`` reply ``{"ticket", seq, admitted_at, ledgers.., probe}``."""
    seq, admitted_at, requests_ledger, tokens_ledger, estimates_ledger = (
        number(value) for value in reply[1:6]
    )
    probe = number(reply[6]) == 1
    return Ticket(
        int(seq), admitted_at, cost, requests_ledger, tokens_ledger, estimates_ledger, probe
    )


def too_large_error(reply: Sequence[Any]) -> RequestTooLargeError:
    """The error of a ``{"too_large", requested, limit, window}`` reply."""
    requested, limit, window = (number(value) for value in reply[1:4])
    return RequestTooLargeError(
        f"request needs {requested:g} but the whole bucket holds {limit:g} "
        f"per {window:g}s: it can never be sent",
        requested=requested,
        limit=limit,
    )


def quota_error(reply: Sequence[Any]) -> QuotaExhaustedError:
    """The error of a ``{"quota", status, code, type, message, request_id}`` reply."""
    status, code, type_, message, request_id = (text(field) for field in reply[1:6])
    details = ErrorDetails(
        int(status or 429), code or None, type_ or None, message, request_id or None
    )
    return QuotaExhaustedError(details)
