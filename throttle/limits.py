"""What one bucket key may send now: learned limits, corrected levels, cautious probing.

Pure: every method takes ``now`` and nothing sleeps. The async queue in ``admission`` asks
:meth:`KeyLimits.try_admit` and waits as long as it answers.

How the level is corrected: the server writes ``x-ratelimit-remaining-*`` right after counting
the request it answers. Requests admitted after that one were not yet counted, so the level now
is ``remaining + refill since then - what was admitted since``. A running total of admitted
units (the ledger) makes "admitted since" one subtraction, and answers that arrive out of order
are ignored when a later-admitted request's answer was already applied.

The token scale that multiplies estimates is learned by ``calibration``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from throttle.bucket import Bucket
from throttle.calibration import calibrated_scale
from throttle.errors import ConfigurationError, RequestTooLargeError
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.reservation import Cost, Ticket

DEFAULT_WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits the user knows, used as ceilings over what the server reports.

    The windows also say how to read the server's own limit headers: a bucket of ``limit``
    per window refills at ``limit / window`` per second.

    Attributes:
        rpm: requests per requests window, or ``None`` to learn it.
        tpm: tokens per tokens window, or ``None`` to learn it.
        requests_window_seconds: how long the requests bucket takes to refill (60 for OpenAI's
            per-minute limits; Groq's ``*-requests`` headers count per day: 86,400).
        tokens_window_seconds: the same for the tokens bucket.
    """

    rpm: float | None = None
    tpm: float | None = None
    requests_window_seconds: float = DEFAULT_WINDOW_SECONDS
    tokens_window_seconds: float = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "requests_window_seconds", "tokens_window_seconds"):
            value = getattr(self, name)
            required = name.endswith("seconds")
            if (value is not None or required) and (not math.isfinite(value) or value <= 0):
                raise ConfigurationError(f"Limits.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """How cautiously to admit.

    Attributes:
        reserve_fraction: part of each bucket's capacity kept in hand against the noise in
            estimates and answers still in flight (0.01 of a minute's budget is 0.6 s of
            refill, paid once per job, not per request). Systematic estimate errors are
            learned separately (see the module docstring).
        probe_concurrency: requests in flight on a key before its limits are known.
        blind_after: answers without rate-limit headers after which a key stops probing and
            runs on the configured limits alone (an answer that succeeded counts at once).
    """

    reserve_fraction: float = 0.01
    probe_concurrency: int = 1
    blind_after: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.reserve_fraction < 1:
            raise ConfigurationError(f"reserve_fraction must be in [0, 1): {self.reserve_fraction}")
        if self.probe_concurrency < 1 or self.blind_after < 1:
            raise ConfigurationError("probe_concurrency and blind_after must be at least 1")


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
        self._estimates_ledger = 0.0
        self._uncharged_estimates = 0.0  # admitted, but failed: the server charged nothing
        self._applied = (0.0, 0.0, 0.0)  # tokens, estimates and uncharged ledgers at correction
        self._answers_without_headers = 0
        self.token_scale = 1.0

    def __repr__(self) -> str:
        return (
            f"KeyLimits({self.phase}, requests={self.requests!r}, tokens={self.tokens!r}, "
            f"in_flight={self.in_flight}, token_scale={self.token_scale:.3f}, "
            f"cool_down_until={self.cool_down_until:.3f})"
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
        tokens = cost.tokens * self.token_scale
        wait = max(
            self._seconds_until(self.requests, cost.requests, cost.requests, now),
            self._seconds_until(self.tokens, cost.tokens, tokens, now),
        )
        if wait > 0:
            return wait
        for bucket, amount in ((self.requests, cost.requests), (self.tokens, tokens)):
            if bucket is not None:
                bucket.take(amount, now)
        self._requests_ledger += cost.requests
        self._tokens_ledger += tokens
        self._estimates_ledger += cost.tokens
        self.in_flight += 1
        self._next_seq += 1
        return Ticket(
            self._next_seq,
            now,
            cost,
            self._requests_ledger,
            self._tokens_ledger,
            self._estimates_ledger,
            probing,
        )

    def _seconds_until(
        self, bucket: Bucket | None, estimate: float, amount: float, now: float
    ) -> float:
        """Seconds until ``amount`` (``estimate`` calibrated) plus the reserve is available."""
        if bucket is None:
            return 0.0
        if estimate > bucket.capacity:
            raise RequestTooLargeError(
                f"request needs {estimate:g} but the whole bucket holds {bucket.capacity:g} "
                f"per {bucket.window:g}s: it can never be sent",
                requested=estimate,
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
        if not succeeded:
            self._uncharged_estimates += ticket.cost.tokens
        if snapshot is not None and ticket.seq > self._applied_seq:
            self._applied_seq = ticket.seq
            predicted = self._level(self.tokens, now)
            self.requests = self._corrected(
                self.requests,
                snapshot.requests,
                ceiling=self.ceiling.rpm,
                window=self.ceiling.requests_window_seconds,
                admitted_since=self._requests_ledger - ticket.requests_ledger,
                ticket=ticket,
                now=now,
            )
            self.tokens = self._corrected(
                self.tokens,
                snapshot.tokens,
                ceiling=self.ceiling.tpm,
                window=self.ceiling.tokens_window_seconds,
                admitted_since=self._tokens_ledger - ticket.tokens_ledger,
                ticket=ticket,
                now=now,
            )
            if predicted is not None and self.tokens is not None:
                tokens_then, estimates_then, uncharged_then = self._applied
                self.token_scale = calibrated_scale(
                    self.token_scale,
                    predicted,
                    (self.tokens.capacity, self.tokens.level),
                    debited=ticket.tokens_ledger - tokens_then,
                    estimated=(ticket.estimates_ledger - estimates_then)
                    - (self._uncharged_estimates - uncharged_then),
                )
            self._applied = (
                ticket.tokens_ledger,
                ticket.estimates_ledger,
                self._uncharged_estimates,
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
        window: float,
        admitted_since: float,
        ticket: Ticket,
        now: float,
    ) -> Bucket | None:
        """Return the bucket as the server described it, less what was admitted since."""
        if reading is None:
            if bucket is None and ceiling is not None:
                return Bucket(ceiling, window, 0.0, now)
            return bucket
        capacity = reading.limit if ceiling is None else min(reading.limit, ceiling)
        at_answer = Bucket(capacity, window, min(reading.remaining, capacity), ticket.admitted_at)
        at_answer.refill(now)
        level = at_answer.level - admitted_since
        if bucket is None:
            return Bucket(capacity, window, level, now)
        bucket.resync(capacity=capacity, level=level, now=now)
        return bucket

    @staticmethod
    def _level(bucket: Bucket | None, now: float) -> tuple[float, float] | None:
        """Return (capacity, level at ``now``) as the model believes, or ``None``."""
        if bucket is None:
            return None
        bucket.refill(now)
        return bucket.capacity, bucket.level

    def _go_blind(self, now: float) -> None:
        self.phase = Phase.BLIND
        ceiling = self.ceiling
        # Start empty: other traffic may have drained the server's bucket already.
        if ceiling.rpm is not None:
            self.requests = Bucket(ceiling.rpm, ceiling.requests_window_seconds, 0.0, now)
        if ceiling.tpm is not None:
            self.tokens = Bucket(ceiling.tpm, ceiling.tokens_window_seconds, 0.0, now)

    def cool_down(self, until: float) -> None:
        """Admit nothing on this key before ``until`` (the server asked us to wait)."""
        self.cool_down_until = max(self.cool_down_until, until)
