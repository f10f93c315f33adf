"""Where bucket state lives: a narrow interface, and the in-process implementation.

The scheduler only ever talks to a :class:`LimitBackend`. A Redis backend implements the same
three calls atomically so that several processes share one account's buckets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.limits import AdmissionPolicy, KeyLimits, Limits
from throttle.reservation import Cost, Ticket


class LimitBackend(Protocol):
    """Storage and arithmetic of the buckets of every key. Times are scheduler-clock seconds."""

    async def try_admit(self, key: BucketKey, cost: Cost, now: float) -> Ticket | float:
        """Charge ``cost`` to ``key`` and return a ticket, or return seconds to wait.

        Raises:
            RequestTooLargeError: the cost exceeds the whole bucket.
        """
        ...

    async def complete(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        now: float,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """Hand back a ticket with its answer's headers; return whether they were applied."""
        ...

    async def cool_down(self, key: BucketKey, until: float) -> None:
        """Admit nothing on ``key`` before ``until``."""
        ...


class MemoryBackend:
    """Bucket state in this process's memory.

    Args:
        limits_for: the configured ceilings of a key.
        policy: how cautiously to admit.
    """

    def __init__(
        self,
        limits_for: Callable[[BucketKey], Limits] = lambda _key: Limits(),
        policy: AdmissionPolicy | None = None,
    ) -> None:
        self._limits_for = limits_for
        self._policy = policy or AdmissionPolicy()
        self._keys: dict[BucketKey, KeyLimits] = {}

    def __repr__(self) -> str:
        return f"MemoryBackend({self._keys!r})"

    def state(self, key: BucketKey) -> KeyLimits:
        """Return the live state of ``key`` (created on first use)."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyLimits(self._limits_for(key), self._policy)
        return state

    async def try_admit(self, key: BucketKey, cost: Cost, now: float) -> Ticket | float:
        """See :meth:`LimitBackend.try_admit`."""
        return self.state(key).try_admit(cost, now)

    async def complete(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        now: float,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """See :meth:`LimitBackend.complete`."""
        return self.state(key).complete(
            ticket, snapshot, now, answered=answered, succeeded=succeeded
        )

    async def cool_down(self, key: BucketKey, until: float) -> None:
        """See :meth:`LimitBackend.cool_down`."""
        self.state(key).cool_down(until)
