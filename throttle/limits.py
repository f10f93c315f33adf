"""What one bucket key may send now: learned limits, corrected levels, cautious probing.

Pure: every method takes ``now`` and nothing sleeps. The async queue in ``admission`` asks
:meth:`KeyLimits.try_admit` and waits as long as it answers.

How the level is corrected: the server writes ``x-ratelimit-remaining-*`` right after counting
the request it answers. Requests admitted after that one were not yet counted, so the level now
is ``remaining + refill since then - what was admitted since``. A running total of admitted
units (the ledger) makes "admitted since" one subtraction, and answers that arrive out of order
are ignored when a later-admitted request's answer was already applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from throttle.bucket import Bucket
from throttle.errors import ConfigurationError, RequestTooLargeError
from throttle.headers import LimitReading, RateLimitSnapshot

DEFAULT_WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits the user knows, used as ceilings over what the server reports.

    Attributes:
        rpm: requests per window, or ``None`` to learn it.
        tpm: tokens per window, or ``None`` to learn it.
        window_seconds: how long the server's buckets take to refill (60 for OpenAI's per-minute
            limits; Groq counts requests per day: 86,400).
    """

    rpm: float | None = None
    tpm: float | None = None
    window_seconds: float = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigurationError(f"Limits.{name} must be a positive number, got {value!r}")
        if not math.isfinite(self.window_seconds) or self.window_seconds <= 0:
            raise ConfigurationError(
                f"Limits.window_seconds must be positive: {self.window_seconds}"
            )


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """How cautiously to admit.

    Attributes:
        reserve_fraction: part of each bucket's capacity kept in hand against estimate errors
            and answers still in flight (0.02 of a minute's budget is 1.2 s of refill: paid
            once per job, not per request).
        probe_concurrency: requests in flight on a key before its limits are known.
        blind_after: answers without rate-limit headers after which a key stops probing and
            runs on the configured limits alone (an answer that succeeded counts at once).
    """

    reserve_fraction: float = 0.02
    probe_concurrency: int = 1
    blind_after: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.reserve_fraction < 1:
            raise ConfigurationError(f"reserve_fraction must be in [0, 1): {self.reserve_fraction}")
        if self.probe_concurrency < 1 or self.blind_after < 1:
            raise ConfigurationError("probe_concurrency and blind_after must be at least 1")


