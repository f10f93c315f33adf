"""Attempts admitted and not yet handed back, and the one task that renews their leases.

A shared backend counts an attempt in flight only for its lease; a long request (a stream, a
slow reasoning model) must not be taken for one whose worker died. So while any attempt is
held, one renewal task extends every held lease each third of a lease.
"""

from __future__ import annotations

import asyncio
import logging
import math

from throttle.backend import LimitBackend
from throttle.clock import Clock
from throttle.keys import BucketKey
from throttle.reservation import Ticket

logger = logging.getLogger(__name__)


class HeldTickets:
    """The tickets held per key, renewed while held.

    Args:
        backend: where the leases live.
        clock: time source of the renewal task.
    """

    def __init__(self, backend: LimitBackend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock
        self._held: dict[BucketKey, dict[int, Ticket]] = {}  # by id(): seqs of two backends
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"HeldTickets({ {str(key): count for key, count in self.counts().items()} })"

    def counts(self) -> dict[BucketKey, int]:
        """Return how many tickets each key holds, keys holding none left out.

        Safe from another thread: it reads one copy.
        """
        return {key: count for key, held in list(self._held.items()) if (count := len(held))}

    def hold(self, key: BucketKey, ticket: Ticket) -> None:
        """Count ``ticket`` in flight until :meth:`drop`, renewing its lease meanwhile."""
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = {}
        held[id(ticket)] = ticket
        if self._renewer is None and math.isfinite(self._backend.lease_seconds):
            self._renewer = asyncio.create_task(self._renew_leases(), name="throttle-leases")

    def drop(self, key: BucketKey, ticket: Ticket) -> None:
        """Stop counting ``ticket`` (handed back); unknown tickets are ignored."""
        held = self._held.get(key)
        if held is not None:  # kept when empty: a key's next ticket needs no new dict
            held.pop(id(ticket), None)

    def renewer(self) -> asyncio.Task[None] | None:
        """Return the renewal task while it runs (its owner cancels it on close)."""
        return self._renewer

    async def _renew_leases(self) -> None:
        """Every third of a lease, extend the lease of every attempt still held."""
        try:
            while any(self._held.values()):
                await self._clock.sleep(self._backend.lease_seconds / 3)
                for key, held in list(self._held.items()):
                    if not held:
                        continue
                    try:
                        await self._backend.renew(key, list(held.values()))
                    except Exception:
                        logger.exception("bucket backend failed renewing leases on %s", key)
        finally:
            self._renewer = None
