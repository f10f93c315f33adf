"""What the scheduler tells the ``throttle`` logger: the few things a user debugging a job needs.

Learned limits when they change, each 429's cool-down and its cause, the quota breaker, and
(at DEBUG) each retry with its reason and wait. Keys show as ``identity/group``: the identity
is a hash, never the API key.
"""

from __future__ import annotations

import logging

from throttle.errors import ErrorDetails, RateLimitError
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.outcomes import rate_limit_kind

logger = logging.getLogger("throttle")


class Diagnostics:
    """Logs what changed; remembers the limits last logged per key so each change logs once."""

    def __init__(self) -> None:
        self._limits: dict[BucketKey, tuple[float | None, float | None]] = {}

    def __repr__(self) -> str:
        return f"Diagnostics(keys={len(self._limits)})"

    def limits_applied(self, key: BucketKey, snapshot: RateLimitSnapshot) -> None:
        """The server's headers corrected ``key``'s buckets: log the limits if they changed."""
        requests = snapshot.requests.limit if snapshot.requests else None
        tokens = snapshot.tokens.limit if snapshot.tokens else None
        if self._limits.get(key) == (requests, tokens):
            return
        self._limits[key] = (requests, tokens)
        logger.info(
            "limits on %s from the server's headers: %s requests, %s tokens per window",
            key,
            "?" if requests is None else f"{requests:,.0f}",
            "?" if tokens is None else f"{tokens:,.0f}",
        )

    @staticmethod
    def cooling_down(key: BucketKey, error: RateLimitError, seconds: float) -> None:
        """A 429 ``rate_limit_exceeded`` paused ``key`` for ``seconds``."""
        logger.info(
            "429 on %s (%s limit): admitting nothing on it for %.2fs (%s)",
            key,
            rate_limit_kind(error),
            seconds,
            error.server_message[:120],
        )

    @staticmethod
    def held(key: BucketKey, error: RateLimitError, failed: int) -> None:
        """A 429 with a delay past ``max_server_wait`` holds ``key``; ``failed`` queued ones."""
        logger.warning(
            "429 on %s (%s limit) asks to wait %.0fs, longer than max_server_wait: nothing is "
            "sent on it until then; %d queued requests failed (%s)",
            key,
            rate_limit_kind(error),
            error.retry_after or 0.0,
            failed,
            error.server_message[:120],
        )

    @staticmethod
    def retrying(key: BucketKey, attempt: int, reason: str, seconds: float) -> None:
        """Attempt ``attempt`` on ``key`` failed with ``reason``; the next goes in ``seconds``."""
        logger.debug(
            "attempt %d on %s failed (%s): retrying in %.2fs", attempt, key, reason, seconds
        )

    @staticmethod
    def breaker_opened(identity: str, details: ErrorDetails) -> None:
        """``identity`` ran out of quota."""
        logger.warning(
            "credential %s is out of quota (%s): nothing more is sent on it until its quota "
            "breaker is reset",
            identity,
            details.describe(),
        )

    @staticmethod
    def breaker_reset(identity: str) -> None:
        """``identity``'s quota breaker was reset."""
        logger.info("quota breaker of credential %s reset: sending again", identity)