@dataclass(frozen=True, slots=True)
class Cost:
    """What one attempt draws from the buckets: 1 request and its estimated tokens."""

    tokens: float
    requests: float = 1.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof that an attempt was admitted, handed back when its answer arrives.

    Attributes:
        seq: admission order on this key.
        admitted_at: clock time of admission, taken as the time the server counted it.
        cost: what it drew.
        requests_ledger: running total of requests admitted on the key, this one included.
        tokens_ledger: running total of tokens admitted on the key, this one included.
        probe: admitted while the key's limits were unknown.
    """

    seq: int
    admitted_at: float
    cost: Cost
    requests_ledger: float
    tokens_ledger: float
    probe: bool


class Phase(StrEnum):
    """How much a key knows about its limits."""

    PROBING = "probing"  # nothing yet: one request at a time, the bucket may be drained
    LEARNED = "learned"  # headers seen: pace by the corrected buckets
    BLIND = "blind"  # the server sends no headers: configured limits only


class KeyLimits:
    """The requests and tokens buckets of one key, learned and corrected from headers.

    Args:
        ceiling: configured limits; learned limits never exceed them.
        policy: how cautiously to admit.
    """

    def __init__(self, ceiling: Limits, policy: AdmissionPolicy) -> None:
        self.ceiling = ceiling
        self.policy = policy
        self.phase = Phase.PROBING
        self.requests: Bucket | None = None
        self.tokens: Bucket | None = None
        self.cool_down_until = -math.inf
        self.in_flight = 0
        self._next_seq = 0
        self._requests_ledger = 0.0
        self._tokens_ledger = 0.0
        self._applied_seq = -1
        self._answers_without_headers = 0

    def __repr__(self) -> str:
        return (
            f"KeyLimits({self.phase}, requests={self.requests!r}, tokens={self.tokens!r}, "
            f"in_flight={self.in_flight}, cool_down_until={self.cool_down_until:.3f})"
        )

    def try_admit(self, cost: Cost, now: float) -> Ticket | float:
        """Admit ``cost`` now, or say how long to wait.

        Returns:
            A ticket (the buckets are charged), or seconds to wait before asking again;
            ``inf`` means "until an answer arrives".

        Raises:
            RequestTooLargeError: the cost exceeds a known bucket's whole capacity.
        """
        if now < self.cool_down_until:
            return self.cool_down_until - now
        probing = self.phase is Phase.PROBING
        if probing and self.in_flight >= self.policy.probe_concurrency:
            return math.inf
        wait = max(
            self._seconds_until(self.requests, cost.requests, now),
            self._seconds_until(self.tokens, cost.tokens, now),
        )
        if wait > 0:
            return wait
        for bucket, amount in ((self.requests, cost.requests), (self.tokens, cost.tokens)):
            if bucket is not None:
                bucket.take(amount, now)
        self._requests_ledger += cost.requests
        self._tokens_ledger += cost.tokens
        self.in_flight += 1
        self._next_seq += 1
        return Ticket(
            self._next_seq, now, cost, self._requests_ledger, self._tokens_ledger, probing
        )

    def _seconds_until(self, bucket: Bucket | None, amount: float, now: float) -> float:
        if bucket is None:
            return 0.0
        if amount > bucket.capacity:
            raise RequestTooLargeError(
                f"request needs {amount:g} but the whole bucket holds {bucket.capacity:g} "
                f"per {bucket.window:g}s: it can never be sent",
                requested=amount,
                limit=bucket.capacity,
            )
        reserve = self.policy.reserve_fraction * bucket.capacity
        return bucket.seconds_until(min(amount + reserve, bucket.capacity), now)

    def complete(
        self,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        now: float,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """Hand back a ticket with what its answer said about the buckets.

        Args:
            ticket: from :meth:`try_admit`.
            snapshot: the answer's rate-limit headers, if any.
            now: the current time.
            answered: the server sent an answer (any status).
            succeeded: the answer was a success.

        Returns:
            ``True`` when the snapshot was applied to the buckets.
        """
        self.in_flight -= 1
        if snapshot is not None and ticket.seq > self._applied_seq:
            self._applied_seq = ticket.seq
            self.requests = self._corrected(
                self.requests,
                snapshot.requests,
                ceiling=self.ceiling.rpm,
                admitted_since=self._requests_ledger - ticket.requests_ledger,
                ticket=ticket,
                now=now,
            )
            self.tokens = self._corrected(
                self.tokens,
                snapshot.tokens,
                ceiling=self.ceiling.tpm,
                admitted_since=self._tokens_ledger - ticket.tokens_ledger,
                ticket=ticket,
                now=now,
            )
            self.phase = Phase.LEARNED
            return True
        if snapshot is None and answered and self.phase is Phase.PROBING:
            self._answers_without_headers += 1
            if succeeded or self._answers_without_headers >= self.policy.blind_after:
                self._go_blind(now)
        return False

    def _corrected(
        self,
        bucket: Bucket | None,
        reading: LimitReading | None,
        *,
        ceiling: float | None,
        admitted_since: float,
        ticket: Ticket,
        now: float,
    ) -> Bucket | None:
        """Return the bucket as the server described it, less what was admitted since."""
        if reading is None:
            if bucket is None and ceiling is not None:
                return Bucket(ceiling, self.ceiling.window_seconds, 0.0, now)
            return bucket
        capacity = reading.limit if ceiling is None else min(reading.limit, ceiling)
        window = self.ceiling.window_seconds
        at_answer = Bucket(capacity, window, min(reading.remaining, capacity), ticket.admitted_at)
        at_answer.refill(now)
        level = at_answer.level - admitted_since
        if bucket is None:
            return Bucket(capacity, window, level, now)
        bucket.resync(capacity=capacity, level=level, now=now)
        return bucket

    def _go_blind(self, now: float) -> None:
        self.phase = Phase.BLIND
        window = self.ceiling.window_seconds
        # Start empty: other traffic may have drained the server's bucket already.
        if self.ceiling.rpm is not None:
            self.requests = Bucket(self.ceiling.rpm, window, 0.0, now)
        if self.ceiling.tpm is not None:
            self.tokens = Bucket(self.ceiling.tpm, window, 0.0, now)

    def cool_down(self, until: float) -> None:
        """Admit nothing on this key before ``until`` (the server asked us to wait)."""
        self.cool_down_until = max(self.cool_down_until, until)
