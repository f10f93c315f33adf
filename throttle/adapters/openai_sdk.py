"""``wrap_openai``: an existing ``AsyncOpenAI`` or ``AsyncAzureOpenAI``, throttled.

How the two retry layers meet: throttle owns retries. It retries rate limits, server errors
and dropped connections itself, then hands the SDK the server's final answer marked
``x-should-retry: false``, so the SDK (whatever its ``max_retries``) does not send it again.
What throttle refuses without sending raises throttle's own error, which the SDK passes
through unwrapped and unretried. So with the SDK's default retries, every request reaches the
server at most as often as throttle's :class:`~throttle.RetryPolicy` allows.

Quota: the requests in flight when the quota ran out get the server's answer, which the SDK
raises as ``openai.RateLimitError`` with ``code == "insufficient_quota"``; every later request
on that key raises :class:`throttle.QuotaExhaustedError` without reaching the server.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx2
import openai

from throttle.adapters.httpx2_transport import ThrottleHttpx2Transport
from throttle.client import Throttle

ClientT = TypeVar("ClientT", openai.AsyncOpenAI, openai.AsyncAzureOpenAI)


def wrap_openai(
    client: ClientT, throttle: Throttle, *, inner: Any | None = None, priority: int = 0
) -> ClientT:
    """Return a copy of ``client`` whose every call goes through ``throttle``.

    Args:
        client: an ``openai.AsyncOpenAI`` or ``openai.AsyncAzureOpenAI``.
        throttle: needs no base URL or key of its own; the client's key is hashed into the
            identity unless the Throttle was given one.
        inner: the httpx2 transport that really sends (default: httpx2's HTTP transport).
        priority: smaller goes first, for every call of the returned client.

    Returns:
        The throttled copy; ``client`` itself is unchanged.
    """
    transport: httpx2.AsyncBaseTransport = ThrottleHttpx2Transport(
        throttle, inner, priority=priority
    )
    http_client = openai.DefaultAsyncHttpx2Client(transport=transport)
    return client.with_options(http_client=http_client)
