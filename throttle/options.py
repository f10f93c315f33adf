"""Every setting of a :class:`throttle.Throttle`, in one validated object.

Each setting is given once, here; every part of throttle that needs one reads it from this
object (the in-flight cap, for instance, bounds admission, the native client's connection
pool and ``throttle run``'s lines in progress). Contradictory arguments are refused when the
object is built, naming both. The table of defaults in ``docs/usage.md`` is checked against
this class by the test suite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from throttle.backend import LimitBackend, MemoryBackend
from throttle.clock import Clock, MonotonicClock
from throttle.errors import ConfigurationError
from throttle.estimate import DEFAULT_OUTPUT_TOKENS
from throttle.keys import BucketKey, GroupMap
from throttle.limit_settings import (
    REDIS_FAILURE_POLICIES,
    AdmissionPolicy,
    Limits,
    default_max_in_flight,
)
from throttle.retry import RetryPolicy

AUTH_STYLES = ("auto", "bearer", "api-key")


@dataclass(frozen=True, slots=True)
class ThrottleOptions:
    """How a :class:`throttle.Throttle` behaves.

    Attributes:
        identity: whose limits these are, when several keys share one project's limits.
            Defaults to a hash of each request's API key.
        auth: how the native client sends its key: ``"bearer"`` (``Authorization``),
            ``"api-key"`` (Azure) or ``"auto"`` (``api-key`` for Azure URLs).
        groups: model name or glob to shared-limit group (``{"gpt-4o*": "4o-pool"}``).
        limits: known limits as ceilings, for every group or per group name. Only for the
            default in-memory backend: a backend given here holds its own.
        retry: how transient failures are retried.
        admission: how cautiously to admit (reserve, probing). Only for the default backend.
        backend: where bucket state lives; in this process's memory by default.
        redis_url: share the buckets and quota breakers with every process using the same
            Redis (``redis://``, ``rediss://`` for TLS); needs the ``redis`` extra. Never
            shown with its password.
        redis_failure_policy: while Redis is unreachable, ``"fail_closed"`` admits nothing
            (attempts fail after 30 s) and ``"fail_open"`` admits on this process's own
            buckets, with a warning.
        default_output_tokens: output tokens reserved when a body sets no ``max_*_tokens``.
        max_in_flight: requests sent and not yet answered, at most, over all keys; by default
            1,024, or half the process's open-file limit if lower (the rate limits keep
            requests in flight at rate x latency by themselves: this bound guards sockets).
        max_queued: requests held at once (waiting for room in the buckets, or sent), at
            most; beyond it ``post`` and the adapters wait for room, and ``post(...,
            wait_for_room=False)`` raises :class:`QueueFullError`. ``None``: no bound (each
            waiting request holds about 4 KB: ``benchmarks/waiting_memory.py``).
        timeout: seconds one attempt may take (the native client and every adapter) before
            it counts as a transport failure, retried like one.
        headers: extra headers the native client sends with every request.
        clock: where time is read and waited on (tests drive a manual one).

    Raises:
        ConfigurationError: a value is out of range, or two settings contradict each other.
    """

    identity: str | None = None
    auth: str = "auto"
    groups: Mapping[str, str] = field(default_factory=dict)
    limits: Limits | Mapping[str, Limits] | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    admission: AdmissionPolicy | None = None
    backend: LimitBackend | None = None
    redis_url: str | None = field(default=None, repr=False)
    redis_failure_policy: str = "fail_closed"
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    max_in_flight: int = field(default_factory=default_max_in_flight)
    max_queued: int | None = None
    timeout: float = 600.0
    headers: Mapping[str, str] = field(default_factory=dict)
    clock: Clock = field(default_factory=MonotonicClock)
    group_map: GroupMap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.auth not in AUTH_STYLES:
            raise ConfigurationError(
                f"auth must be 'auto', 'bearer' or 'api-key', not {self.auth!r}"
            )
        if isinstance(self.max_in_flight, bool) or not isinstance(self.max_in_flight, int):
            raise ConfigurationError(
                f"max_in_flight must be a whole number: {self.max_in_flight!r}"
            )
        if self.max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be at least 1: {self.max_in_flight}")
        if self.max_queued is not None and (
            isinstance(self.max_queued, bool)
            or not isinstance(self.max_queued, int)
            or self.max_queued < 1
        ):
            raise ConfigurationError(
                f"max_queued must be a whole number of at least 1, or None: {self.max_queued!r}"
            )
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout)) or (
            self.timeout <= 0
        ):
            raise ConfigurationError(
                f"timeout must be a positive number of seconds: {self.timeout!r}"
            )
        if self.default_output_tokens < 0:
            raise ConfigurationError(
                f"default_output_tokens must not be negative: {self.default_output_tokens}"
            )
        for name in ("groups", "headers"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigurationError(f"{name} must be a mapping, not {getattr(self, name)!r}")
        if self.identity is not None and not self.identity:
            raise ConfigurationError("identity must not be empty")
        self._check_backend_settings()
        object.__setattr__(self, "group_map", GroupMap(self.groups))

    def _check_backend_settings(self) -> None:
        if self.redis_failure_policy not in REDIS_FAILURE_POLICIES:
            raise ConfigurationError(
                "redis_failure_policy must be 'fail_closed' or 'fail_open', "
                f"not {self.redis_failure_policy!r}"
            )
        if self.backend is not None and self.redis_url is not None:
            raise ConfigurationError(
                "backend and redis_url were both given: give the Redis URL alone (throttle "
                "builds the backend), or build a RedisBackend and pass it as backend"
            )
        if self.backend is not None:
            for name in ("limits", "admission"):
                if getattr(self, name) is not None:
                    raise ConfigurationError(
                        f"backend and {name} were both given: the backend holds its own "
                        f"{name}; configure them on the backend instead"
                    )

    def limits_for(self, key: BucketKey) -> Limits:
        """Return the configured ceilings of ``key``'s group (none known: learn them)."""
        if isinstance(self.limits, Limits):
            return self.limits
        if self.limits is None:
            return Limits()
        return self.limits.get(key.group, Limits())

    def make_backend(self) -> LimitBackend:
        """Return the backend given, or a fresh in-memory one built from ``limits``.

        :class:`throttle.Throttle` builds the Redis backend itself when ``redis_url`` is set
        (the core never imports a backend).
        """
        if self.backend is not None:
            return self.backend
        return MemoryBackend(self.limits_for, self.admission, self.clock)


class ThrottleSettings(TypedDict, total=False):
    """The keyword arguments of :class:`throttle.Throttle`.

    The fields of :class:`ThrottleOptions`, each optional (the test suite checks they match).
    """

    identity: str | None
    auth: str
    groups: Mapping[str, str]
    limits: Limits | Mapping[str, Limits] | None
    retry: RetryPolicy
    admission: AdmissionPolicy | None
    backend: LimitBackend | None
    redis_url: str | None
    redis_failure_policy: str
    default_output_tokens: int
    max_in_flight: int
    max_queued: int | None
    timeout: float
    headers: Mapping[str, str]
    clock: Clock
