"""What travels to and from ``limits.lua``: numbers as strings (``repr`` in, "%.17g" out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from throttle.errors import ErrorDetails, QuotaExhaustedError, RequestTooLargeError
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.reservation import Admissions, Cost, Ticket


def text(value: bytes | str | int) -> str:
    """Return a reply field as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def number(value: bytes | str | int) -> float:
    """Return a reply field as a number."""
    return float(text(value))


def tickets_of(fields: Sequence[Any], costs: Sequence[Cost]) -> list[Ticket]:
    """Build the tickets of an ``admit`` reply, one per six fields, for the first costs.

    The fields of each: seq, admitted_at, the three ledgers, probe (1 or 0).
    """
    tickets = []
    for at, cost in zip(range(0, len(fields), 6), costs, strict=False):
        seq, admitted_at, requests_ledger, tokens_ledger, estimates_ledger, probe = (
            number(value) for value in fields[at : at + 6]
        )
        tickets.append(
            Ticket(
                int(seq),
                admitted_at,
                cost,
                requests_ledger,
                tokens_ledger,
                estimates_ledger,
                probe == 1,
            )
        )
    return tickets


def too_large_error(reply: Sequence[Any]) -> RequestTooLargeError:
    """The error of a ``{"too_large", requested, limit, window}`` reply."""
    requested, limit, window = (number(value) for value in reply[1:4])
    return RequestTooLargeError(
        f"request needs {requested:g} but the whole bucket holds {limit:g} "
        f"per {window:g}s: it can never be sent",
        requested=requested,
        limit=limit,
    )


def details_of(fields: Sequence[Any]) -> ErrorDetails:
    """Read the server's error back from ``breaker_args`` order (a reply, or a message)."""
    status, code, type_, message, request_id = (text(field) for field in fields)
    return ErrorDetails(
        int(status or 429), code or None, type_ or None, message, request_id or None
    )


def quota_error(reply: Sequence[Any]) -> QuotaExhaustedError:
    """The error of a ``{"quota", status, code, type, message, request_id}`` reply."""
    return QuotaExhaustedError(details_of(reply[1:6]))


def _reading_args(reading: LimitReading | None) -> list[str]:
    return ["", ""] if reading is None else [repr(reading.limit), repr(reading.remaining)]


def complete_args(
    ticket: Ticket,
    snapshot: RateLimitSnapshot | None,
    ceiling: Limits,
    *,
    answered: bool,
    succeeded: bool,
) -> list[str]:
    """The arguments of the ``complete`` operation, in the order ``limits.lua`` reads them."""
    return [
        str(ticket.seq),
        repr(ticket.admitted_at),
        repr(ticket.cost.tokens),
        repr(ticket.requests_ledger),
        repr(ticket.tokens_ledger),
        repr(ticket.estimates_ledger),
        "1" if answered else "0",
        "1" if succeeded else "0",
        *_reading_args(snapshot.requests if snapshot else None),
        *_reading_args(snapshot.tokens if snapshot else None),
        "" if ceiling.rpm is None else repr(ceiling.rpm),
        "" if ceiling.tpm is None else repr(ceiling.tpm),
        repr(ceiling.requests_window_seconds),
        repr(ceiling.tokens_window_seconds),
    ]


def policy_args(policy: AdmissionPolicy) -> list[str]:
    """The admission policy, in the order ``limits.lua`` reads it (ARGV[7..10])."""
    return [
        repr(policy.reserve_fraction),
        str(policy.probe_concurrency),
        repr(policy.lease_seconds),
        str(policy.blind_after),
    ]


def admit_args(costs: Sequence[Cost]) -> list[str]:
    """The arguments of the ``admit`` operation: tokens and requests of each cost."""
    return [repr(amount) for cost in costs for amount in (cost.tokens, cost.requests)]


def admissions_of(reply: Sequence[Any], costs: Sequence[Cost], longest_wait: float) -> Admissions:
    """Read an ``admit`` reply ``{tickets, stop}``; a wait is at most ``longest_wait``.

    Raises:
        RequestTooLargeError: the first cost exceeds the whole bucket.
        QuotaExhaustedError: the identity's breaker is open.
    """
    tickets, stop = tickets_of(reply[0], costs), reply[1]
    kind = text(stop[0]) if stop else ""
    if kind == "wait":
        return Admissions(tickets, min(number(stop[1]), longest_wait))
    if kind == "quota":
        raise quota_error(stop)
    if kind == "too_large" and not tickets:
        raise too_large_error(stop)
    return Admissions(tickets)


def breaker_args(details: ErrorDetails) -> list[str]:
    """The arguments of the ``open_breaker`` operation: what the server said."""
    return [
        str(details.status),
        details.code or "",
        details.type or "",
        details.message,
        details.request_id or "",
    ]
