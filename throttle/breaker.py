"""The quota breaker: once a credential is out of quota, nothing more is sent on it.

Backing off never clears a billing problem, so the first ``insufficient_quota`` answer opens the
breaker of its credential identity. Queued requests fail at once; requests in flight finish;
new ones fail without being sent, until someone fixes billing and calls :meth:`reset`.
"""

from __future__ import annotations

import asyncio

from throttle.errors import ErrorDetails, QuotaExhaustedError


class QuotaBreakers:
    """One breaker per credential identity."""

    def __init__(self) -> None:
        self._open: dict[str, ErrorDetails] = {}
        self._opened: dict[str, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"QuotaBreakers(open={sorted(self._open)})"

    def is_open(self, identity: str) -> bool:
        """Return whether ``identity`` ran out of quota."""
        return identity in self._open

    def open_identities(self) -> list[str]:
        """Return the identities whose breaker is open."""
        return sorted(self._open)

    def error(self, identity: str, attempts: int = 0) -> QuotaExhaustedError:
        """Return a fresh error for a request refused because the breaker is open.

        Args:
            identity: an identity whose breaker is open.
            attempts: how many times the refused request was sent.
        """
        error = QuotaExhaustedError(self._open[identity])
        error.attempts = attempts
        return error

    def check(self, identity: str, attempts: int = 0) -> None:
        """Raise :class:`QuotaExhaustedError` if ``identity``'s breaker is open."""
        if identity in self._open:
            raise self.error(identity, attempts)

    def trip(self, identity: str, details: ErrorDetails) -> bool:
        """Open ``identity``'s breaker; return ``True`` if it was closed before."""
        if identity in self._open:
            return False
        self._open[identity] = details
        self.opened(identity).set()
        return True

    def opened(self, identity: str) -> asyncio.Event:
        """Return an event that is set while ``identity``'s breaker is open."""
        event = self._opened.get(identity)
        if event is None:
            event = self._opened[identity] = asyncio.Event()
        return event

    def reset(self, identity: str | None = None) -> None:
        """Close one identity's breaker, or all of them, after billing was fixed."""
        for name in [identity] if identity is not None else list(self._open):
            self._open.pop(name, None)
            self.opened(name).clear()
