"""Reading the server's rate-limit and retry headers.

Headers are the truth about the server's buckets; throttle's own estimates are only a forecast.
Missing, negative, ``-1`` or garbage values are logged at debug level and ignored, never raised
and never written into a bucket.

The dialects servers speak, and what is read from each:

* OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as Go durations
  (``6m0s``), also with a ``_usage_based`` suffix or a ``project-`` family.
* Azure OpenAI: the same names, or hyphenated ones (``x-rate-limit-limit-tokens``), resets as
  plain numbers of seconds (``10``, ``300``). Both spellings are read alike.
* Several families in one answer (OpenAI and Azure names disagreeing, a project limit): each is
  read on its own and the one with the least left wins, whole; limit and remaining of different
  families are never stitched together.
* ``remaining-*`` without ``limit-*`` (Azure, often with values it caches for a long time): no
  reading. A level says nothing about capacity, and a reading needs a limit, so the answer
  counts as one without headers: a learned key keeps its buckets, an unknown key runs on its
  configured limits. (Correcting a known bucket's level from it would need the bucket code to
  accept a reading without a limit.)
* Placeholders (Azure's Responses API: limit ``-1``, remaining ``-1``, reset ``0``; also a
  limit of ``0``): no reading, so never a bucket of capacity 0 or less. A reset of ``0`` on a
  bucket that is not full is a placeholder too: the reset is unknown.
* Values are read through whitespace, upper-case units (``6M0S``) and ``-0``; anything that is
  not a finite, non-negative number (``abc``, ``1e400``, ``nan``, ``inf``, ``""``, ``60, 59``)
  is ignored with its bucket (a count) or alone (a reset).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from throttle.durations import parse_duration

logger = logging.getLogger(__name__)

# Families of OpenAI-style headers, the plain one first. A project-level limit, when present,
# is a second bucket in front of the organization's; the most restrictive family wins. Azure's
# hyphenated spelling describes the same bucket as the plain one, and is read the same way.
_FAMILIES = (
    "x-ratelimit-{field}-{kind}",
    "x-ratelimit-{field}-{kind}_usage_based",
    "x-ratelimit-{field}-project-{kind}",
    "x-rate-limit-{field}-{kind}",
)
# (limit, remaining, reset) header names of each family, per kind: spelled out once.
_NAMES = {
    kind: [
        tuple(family.format(field=field, kind=kind) for field in ("limit", "remaining", "reset"))
        for family in _FAMILIES
    ]
    for kind in ("requests", "tokens")
}
_PREFIXES = ("x-ratelimit-", "x-rate-limit-")
# Header types whose get() ignores case: httpx's and httpx2's Headers, aiohttp's multidicts.
_CASE_INSENSITIVE = frozenset({"Headers", "CIMultiDict", "CIMultiDictProxy"})


@dataclass(frozen=True, slots=True)
class LimitReading:
    """One bucket as the server described it in a response.

    Attributes:
        limit: capacity per window (requests or tokens).
        remaining: what was left right after the server counted this request.
        reset_seconds: seconds until the bucket is back to full, if the server said.
    """

    limit: float
    remaining: float
    reset_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """The server's view of the requests and tokens buckets, from one response's headers.

    Attributes:
        requests: the requests bucket, or ``None`` when its headers were missing or bogus.
        tokens: the tokens bucket, or ``None`` when its headers were missing or bogus.
    """

    requests: LimitReading | None = None
    tokens: LimitReading | None = None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in headers.items()}


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Return the value of header ``name`` whatever the case of the names, or ``None``.

    Args:
        headers: request or response headers (a plain dict or a library's header object).
        name: the header name, any case.
    """
    value = headers.get(name)  # a plain dict with the usual case, or a case-insensitive one
    if value is not None:
        return str(value)
    if type(headers).__name__ in _CASE_INSENSITIVE:
        return None  # looking through every name again would find nothing more
    wanted = name.lower()
    return next((str(v) for k, v in headers.items() if str(k).lower() == wanted), None)


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """Return the server's ``x-request-id`` (quote it in support tickets), or ``None``."""
    return header(headers, "x-request-id")


