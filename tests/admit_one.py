"""Asking a backend for one cost, as the admission queue asks for several."""

from __future__ import annotations

from throttle import BucketKey, LimitBackend
from throttle.reservation import Cost, Ticket


async def admit_one(backend: LimitBackend, key: BucketKey, cost: Cost) -> Ticket | float:
    """Return the ticket of ``cost``, or the seconds it must wait."""
    admissions = await backend.try_admit(key, [cost])
    return admissions.tickets[0] if admissions.tickets else admissions.wait
