"""``RedisBackend``: one account's buckets shared by every process, in Redis.

Each operation of :class:`throttle.LimitBackend` is one call of one atomic Lua script
(``limits.lua``, the arithmetic of :class:`throttle.limits.KeyLimits`), so admission costs one
round trip. The script reads the server's ``TIME``: workers with skewed clocks share one
timeline. Keys are ``PREFIX{identity/group}:state`` and ``...:leases``; the braces are a hash
tag, so Redis Cluster keeps a key's two entries in one slot. Idle keys expire.

Waiting across processes: an answer handed back in one process wakes that process's queue
only, so a wait is never reported longer than ``recheck_seconds``: each key's pump (one per
process, whatever the number of waiters) asks again at that pace, and sleeps exactly as long
as the buckets need when that is shorter.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis

from throttle.clock import Clock
from throttle.errors import RequestTooLargeError
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.reservation import Cost, Ticket

SCRIPT = files("throttle.redis_backend").joinpath("limits.lua").read_text(encoding="utf-8")
DEFAULT_PREFIX = "throttle:"
IDLE_SECONDS = 2 * 86_400  # longer than the longest window (a day, Groq's requests)
RECHECK_SECONDS = 0.25


def _number(value: bytes | str | int) -> float:
    return float(value.decode() if isinstance(value, bytes) else value)


def _reading_args(reading: LimitReading | None) -> list[str]:
    return ["", ""] if reading is None else [repr(reading.limit), repr(reading.remaining)]


class RedisBackend:
    """Bucket state in Redis, shared by every process that uses the same URL and prefix.

    Args:
        client: a ``redis.asyncio.Redis`` client (``redis.asyncio.Redis.from_url(url)``).
        limits_for: the configured ceilings of a key.
        policy: how cautiously to admit.
        prefix: prepended to every Redis key.
        clock: read instead of the server's ``TIME`` (tests drive a manual clock); ``None``
            for the server's clock, which every worker shares.
        recheck_seconds: the longest wait reported, so that answers handed back in other
            processes are seen within it.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        limits_for: Callable[[BucketKey], Limits] = lambda _key: Limits(),
        policy: AdmissionPolicy | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self._client = client
        self._limits_for = limits_for
        self._policy = policy or AdmissionPolicy()
        self._prefix = prefix
        self._clock = clock
        self._recheck = recheck_seconds
        self._script = client.register_script(SCRIPT)

    def __repr__(self) -> str:
        return f"RedisBackend(prefix={self._prefix!r}, policy={self._policy!r})"

    def _keys(self, key: BucketKey) -> list[str]:
        tag = f"{self._prefix}{{{key.identity}/{key.group}}}"
        return [f"{tag}:state", f"{tag}:leases"]

    async def _run(self, key: BucketKey, operation: str, *args: str) -> Any:
        now = "" if self._clock is None else repr(self._clock.now())
        return await self._script(
            keys=self._keys(key), args=[operation, now, str(IDLE_SECONDS), *args]
        )

    async def try_admit(self, key: BucketKey, cost: Cost) -> Ticket | float:
        """See :meth:`throttle.LimitBackend.try_admit`."""
        policy = self._policy
        reply = await self._run(
            key,
            "admit",
            repr(cost.tokens),
            repr(cost.requests),
            repr(policy.reserve_fraction),
            str(policy.probe_concurrency),
            repr(policy.lease_seconds),
        )
        kind = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if kind == "wait":
            return min(_number(reply[1]), self._recheck)
        if kind == "too_large":
            requested, limit, window = (_number(value) for value in reply[1:4])
            raise RequestTooLargeError(
                f"request needs {requested:g} but the whole bucket holds {limit:g} "
                f"per {window:g}s: it can never be sent",
                requested=requested,
                limit=limit,
            )
        seq, admitted_at, requests_ledger, tokens_ledger, estimates_ledger = (
            _number(value) for value in reply[1:6]
        )
        probe = _number(reply[6]) == 1
        return Ticket(
            int(seq), admitted_at, cost, requests_ledger, tokens_ledger, estimates_ledger, probe
        )

    async def complete(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """See :meth:`throttle.LimitBackend.complete`."""
        ceiling = self._limits_for(key)
        applied = await self._run(
            key,
            "complete",
            str(ticket.seq),
            repr(ticket.admitted_at),
            repr(ticket.cost.tokens),
            repr(ticket.requests_ledger),
            repr(ticket.tokens_ledger),
            repr(ticket.estimates_ledger),
            "1" if answered else "0",
            "1" if succeeded else "0",
            *_reading_args(snapshot.requests if snapshot else None),
            *_reading_args(snapshot.tokens if snapshot else None),
            "" if ceiling.rpm is None else repr(ceiling.rpm),
            "" if ceiling.tpm is None else repr(ceiling.tpm),
            repr(ceiling.requests_window_seconds),
            repr(ceiling.tokens_window_seconds),
            str(self._policy.blind_after),
        )
        return bool(applied)

    async def cool_down(self, key: BucketKey, seconds: float) -> None:
        """See :meth:`throttle.LimitBackend.cool_down`."""
        await self._run(key, "cool_down", repr(seconds))
