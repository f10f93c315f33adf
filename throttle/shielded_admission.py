"""Asking a shared backend for a ticket on behalf of a caller who may leave meanwhile.

A shared backend's answer takes a round trip. If the caller is cancelled during it, the
backend may still admit (the call cannot be taken back once sent): the ticket would then be
charged and held by no one. So the call runs in a task of its own, shielded from the caller's
cancellation, and whatever it admits for a caller who left is handed straight back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from throttle.backend import LimitBackend
from throttle.keys import BucketKey
from throttle.reservation import Admissions, Cost


class ShieldedAdmissions:
    """Shielded ``try_admit`` calls to ``backend``; ``wake(key)`` once a key's ticket is back.

    Args:
        backend: the shared backend.
        wake: tells ``key``'s waiters that room was handed back.
    """

    def __init__(self, backend: LimitBackend, wake: Callable[[BucketKey], None]) -> None:
        self._backend = backend
        self._wake = wake
        self._deciding: set[asyncio.Future[Admissions]] = set()  # calls on their way
        self._hand_backs: set[asyncio.Future[bool]] = set()  # of callers who left

    def __repr__(self) -> str:
        return f"ShieldedAdmissions(deciding={len(self._deciding)})"

    async def try_admit(self, key: BucketKey, cost: Cost) -> Admissions:
        """Ask the backend; if the caller leaves meanwhile, hand back what it admits."""
        call = asyncio.ensure_future(self._backend.try_admit(key, [cost]))
        self._deciding.add(call)
        call.add_done_callback(self._deciding.discard)
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(functools.partial(self._hand_back_unclaimed, key))
            raise

    async def finish(self) -> None:
        """Wait for the calls on their way and the hand-backs (never cancelling them)."""
        if self._deciding:  # asyncio.wait, which never cancels what it waits for
            await asyncio.wait(list(self._deciding))
        if self._hand_backs:
            await asyncio.wait(list(self._hand_backs))

    def _hand_back_unclaimed(self, key: BucketKey, call: asyncio.Future[Admissions]) -> None:
        """Return what the backend admitted for a caller who had already left."""
        if call.cancelled() or call.exception() is not None:
            return
        for ticket in call.result().tickets:
            hand_back = asyncio.ensure_future(
                self._backend.complete(key, ticket, None, answered=False, succeeded=False)
            )
            self._hand_backs.add(hand_back)
            hand_back.add_done_callback(self._hand_backs.discard)
            hand_back.add_done_callback(lambda _done: self._wake(key))  # its place is free
