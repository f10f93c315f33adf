"""Keys out of a long limit: a daily quota met, nothing more is sent on the key until it ends.

A 429 whose delay is longer than ``max_server_wait`` ("Please try again in 28m48s" on a
per-day limit, Azure's "retry after 86400 seconds") is not held: the request fails. Every other
request on that key would meet the same refusal, one 429 each, and each 429 counts against
the limits again. So the key is *held* until the server's delay ends: its queued requests fail
at once with the same error, new ones fail without being sent, and after the delay the key
admits again. Pure: every method takes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass

from throttle.errors import RateLimitError
from throttle.keys import BucketKey


@dataclass(frozen=True, slots=True)
class _Hold:
    until: float
    refusal: RateLimitError


class LongLimits:
    """The keys held until their long limit ends."""

    def __init__(self) -> None:
        self._held: dict[BucketKey, _Hold] = {}

    def __repr__(self) -> str:
        return f"LongLimits({sorted(str(key) for key in self._held)})"

    def hold(self, key: BucketKey, refusal: RateLimitError, now: float) -> None:
        """Hold ``key`` for the delay of ``refusal`` (a 429 with a delay) from ``now``."""
        until = now + (refusal.retry_after or 0.0)
        held = self._held.get(key)
        if held is None or until > held.until:  # a shorter delay never shortens a hold
            self._held[key] = _Hold(until, refusal)

    def error(self, key: BucketKey, now: float) -> RateLimitError | None:
        """Return the error a request on ``key`` fails with now, or ``None`` if not held.

        The error repeats the server's refusal, its delay counted down to what is left.
        """
        held = self._held.get(key)
        if held is None:
            return None
        if now >= held.until:
            del self._held[key]
            return None
        refusal = held.refusal
        error = RateLimitError(
            refusal.details,
            retry_after=held.until - now,
            limit_type=refusal.limit_type,
            slow_down=refusal.slow_down,
        )
        error.retryable = False
        return error
