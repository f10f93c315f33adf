"""Connecting to Redis from a URL, and naming it without its password.

``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs are what redis-py accepts; the password
in them must never reach a log line, an error, a repr or a metric, so throttle only ever shows
:func:`redacted_url`.
"""

from __future__ import annotations

import re

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from throttle.errors import ConfigurationError

SCHEMES = ("redis", "rediss", "unix")
SOCKET_TIMEOUT_SECONDS = 5.0
_PASSWORD = re.compile(r"(://[^:/@]*:).*@")


def redacted_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (the user name is kept).

    Works on malformed URLs too (a bad port, say), which is when an error shows them.
    """
    return _PASSWORD.sub(r"\1***@", url)


def connect(url: str) -> aioredis.Redis:
    """Return a client for ``url`` that gives up on a dead server within seconds.

    redis-py's default retries back off up to ten seconds per command; a worker must notice an
    outage quickly to apply its failure policy, so commands retry twice within half a second.

    Raises:
        ConfigurationError: the URL is not a Redis URL (named without its password).
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"not a Redis URL: {redacted_url(url)!r}; use redis://HOST:PORT/DB, "
            "rediss://... for TLS, or unix:///path/to/socket"
        )
    try:
        return aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), retries=2),
        )
    except ValueError as error:
        message = str(error).replace(url, redacted_url(url))
        raise ConfigurationError(f"bad Redis URL {redacted_url(url)!r}: {message}") from None


def describe(client: aioredis.Redis) -> str:
    """Return where ``client`` connects, for messages: never its password."""
    settings = client.connection_pool.connection_kwargs
    if "path" in settings:
        return f"Redis at unix:{settings['path']}"
    scheme = (
        "rediss" if client.connection_pool.connection_class.__name__.startswith("SSL") else "redis"
    )
    return f"Redis at {scheme}://{settings.get('host', 'localhost')}:{settings.get('port', 6379)}"
