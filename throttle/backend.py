"""Where bucket state lives: a narrow interface, and the in-process implementation.

The scheduler only ever talks to a :class:`LimitBackend`. A shared backend implements the same
three calls atomically so that several processes share one account's buckets. The backend owns
the clock its state is kept in (this process's for the memory backend; one clock for all
processes for a shared one), so callers pass durations, never times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from throttle.clock import Clock, MonotonicClock
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.limits import KeyLimits
from throttle.reservation import Cost, Ticket


class LimitBackend(Protocol):
    """Storage and arithmetic of the buckets of every key, on the backend's own clock."""

    async def try_admit(self, key: BucketKey, cost: Cost) -> Ticket | float:
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
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """Hand back a ticket with its answer's headers; return whether they were applied."""
        ...

    async def cool_down(self, key: BucketKey, seconds: float) -> None:
        """Admit nothing on ``key`` for ``seconds`` from now."""
        ...


class MemoryBackend:
    """Bucket state in this process's memory.

    Args:
        limits_for: the configured ceilings of a key.
        policy: how cautiously to admit.
        clock: the clock the buckets are kept in.
    """

    def __init__(
        self,
        limits_for: Callable[[BucketKey], Limits] = lambda _key: Limits(),
        policy: AdmissionPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._limits_for = limits_for
        self._policy = policy or AdmissionPolicy()
        self._clock = clock or MonotonicClock()
        self._keys: dict[BucketKey, KeyLimits] = {}

    def __repr__(self) -> str:
        return f"MemoryBackend({self._keys!r})"

    def state(self, key: BucketKey) -> KeyLimits:
        """Return the live state of ``key`` (created on first use)."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyLimits(self._limits_for(key), self._policy)
        return state

    async def try_admit(self, key: BucketKey, cost: Cost) -> Ticket | float:
        """See :meth:`LimitBackend.try_admit`."""
        return self.state(key).try_admit(cost, self._clock.now())

    async def complete(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """See :meth:`LimitBackend.complete`."""
        return self.state(key).complete(
            ticket, snapshot, self._clock.now(), answered=answered, succeeded=succeeded
        )

    async def cool_down(self, key: BucketKey, seconds: float) -> None:
        """See :meth:`LimitBackend.cool_down`."""
        self.state(key).cool_down(self._clock.now() + seconds)
