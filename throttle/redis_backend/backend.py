"""``RedisBackend``: one account's buckets and quota breakers shared by every process, in Redis.

Each operation of :class:`throttle.LimitBackend` is an operation of one atomic Lua script
(``limits.lua``, the arithmetic of :class:`throttle.limits.KeyLimits`); the operations that
a process's tasks ask for while a call is on its way go together in the next call
(``batches``), so admission costs at most one round trip, shared with other admissions and
hand-backs. The script reads the server's ``TIME``: workers with skewed clocks share one
timeline. Keys (``key_names``) are hash-tagged per identity for Redis Cluster; idle keys
expire.

Waiting across processes: the script publishes when capacity comes back, and each process's
one subscription (``notifications``) wakes its waiting keys; a wait is never reported longer
than ``recheck_seconds``, a safety net for messages lost while a subscription was down. What
happens while Redis is unreachable is the failure policy (``outage``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, Self

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from throttle.backend import BackendListener, Listeners
from throttle.clock import Clock
from throttle.errors import BackendUnavailableError, ClosedError, ErrorDetails
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.pacing import BURST_SECONDS, FLOOR, Refusal, rule_for
from throttle.redis_backend.batches import Batches, Operation
from throttle.redis_backend.connection import connect, describe
from throttle.redis_backend.key_names import reset_breakers, script_keys
from throttle.redis_backend.notifications import Notifications
from throttle.redis_backend.outage import FAIL_CLOSED, LocalFallback, Outage
from throttle.redis_backend.script_io import (
    admissions_of,
    admit_args,
    breaker_args,
    complete_args,
    policy_args,
)
from throttle.reservation import Admissions, Cost, Ticket

logger = logging.getLogger(__name__)
SCRIPT = files("throttle.redis_backend").joinpath("limits.lua").read_text(encoding="utf-8")
DEFAULT_PREFIX = "throttle:"
IDLE_SECONDS = 2 * 86_400  # longer than the longest window (a day, Groq's requests)
RECHECK_SECONDS = 5.0
REDIS_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)


class _UnreachableError(Exception):
    """Redis did not answer (or is not tried again yet): apply the failure policy."""


class RedisBackend:
    """Bucket state in Redis, shared by every process that uses the same server and prefix.

    Args:
        client: a ``redis.asyncio.Redis`` client; :meth:`from_url` makes one from a URL.
        limits_for: the configured ceilings of a key.
        policy: how cautiously to admit.
        prefix: prepended to every Redis key and to the notification channel.
        clock: read instead of the server's ``TIME`` (tests drive a manual clock); ``None``
            for the server's clock, which every worker shares.
        recheck_seconds: the longest wait reported (a safety net for lost notifications).
        failure_policy: ``"fail_closed"`` or ``"fail_open"`` (see ``outage``).
        outage_seconds: how long ``fail_closed`` holds attempts before failing them.
        reconnect_seconds: how often an unreachable Redis is tried again.
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
        failure_policy: str = FAIL_CLOSED,
        outage_seconds: float = 30.0,
        reconnect_seconds: float = 1.0,
    ) -> None:
        self._client = client
        self._owns_client = False
        self._limits_for = limits_for
        self._policy = policy or AdmissionPolicy()
        self._prefix = prefix
        self._clock = clock
        self._recheck = recheck_seconds
        self._script = client.register_script(SCRIPT)
        self._policy_args = policy_args(self._policy)
        self._batches = Batches(self._send)
        self._process = uuid.uuid4().hex
        self._since: float | None = None  # when this process first reached Redis
        self.where = describe(client)
        self._outage = Outage(failure_policy, self.where, outage_seconds, reconnect_seconds)
        self._listeners = Listeners()
        self._notifications = Notifications(
            client, f"{prefix}notifications", self._process, reconnect_seconds, self._listeners
        )
        self._fallback = LocalFallback(limits_for, self._policy, clock)

    @classmethod
    def from_url(
        cls,
        url: str,
        limits_for: Callable[[BucketKey], Limits] = lambda _key: Limits(),
        policy: AdmissionPolicy | None = None,
        **settings: Any,
    ) -> Self:
        """Connect to ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

        The backend owns the client: :meth:`close` closes it. Other arguments as for the class.

        Raises:
            ConfigurationError: the URL is not a Redis URL (named without its password).
        """
        backend = cls(connect(url), limits_for, policy, **settings)
        backend._owns_client = True
        return backend

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"RedisBackend({self.where}, prefix={self._prefix!r}, {self._outage!r}, "
            f"policy={self._policy!r})"
        )

    @property
    def lease_seconds(self) -> float:
        """See :attr:`throttle.LimitBackend.lease_seconds`."""
        return self._policy.lease_seconds

    @property
    def answers_at_once(self) -> bool:
        """See :attr:`throttle.LimitBackend.answers_at_once`: never, Redis is a round trip."""
        return False

    async def _call(self, key: BucketKey, operation: str, *args: str) -> Any:
        """Run one operation of the script (in the next call for its identity; ``batches``).

        Raises:
            _UnreachableError: Redis did not answer (or is not tried again yet).
            ClosedError: the backend was closed.
        """
        return await self._batches.run(key.identity, key.group, operation, list(args))

    async def _send(self, identity: str, operations: list[Operation]) -> list[Any]:
        """Run ``operations`` of ``identity`` in one call of the script; return their replies."""
        if not self._outage.should_try(time.monotonic()):
            raise _UnreachableError
        groups = list(dict.fromkeys(op.group for op in operations if op.name != "open_breaker"))
        numbers = {group: str(n) for n, group in enumerate(groups, 1)}
        try:
            if self._since is None:
                await self._start()
            args = [
                "" if self._clock is None else repr(self._clock.now()),
                str(IDLE_SECONDS),
                self._notifications.channel,
                identity,
                self._process,
                repr(self._since),
                *self._policy_args,
                str(len(groups)),
                *groups,
            ]
            for op in operations:
                args += [op.name, numbers.get(op.group, "0"), str(len(op.args)), *op.args]
            replies: list[Any] = await self._script(
                keys=script_keys(self._prefix, identity, groups), args=args
            )
        except REDIS_FAILURES as error:
            problem = self._outage.failed(error, time.monotonic())
            if problem is not None:
                logger.warning("%s", problem)
                self._listeners.availability_changed(problem)
            raise _UnreachableError from error
        if self._outage.recovered():
            logger.warning("%s is reachable again: limits are shared again", self.where)
            self._listeners.availability_changed(None)
        return replies

    async def _start(self) -> None:
        """On first contact: note when this process started, and subscribe to notifications."""
        if self._clock is not None:
            since = self._clock.now()
        else:
            seconds, micros = await self._client.time()
            since = seconds + micros / 1e6
        await self._notifications.start()
        self._since = since

    async def try_admit(self, key: BucketKey, costs: Sequence[Cost]) -> Admissions:
        """See :meth:`throttle.LimitBackend.try_admit`."""
        try:
            reply = await self._call(key, "admit", *admit_args(costs))
        except _UnreachableError:
            return await self._admit_without_redis(key, costs)
        return admissions_of(reply, costs, self._recheck)

    async def _admit_without_redis(self, key: BucketKey, costs: Sequence[Cost]) -> Admissions:
        if not self._outage.fails_open:
            return Admissions([], self._outage.wait_or_fail(time.monotonic()))
        return await self._fallback.try_admit(key, costs)

    async def complete(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """See :meth:`throttle.LimitBackend.complete`.

        Never fails for want of Redis: the answer is the caller's; the reservation's lease
        ends on its own.
        """
        if self._fallback.issued(ticket):
            return await self._fallback.complete(
                key, ticket, snapshot, answered=answered, succeeded=succeeded
            )
        arguments = complete_args(
            ticket,
            snapshot,
            self._limits_for(key),
            answered=answered,
            succeeded=succeeded,
        )
        try:
            applied = await self._call(key, "complete", *arguments)
        except (_UnreachableError, ClosedError):
            return False
        return bool(applied)

    async def cool_down(self, key: BucketKey, seconds: float) -> None:
        """See :meth:`throttle.LimitBackend.cool_down`."""
        try:
            await self._call(key, "cool_down", repr(seconds))
        except _UnreachableError:
            await self._fallback.cool_down(key, seconds)

    async def refused(self, key: BucketKey, ticket: Ticket, refusal: Refusal) -> None:
        """See :meth:`throttle.LimitBackend.refused`."""
        if self._fallback.issued(ticket):
            await self._fallback.refused(key, ticket, refusal)
            return
        rule = rule_for(refusal)
        arguments = (
            str(ticket.seq),
            refusal.value,
            *(repr(x) for x in (rule.cut, rule.growth_per_second, BURST_SECONDS, FLOOR)),
        )
        with contextlib.suppress(_UnreachableError):
            await self._call(key, "refused", *arguments)

    async def renew(self, key: BucketKey, tickets: Sequence[Ticket]) -> None:
        """See :meth:`throttle.LimitBackend.renew`."""
        local = [ticket for ticket in tickets if self._fallback.issued(ticket)]
        shared = [str(ticket.seq) for ticket in tickets if not self._fallback.issued(ticket)]
        if local:
            await self._fallback.renew(key, local)
        if shared:
            # Without Redis the leases may end: their capacity returns, as after a crash.
            with contextlib.suppress(_UnreachableError):
                await self._call(key, "renew", *shared)

    async def open_breaker(self, identity: str, details: ErrorDetails) -> bool:
        """See :meth:`throttle.LimitBackend.open_breaker`."""
        try:
            opened = await self._call(
                BucketKey(identity, ""), "open_breaker", *breaker_args(details)
            )
        except _UnreachableError:
            return await self._fallback.open_breaker(identity, details)
        return bool(opened)

    async def reset_breaker(self, identity: str | None) -> None:
        """See :meth:`throttle.LimitBackend.reset_breaker`.

        Raises:
            BackendUnavailableError: Redis did not answer; no process was told.
        """
        await self._fallback.reset_breaker(identity)
        try:
            await reset_breakers(self._client, self._prefix, self._notifications.channel, identity)
        except REDIS_FAILURES as error:
            raise BackendUnavailableError(
                f"could not reset the quota breaker in {self.where} ({error}): try again"
            ) from error

    def subscribe(self, listener: BackendListener) -> Callable[[], None]:
        """See :meth:`throttle.LimitBackend.subscribe`."""
        return self._listeners.subscribe(listener)

    async def close(self) -> None:
        """Stop listening and sending; close the client if :meth:`from_url` made it."""
        await self._batches.close(ClosedError(f"the backend on {self.where} was closed"))
        await self._notifications.close()
        if self._owns_client:
            await self._client.aclose()
