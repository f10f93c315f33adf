"""Slowing a key down when the server says "too fast", and speeding up again: AIMD, pure.

Clients that share one limit without rate-limit headers and without a shared backend each
believe they own all of it. So every refusal cuts the key's *pace* multiplicatively, and the
pace then grows back linearly with time, like TCP's congestion window: independent clients
converge on their shares of the limit instead of fighting over it.

The pace is a fraction of the key's full rate (its buckets' refill rates, learned or
configured). Below 1, admissions are spaced so that over any stretch longer than
:data:`BURST_SECONDS` the key sends at most pace x its full rate, on both buckets (the generic
cell-rate algorithm: one "theoretical arrival time", no queue). A key whose rates are unknown
(still probing) is not paced.

The rules (:class:`PaceRule`):

- ``rate_limit_exceeded`` on a key without headers: the pace x 0.7, then +2% of the full rate
  per second (from 0.7 back to full in 15 s). With headers it does not cut: the headers of
  every answer already carry what the other clients used, and the key's cool-down covers the
  server's delay; a cut would only throw away capacity the server says is there.
- ``slow_down`` (the traffic grew too fast, even within the limits), on any key: the pace
  x 0.5, then +25% of the full rate per 15 minutes, that is +50% of the halved rate per
  15 minutes (OpenAI's guidance for ramping up). A faster rule never shortens a slower ramp
  that is still in progress.

Only refusals of attempts admitted after the last cut cut again: the others were sent before
the key slowed down and say nothing new (TCP cuts once per window for the same reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from throttle.errors import RateLimitError

BURST_SECONDS = 1.0  # how far ahead of its spacing a paced key may send after a pause
FLOOR = 0.02  # the pace never falls below 2% of the full rate


class Refusal(StrEnum):
    """Why the server refused an attempt for speed."""

    REQUESTS = "requests"  # 429 rate_limit_exceeded on requests, or on a limit it did not name
    TOKENS = "tokens"  # 429 rate_limit_exceeded on tokens
    SLOW_DOWN = "slow_down"  # 429 slow_down: the traffic grew too fast


@dataclass(frozen=True, slots=True)
class PaceRule:
    """How one kind of refusal cuts the pace and how fast it grows back.

    Attributes:
        cut: the pace is multiplied by this.
        growth_per_second: share of the full rate regained per second afterwards.
    """

    cut: float
    growth_per_second: float


RATE_LIMITED = PaceRule(cut=0.7, growth_per_second=0.02)
SLOWED_DOWN = PaceRule(cut=0.5, growth_per_second=0.25 / 900)


def refusal_of(error: RateLimitError) -> Refusal | None:
    """Return why ``error`` refused an attempt, or ``None`` for a daily limit (pace is moot)."""
    if error.slow_down:
        return Refusal.SLOW_DOWN
    if error.limit_type is not None and error.limit_type.endswith("_per_day"):
        return None
    return Refusal.TOKENS if error.limit_type == "tokens" else Refusal.REQUESTS


def rule_for(refusal: Refusal) -> PaceRule:
    """Return the rule a refusal applies."""
    return SLOWED_DOWN if refusal is Refusal.SLOW_DOWN else RATE_LIMITED


@dataclass(slots=True)
class Pace:
    """One key's pace: a fraction of its full rate that refusals cut and time restores.

    Attributes:
        factor: the pace right after the last cut (1: never cut).
        cut_at: when it was cut.
        growth_per_second: how fast it grows back since.
        cut_after_seq: the last attempt admitted before the cut; refusals of attempts up to
            it do not cut again.
        next_at: the theoretical arrival time of the next admission (cell-rate algorithm).
    """

    factor: float = 1.0
    cut_at: float = -math.inf
    growth_per_second: float = 0.0
    cut_after_seq: int = -1
    next_at: float = -math.inf

    def at(self, now: float) -> float:
        """Return the pace at ``now``, in (0, 1]."""
        if self.factor >= 1.0:
            return 1.0
        return min(1.0, self.factor + self.growth_per_second * max(0.0, now - self.cut_at))

    def seconds_until_admit(self, now: float) -> float:
        """Return how long an admission must wait for its place in the spacing (0 if none).

        Never past the moment the pace is back to full: the spacing ends there.
        """
        if self.at(now) >= 1.0:
            return 0.0
        growth = self.growth_per_second
        recovered_at = self.cut_at + (1.0 - self.factor) / growth if growth > 0 else math.inf
        return max(0.0, min(self.next_at - BURST_SECONDS, recovered_at) - now)

    def admitted(self, full_rate_seconds: float, now: float) -> None:
        """Count an admission that takes ``full_rate_seconds`` of the key's full rate."""
        pace = self.at(now)
        if pace < 1.0:
            self.next_at = max(self.next_at, now) + full_rate_seconds / pace
        else:
            self.next_at = -math.inf  # back to full: a later cut starts a fresh spacing

    def cut(self, rule: PaceRule, refused_seq: int, last_seq: int, now: float) -> bool:
        """Cut the pace after the server refused attempt ``refused_seq``.

        Args:
            rule: how much to cut and how fast to grow back.
            refused_seq: the refused attempt's sequence number.
            last_seq: the last attempt admitted so far.
            now: the current time.

        Returns:
            ``True`` when the pace was cut; ``False`` when the refused attempt was admitted
            before the last cut.
        """
        pace = self.at(now)
        if refused_seq <= self.cut_after_seq:
            if pace < 1.0:  # no second cut, but a slower ramp (slow_down) still applies
                self.growth_per_second = min(self.growth_per_second, rule.growth_per_second)
            return False
        growth = rule.growth_per_second
        if pace < 1.0:
            growth = min(growth, self.growth_per_second)  # a slow ramp stays slow
            self.next_at = max(self.next_at, now)
        else:
            self.next_at = now  # a fresh spacing: the last one ended with the last cut's ramp
        self.factor = max(FLOOR, pace * rule.cut)
        self.growth_per_second = growth
        self.cut_at = now
        self.cut_after_seq = last_seq
        return True