def _number(headers: dict[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        logger.debug("ignoring header %s=%r: not a number", name, raw)
        return None
    if not math.isfinite(value) or value < 0:
        logger.debug("ignoring header %s=%r: negative or not finite", name, raw)
        return None
    return value + 0.0  # "-0" is an empty bucket, not a negative zero


def _reset(headers: dict[str, str], name: str) -> float | None:
    raw = headers.get(name)
    return None if raw is None else _duration(raw)


@functools.lru_cache(maxsize=4096)
def _duration(raw: str) -> float | None:
    """Read a reset; cached, as a server repeats the same few (``1ms``, ``6m0s``) all day."""
    try:
        # Go writes units in lower case; "6M0S" from a proxy or a capture still means 6m0s.
        return parse_duration(raw.lower())
    except ValueError:
        logger.debug("ignoring rate-limit reset %r: not a duration", raw)
        return None


def _reading(headers: dict[str, str], kind: str, names: tuple[str, ...]) -> LimitReading | None:
    limit_name, remaining_name, reset_name = names
    limit = _number(headers, limit_name)
    remaining = _number(headers, remaining_name)
    if limit is None or remaining is None:
        return None
    if limit <= 0:
        logger.debug("ignoring %s limit %r: not positive", kind, limit)
        return None
    if remaining > limit:
        logger.debug("clamping %s remaining %r to limit %r", kind, remaining, limit)
        remaining = limit
    reset = _reset(headers, reset_name)
    if reset == 0 and remaining < limit:
        logger.debug("ignoring %s reset 0: the bucket is not full", kind)
        reset = None
    return LimitReading(limit=limit, remaining=remaining, reset_seconds=reset)


def _most_restrictive(headers: dict[str, str], kind: str) -> LimitReading | None:
    least: LimitReading | None = None
    for names in _NAMES[kind]:
        if names[0] in headers:
            reading = _reading(headers, kind, names)
            if reading is not None and (least is None or reading.remaining < least.remaining):
                least = reading
    return least


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitSnapshot | None:
    """Read the ``x-ratelimit-*`` headers of a response.

    Understands OpenAI's and Azure's names (``x-ratelimit-*`` and ``x-rate-limit-*``), the
    ``_usage_based`` variant and project-level headers (the bucket with the least left wins).
    A bucket needs both its limit and its remaining count: values that are missing, negative,
    ``-1``, zero limits or unparsable are ignored (see the module docstring).

    Args:
        headers: the response headers (any case).

    Returns:
        A snapshot, or ``None`` when no bucket could be read.
    """
    lowered = {
        low: value
        for name, value in headers.items()
        if name[:1] in "xX" and (low := name.lower()).startswith(_PREFIXES)
    }
    if not lowered:  # most answers of most servers without limits: nothing to read
        return None
    requests = _most_restrictive(lowered, "requests")
    tokens = _most_restrictive(lowered, "tokens")
    if requests is None and tokens is None:
        return None
    return RateLimitSnapshot(requests=requests, tokens=tokens)


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Read the server's requested delay from ``retry-after-ms`` or ``retry-after``.

    Args:
        headers: the response headers (any case).
        now: the current wall-clock time, for ``retry-after`` given as an HTTP date.

    Returns:
        Seconds to wait, or ``None`` when neither header holds a usable value.
    """
    lowered = _lower(headers)
    millis = _number(lowered, "retry-after-ms")
    if millis is not None:
        return millis / 1000
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _number(lowered, "retry-after")
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        logger.debug("ignoring retry-after=%r: neither seconds nor an HTTP date", raw)
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_should_retry(headers: Mapping[str, str]) -> bool | None:
    """Read ``x-should-retry``: the server's explicit word on retrying, if it gave one.

    Args:
        headers: the response headers (any case).

    Returns:
        ``True`` or ``False`` as the server said, ``None`` when absent or unreadable.
    """
    raw = _lower(headers).get("x-should-retry", "").strip().lower()
    return {"true": True, "false": False}.get(raw)
