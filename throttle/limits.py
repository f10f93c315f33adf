"""What one bucket key may send now: learned limits, corrected levels, cautious probing.

Pure: every method takes ``now`` and nothing sleeps. The async queue in ``admission`` asks
:meth:`KeyLimits.try_admit` and waits as long as it answers.

How the level is corrected: the server writes ``x-ratelimit-remaining-*`` right after counting
the request it answers. Requests admitted after that one were not yet counted, so the level now
is ``remaining + refill since then - what was admitted since``. A running total of admitted
units (the ledger) makes "admitted since" one subtraction, and answers that arrive out of order
are ignored when a later-admitted request's answer was already applied.

The token scale that multiplies estimates is learned by ``calibration``; the pace that refusals
cut and time restores, by ``pacing``.
"""

from __future__ import annotations

import math
from enum import StrEnum

from throttle.bucket import Bucket
from throttle.calibration import calibrated_scale, raised_for_token_429
from throttle.errors import RequestTooLargeError
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.pacing import Pace, Refusal, rule_for
from throttle.reservation import Cost, Leases, Ticket


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
        self._leases = Leases()
        self._next_seq = 0
        self._requests_ledger = 0.0
        self._tokens_ledger = 0.0
        self._applied_seq = -1
        self._estimates_ledger = 0.0
        self._uncharged_estimates = 0.0  # admitted, but failed: the server charged nothing
        self._applied = (0.0, 0.0, 0.0)  # tokens, estimates and uncharged ledgers at correction
        self._answers_without_headers = 0
        self._raised_after_seq = -1  # the last attempt admitted before the scale was raised
        self.token_scale = 1.0
        self.pace = Pace()

    def __repr__(self) -> str:
        return (
            f"KeyLimits({self.phase}, requests={self.requests!r}, tokens={self.tokens!r}, "
            f"in_flight={self.in_flight}, token_scale={self.token_scale:.3f}, "
            f"pace={self.pace.factor:.3f}, cool_down_until={self.cool_down_until:.3f})"
        )

    @property
    def in_flight(self) -> int:
        """Attempts admitted and not handed back whose lease had not ended at the last call."""
        return self._leases.count

    def try_admit(self, cost: Cost, now: float) -> Ticket | float:
        """Admit ``cost`` now, or say how long to wait.

        Returns:
            A ticket (the buckets are charged), or seconds to wait before asking again (an
            answer handed back, or a lease ending, may admit sooner).

        Raises:
            RequestTooLargeError: the cost exceeds a known bucket's whole capacity.
        """
        leases = self._leases
        leases.reclaim(now)
        if now < self.cool_down_until:
            return self.cool_down_until - now
        probing = self.phase is Phase.PROBING
        if probing and leases.count >= self.policy.probe_concurrency:
            return leases.next_end() - now  # the oldest lease's end, if no answer first
        requests, tokens_bucket, pace = self.requests, self.tokens, self.pace
        tokens = cost.tokens * self.token_scale
        wait = 0.0
        if requests is not None:
            wait = self._seconds_until(requests, cost.requests, cost.requests, now)
        if tokens_bucket is not None:
            wait = max(wait, self._seconds_until(tokens_bucket, cost.tokens, tokens, now))
        paced = pace.factor < 1.0  # cut by a refusal; a pace never cut adds nothing
        if paced:
            wait = max(wait, pace.seconds_until_admit(now))
        if wait > 0:
            return wait
        if requests is not None:
            requests.take(cost.requests, now)
        if tokens_bucket is not None:
            tokens_bucket.take(tokens, now)
        if paced:
            pace.admitted(self._full_rate_seconds(cost.requests, tokens), now)
        self._requests_ledger += cost.requests
        self._tokens_ledger += tokens
        self._estimates_ledger += cost.tokens
        self._next_seq += 1
        leases.grant(self._next_seq, now + self.policy.lease_seconds)
        return Ticket(
            self._next_seq,
            now,
            cost,
            self._requests_ledger,
            self._tokens_ledger,
            self._estimates_ledger,
            probing,
        )

    def _seconds_until(self, bucket: Bucket, estimate: float, amount: float, now: float) -> float:
        """Seconds until ``amount`` (``estimate`` calibrated) plus the reserve is available.

        Brings ``bucket`` up to date at ``now``.
        """
        capacity = bucket.capacity
        if estimate > capacity:
            raise RequestTooLargeError(
                f"request needs {estimate:g} but the whole bucket holds {capacity:g} "
                f"per {bucket.window:g}s: it can never be sent",
                requested=estimate,
                limit=capacity,
            )
        wanted = amount + self.policy.reserve_fraction * capacity
        return bucket.seconds_until(capacity if wanted > capacity else wanted, now)

    def _full_rate_seconds(self, requests: float, tokens: float) -> float:
        """Seconds the buckets take to refill ``requests`` and ``tokens`` at their full rate."""
        seconds = 0.0
        for bucket, amount in ((self.requests, requests), (self.tokens, tokens)):
            if bucket is not None:
                seconds = max(seconds, amount / bucket.rate)
        return seconds

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
            ``True`` when the snapshot was applied to the buckets. A ticket whose lease
            already ended changes nothing in flight (its place was reclaimed); its headers
            are still the server's truth and are applied like any other.
        """
        self._leases.hand_back(ticket.seq)
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

    def renew(self, seq: int, now: float) -> bool:
        """Extend the lease of attempt ``seq``, still in flight, by a whole lease from ``now``.

        Returns:
            ``False`` when it was handed back or its lease had already ended.
        """
        self._leases.reclaim(now)
        return self._leases.renew(seq, now + self.policy.lease_seconds)

    def refused(self, ticket: Ticket, refusal: Refusal, now: float) -> None:
        """The server refused ``ticket``'s attempt for speed: slow the key down.

        The pace is cut as ``pacing`` says (a ``rate_limit_exceeded`` only on a key without
        headers). A refusal for tokens on a key without headers also means the estimates run
        short of the server's count (nothing else shows it): the token scale rises, once per
        scale: refusals of attempts admitted before the last raise say nothing new.
        """
        blind = self.phase is Phase.BLIND
        if refusal is Refusal.SLOW_DOWN or blind:
            self.pace.cut(rule_for(refusal), ticket.seq, self._next_seq, now)
        if refusal is Refusal.TOKENS and blind and ticket.seq > self._raised_after_seq:
            self.token_scale = raised_for_token_429(self.token_scale)
            self._raised_after_seq = self._next_seq
