"""Stopping a client whose set-up cannot work, before it burns through a whole job.

A wrong URL answers every request 404; a wrong host refuses every connection. Until one
request succeeds, a request that ended that way says the set-up, not the request, is wrong:
the check then trips, and every request fails at once with one clear
:class:`MisconfiguredError` instead of each failing alike after its own retries. Once a
request has succeeded, such errors are the requests' own (a line's missing model, a blip).
"""

from __future__ import annotations

import socket

from throttle.errors import (
    APIStatusError,
    MisconfiguredError,
    RetryExhaustedError,
    StreamTruncatedError,
    TransportError,
)

WRONG_URL_STATUSES = frozenset({404, 405})  # no such endpoint (a model not found is per line)


def setup_problem(error: BaseException) -> str | None:
    """Say what is wrong with the set-up, if ``error`` shows that no request can succeed."""
    last = error.last_error if isinstance(error, RetryExhaustedError) else error
    if (
        isinstance(last, APIStatusError)
        and last.status in WRONG_URL_STATUSES
        and last.details.code != "model_not_found"
    ):
        return f"the server answered {last.status} (no such endpoint: {last.server_message})"
    if isinstance(last, TransportError) and _never_connected(last):
        return f"no answer from the server ({last})"
    return None


def _never_connected(error: TransportError) -> bool:
    """Whether ``error`` came from a connection that could not be made (refused, no such host).

    A timeout or a broken stream means a server is there, only slow or unlucky: not the
    set-up's fault. The HTTP libraries name their connection failures ``...Connect...``
    (aiohttp's ``ClientConnectorError``, httpx's ``ConnectError``) and their timeouts
    ``...Timeout...``; the socket's own errors are checked by type.
    """
    if isinstance(error, StreamTruncatedError):
        return False
    cause = error.__cause__ or error.__context__
    while cause is not None:
        name = type(cause).__name__
        if isinstance(cause, TimeoutError) or "Timeout" in name:
            return False
        if isinstance(cause, ConnectionRefusedError | socket.gaierror) or "Connect" in name:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class SetupCheck:
    """Trips on the first request that shows a wrong set-up, unless one succeeded before."""

    def __init__(self) -> None:
        self.works = False
        self._failure: MisconfiguredError | None = None

    def __repr__(self) -> str:
        state = "works" if self.works else ("tripped" if self._failure else "unproven")
        return f"SetupCheck({state})"

    @property
    def tripped(self) -> bool:
        """Whether every request now fails with :meth:`error`."""
        return self._failure is not None

    def succeeded(self) -> None:
        """A request succeeded: the set-up works, for good."""
        self.works = True

    def ended(self, error: BaseException) -> bool:
        """A request ended with ``error``; return whether that tripped the check (just now)."""
        if self.works or self._failure is not None:
            return False
        problem = setup_problem(error)
        if problem is None:
            return False
        self._failure = MisconfiguredError(
            f"{problem}, and no request has succeeded: check the URL (and the key); every "
            "request of this client now fails with this error",
            error,
        )
        return True

    def error(self) -> MisconfiguredError:
        """A new copy of the error every request gets once tripped."""
        assert self._failure is not None  # noqa: S101 - asked only once tripped
        return MisconfiguredError(str(self._failure), self._failure.cause)
