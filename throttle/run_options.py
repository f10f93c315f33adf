"""What ``throttle run`` was asked to do, and the executor it builds from that by default."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from throttle.client import Throttle
from throttle.limit_settings import Limits, default_max_in_flight
from throttle.online_executor import OnlineExecutor
from throttle.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``throttle run`` was asked to do.

    Attributes:
        input: the JSONL file: request bodies, or Batch API lines (see :mod:`throttle.job_input`).
        output: the results file (appended to, resumed from).
        url: for request bodies, the full endpoint URL; for Batch API lines, the base URL
            (``https://api.openai.com/v1``) that each line's ``url`` is joined to.
        api_key: the key (sent as ``api-key`` to Azure URLs, else as a bearer token).
        limits: optional ceilings; by default limits are learned.
        max_attempts: attempts per request.
        max_concurrency: requests in flight at once (the Throttle's ``max_in_flight``); the
            runner reads no further ahead, which bounds memory too.
        retry_failed: also re-run lines whose result is an error.
        redis_url: share limits with the other workers on this Redis (never shown).
        redis_failure_policy: ``"fail_closed"`` or ``"fail_open"`` while Redis is away.
        timeout: seconds one attempt may take before it is abandoned (and retried).
    """

    input: Path
    output: Path
    url: str
    api_key: str | None = field(repr=False)
    limits: Limits | None = None
    max_attempts: int = 6
    max_concurrency: int = field(default_factory=default_max_in_flight)
    retry_failed: bool = False
    redis_url: str | None = field(default=None, repr=False)
    redis_failure_policy: str = "fail_closed"
    timeout: float = 600.0


def online_executor(options: RunOptions) -> OnlineExecutor:
    """The executor ``throttle run`` uses by default: each line to ``options.url``.

    The URL's query string (Azure's ``api-version``) goes with every request.
    """
    parts = urlsplit(options.url)
    throttle = Throttle(
        urlunsplit(parts._replace(query="", fragment="")),
        options.api_key,
        limits=options.limits,
        retry=RetryPolicy(max_attempts=options.max_attempts),
        max_in_flight=options.max_concurrency,
        redis_url=options.redis_url,
        redis_failure_policy=options.redis_failure_policy,
        timeout=options.timeout,
    )
    return OnlineExecutor(throttle, params=dict(parse_qsl(parts.query)))
