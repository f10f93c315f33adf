"""What a worker does while Redis is unreachable: the failure policy, as a small state machine.

``fail_closed`` admits nothing while Redis is away (sending without the shared state could
exceed the limits every worker shares); waiting attempts wait up to ``outage_seconds`` for it
to come back, then fail with :class:`BackendUnavailableError`. ``fail_open`` admits on this
process's own buckets meanwhile, with a warning and the ``throttle_backend_unavailable``
metric: the job goes on, and N workers together may exceed the limits until Redis returns.
Either way Redis is tried again every ``reconnect_seconds``, not on every call, and its return
is noticed by the next call that reaches it.

Pure: every method takes ``now`` (this process's monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from throttle.backend import MemoryBackend
from throttle.errors import BackendUnavailableError, ConfigurationError
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.limit_settings import REDIS_FAILURE_POLICIES
from throttle.reservation import Admissions, Cost, Ticket

FAIL_CLOSED, FAIL_OPEN = REDIS_FAILURE_POLICIES


def check_failure_policy(policy: str) -> str:
    """Return ``policy`` if it is one of :data:`REDIS_FAILURE_POLICIES`.

    Raises:
        ConfigurationError: it is not.
    """
    if policy not in REDIS_FAILURE_POLICIES:
        raise ConfigurationError(
            f"the Redis failure policy must be 'fail_closed' or 'fail_open', not {policy!r}"
        )
    return policy


class Outage:
    """Whether Redis is reachable, since when not, and when to try it again.

    Args:
        policy: ``"fail_closed"`` or ``"fail_open"``.
        where: the server, named without its password.
        outage_seconds: how long ``fail_closed`` holds attempts before failing them.
        reconnect_seconds: how often an unreachable Redis is tried again.
    """

    def __init__(
        self, policy: str, where: str, outage_seconds: float, reconnect_seconds: float
    ) -> None:
        self.policy = check_failure_policy(policy)
        if not outage_seconds >= 0 or not reconnect_seconds > 0:
            raise ConfigurationError(
                "outage_seconds must not be negative and reconnect_seconds must be positive: "
                f"{outage_seconds!r}, {reconnect_seconds!r}"
            )
        self._where = where
        self._outage_seconds = outage_seconds
        self._reconnect_seconds = reconnect_seconds
        self.down_since: float | None = None
        self._next_try = 0.0
        self._cause = ""

    def __repr__(self) -> str:
        state = "up" if self.down_since is None else f"down since {self.down_since:.1f}"
        return f"Outage({self.policy}, {state})"

    @property
    def fails_open(self) -> bool:
        """Whether attempts are admitted on local state while Redis is away."""
        return self.policy == FAIL_OPEN

    def should_try(self, now: float) -> bool:
        """Return whether to send the next command to Redis (up, or due for another try)."""
        return self.down_since is None or now >= self._next_try

    def failed(self, cause: BaseException, now: float) -> str | None:
        """Record a failed command; return the problem to announce if Redis was up until now."""
        self._next_try = now + self._reconnect_seconds
        self._cause = f"{type(cause).__name__}: {cause}"
        if self.down_since is not None:
            return None
        self.down_since = now
        meanwhile = (
            "admitting on this process's own buckets until it returns (fail_open): workers "
            "together may exceed the shared limits meanwhile"
            if self.fails_open
            else f"admitting nothing until it returns (fail_closed); waiting attempts fail "
            f"after {self._outage_seconds:g}s"
        )
        return f"{self._where} is unreachable ({self._cause}); {meanwhile}"

    def recovered(self) -> bool:
        """Record a command that reached Redis; return whether it had been unreachable."""
        if self.down_since is None:
            return False
        self.down_since = None
        return True

    def wait_or_fail(self, now: float) -> float:
        """Under ``fail_closed``, return seconds until Redis is tried again.

        Raises:
            BackendUnavailableError: Redis has been unreachable longer than ``outage_seconds``.
        """
        assert self.down_since is not None  # noqa: S101 - only asked during an outage
        if now - self.down_since >= self._outage_seconds:
            raise BackendUnavailableError(
                f"{self._where} has been unreachable for {now - self.down_since:.0f}s "
                f"({self._cause}); the request was not sent (failure policy fail_closed: "
                "choose fail_open to admit on local limits while Redis is away)"
            )
        return max(self._next_try - now, 0.0)


class LocalFallback(MemoryBackend):
    """This process's own buckets, admitting under ``fail_open`` while Redis is away.

    It knows the tickets it issued, so that each goes back to the buckets that charged it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._issued: dict[int, Ticket] = {}

    def issued(self, ticket: Ticket) -> bool:
        """Return whether this fallback admitted ``ticket`` (and has not had it back)."""
        return self._issued.get(id(ticket)) is ticket

    async def try_admit(self, key: BucketKey, costs: Sequence[Cost]) -> Admissions:
        """See :meth:`throttle.LimitBackend.try_admit`."""
        admissions = await super().try_admit(key, costs)
        for ticket in admissions.tickets:
            self._issued[id(ticket)] = ticket
        return admissions

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
        self._issued.pop(id(ticket), None)
        return await super().complete(key, ticket, snapshot, answered=answered, succeeded=succeeded)
