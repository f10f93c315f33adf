"""A request as the scheduler sees it, and what its attempts have come to so far."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from throttle.answer import Answer
from throttle.errors import ThrottleError
from throttle.estimate import TokenEstimate
from throttle.keys import BucketKey

T = TypeVar("T")
Outcome = Answer[T] | ThrottleError
"""What one attempt produced: the server's answer, or the error when none arrived."""


class ScheduledRequest(NamedTuple, Generic[T]):
    """A request ready for the scheduler.

    A named tuple, not a frozen dataclass: one is made per request, three times as fast.

    Attributes:
        key: the buckets it draws from.
        estimate: its estimated tokens.
        send: sends it once and reads the answer (:func:`throttle.answer.read_answer`);
            raises :class:`TransportError` when no answer arrived.
        priority: smaller goes first.
        deadline: seconds from submission after which it fails, or ``None``.
        client_request_id: the ``X-Client-Request-Id`` that ``send`` sends on every attempt
            (see :mod:`throttle.request_identity`), or ``None``; recorded in events.
    """

    key: BucketKey
    estimate: TokenEstimate
    send: Callable[[], Awaitable[Answer[T]]]
    priority: int = 0
    deadline: float | None = None
    client_request_id: str | None = None


@dataclass(slots=True)
class Attempts:
    """One request's attempts so far, since it was submitted (``started``) as the ``seq``-th."""

    started: float
    seq: int
    count: int = 0
    rate_limited: int = 0  # of them refused by a rate limit: not counted in the budget
    sent_at: float = 0.0
    last_error: ThrottleError | None = None


def error_of(outcome: Outcome[T]) -> ThrottleError | None:
    """Return what failed the attempt: its answer's error, or the error when none arrived."""
    return outcome.error if isinstance(outcome, Answer) else outcome
