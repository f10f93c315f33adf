"""Batch mode's events: each line told to listeners (progress, metrics) as online lines are.

A line is *admitted* when the batch holding it is created, its attempt *finishes* when its
record is read from the batch's output or error file (with the answer's ``usage``), it is
*retried* when it goes into a later batch, and *finished* when it ends. So ``throttle run``'s
progress and summary (attempts, answers, tokens charged) and the Prometheus metrics read the
same in both modes. The bucket key names the key's identity and the model, as online.
"""

from __future__ import annotations

from collections.abc import Callable

from throttle.answer import read_usage
from throttle.batch_files import HeldLine
from throttle.batch_outcomes import LineOutcome
from throttle.classify import Verdict, verdict_for
from throttle.errors import APIStatusError, RetryExhaustedError, ThrottleError
from throttle.estimate import TokenEstimate
from throttle.events import (
    AttemptFinished,
    EventHub,
    EventListener,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
    UsageReported,
)
from throttle.keys import BucketKey, credential_identity
from throttle.outcomes import outcome_of


class BatchEvents:
    """Tells listeners what becomes of each line.

    Args:
        api_key: whose lines (only its identity, a hash, is told).
        clock: monotonic seconds.
    """

    def __init__(self, api_key: str | None, clock: Callable[[], float]) -> None:
        self._identity = credential_identity(api_key) if api_key else "anonymous"
        self._clock = clock
        self._hub = EventHub()
        self._keys: dict[str, BucketKey] = {}

    def __repr__(self) -> str:
        return f"BatchEvents({self._identity}, {self._hub!r})"

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Tell ``listener`` every event; return the unsubscriber."""
        return self._hub.subscribe(listener)

    def _key(self, model: str) -> BucketKey:
        key = self._keys.get(model)
        if key is None:
            key = self._keys[model] = BucketKey(self._identity, model)
        return key

    def admitted(self, held: HeldLine, arrived: float) -> None:
        """The batch holding ``held`` was created (or found, after a crash)."""
        now = self._clock()
        held.sent_at = now
        self._hub.emit(
            RequestAdmitted(
                self._key(held.model),
                held.attempts + 1,
                TokenEstimate(held.tokens, 0),
                now - arrived,
            )
        )

    def answered(self, held: HeldLine, outcome: LineOutcome) -> None:
        """The line's record was read: its attempt finished (and its usage is known)."""
        key, error = self._key(held.model), outcome.error
        status = 200 if error is None else _status(error)
        verdict = Verdict.SUCCESS if error is None else verdict_for(error)
        latency = self._clock() - held.sent_at if held.sent_at is not None else 0.0
        self._hub.emit(AttemptFinished(key, held.attempts + 1, verdict, status, latency))
        body = outcome.response
        usage = read_usage(body.get("usage")) if isinstance(body, dict) else None
        if usage is not None:
            self._hub.emit(
                UsageReported(key, usage.prompt_tokens, usage.completion_tokens, held.tokens)
            )

    def retried(self, held: HeldLine, reason: str) -> None:
        """The line goes into a later batch."""
        self._hub.emit(RetryScheduled(self._key(held.model), held.attempts, 0.0, reason))

    def finished(self, held: HeldLine, error: ThrottleError | None, arrived: float) -> None:
        """The line ended, with its answer or ``error``."""
        self._hub.emit(
            RequestFinished(
                self._key(held.model),
                max(held.attempts, 1),
                None if error is None else type(error).__name__,
                self._clock() - arrived,
                outcome_of(error),
                held.line.client_request_id,
            )
        )


def _status(error: ThrottleError) -> int | None:
    """The HTTP status an error's answer had, ``None`` when there was no answer."""
    cause = error.last_error if isinstance(error, RetryExhaustedError) else error
    return cause.status if isinstance(cause, APIStatusError) else None
