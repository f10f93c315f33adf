"""Where bucket state lives: a narrow interface, and the in-process implementation.

The scheduler only ever talks to a :class:`LimitBackend`. A shared backend implements the same
calls atomically so that several processes share one account's buckets and quota breakers. The
backend owns the clock its state is kept in (this process's for the memory backend; one clock
for all processes for a shared one), so callers pass durations, never times. What other users
of the same state did (capacity handed back, a breaker opened or reset) reaches each user
through the :class:`BackendListener` it subscribed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from throttle.clock import Clock, MonotonicClock
from throttle.errors import ErrorDetails, QuotaExhaustedError, RequestTooLargeError
from throttle.headers import RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.limits import KeyLimits
from throttle.pacing import Refusal
from throttle.reservation import Admissions, Cost, Ticket


class BackendListener(Protocol):
    """What a user of a backend hears about changes made through any user of its state."""

    def capacity_returned(self, key: BucketKey | None) -> None:
        """Attempts waiting on ``key`` (on every key for ``None``) may be admitted sooner."""
        ...

    def breaker_changed(self, identity: str, details: ErrorDetails | None) -> None:
        """``identity``'s quota breaker opened (with the server's ``details``) or closed."""
        ...

    def availability_changed(self, problem: str | None) -> None:
        """The backend's storage became unreachable (``problem`` says how) or came back.

        After an outage anything may have changed: every waiting key should ask again.
        """
        ...


class Listeners:
    """The listeners subscribed to one backend: itself a listener that tells each of them."""

    def __init__(self) -> None:
        self._listeners: list[BackendListener] = []

    def __repr__(self) -> str:
        return f"Listeners({len(self._listeners)})"

    def subscribe(self, listener: BackendListener) -> Callable[[], None]:
        """Tell ``listener`` from now on; return a function that stops it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def capacity_returned(self, key: BucketKey | None) -> None:
        """Tell each listener."""
        for listener in list(self._listeners):
            listener.capacity_returned(key)

    def breaker_changed(self, identity: str, details: ErrorDetails | None) -> None:
        """Tell each listener."""
        for listener in list(self._listeners):
            listener.breaker_changed(identity, details)

    def availability_changed(self, problem: str | None) -> None:
        """Tell each listener."""
        for listener in list(self._listeners):
            listener.availability_changed(problem)


class LimitBackend(Protocol):
    """Storage and arithmetic of the buckets of every key, on the backend's own clock."""

    @property
    def lease_seconds(self) -> float:
        """How long an admitted attempt counts as in flight unless renewed or handed back."""
        ...

    @property
    def answers_at_once(self) -> bool:
        """Whether :meth:`try_admit` answers without suspending (its state is in-process)."""
        ...

    async def try_admit(self, key: BucketKey, costs: Sequence[Cost]) -> Admissions:
        """Charge ``costs`` to ``key`` in order, as many as fit now; say how long the rest wait.

        A cost never goes before an earlier one (order is the caller's: FIFO, priorities), so
        admission stops at the first cost that must wait, or that can never be admitted (the
        next call raises for it). Asking for several costs at once costs a shared backend one
        round trip, not one per cost.

        Raises:
            RequestTooLargeError: the first cost exceeds the whole bucket.
            QuotaExhaustedError: the quota breaker of ``key``'s identity is open.
            BackendUnavailableError: the shared storage is unreachable and the backend fails
                closed.
        """
        ...

    async def complete(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """Hand back a ticket with its answer's headers; return whether they were applied."""
        ...

    async def cool_down(self, key: BucketKey, seconds: float) -> None:
        """Admit nothing on ``key`` for ``seconds`` from now."""
        ...

    async def refused(self, key: BucketKey, ticket: Ticket, refusal: Refusal) -> None:
        """The server refused ``ticket``'s attempt for speed (see ``KeyLimits.refused``)."""
        ...

    async def renew(self, key: BucketKey, tickets: Sequence[Ticket]) -> None:
        """Extend the leases of ``tickets``, still in flight, by a whole lease from now."""
        ...

    async def open_breaker(self, identity: str, details: ErrorDetails) -> bool:
        """Open ``identity``'s quota breaker for every user; return whether it was closed."""
        ...

    async def reset_breaker(self, identity: str | None) -> None:
        """Close ``identity``'s quota breaker (every one for ``None``) for every user."""
        ...

    def subscribe(self, listener: BackendListener) -> Callable[[], None]:
        """Tell ``listener`` about changes from now on; return a function that stops it."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks; the state itself stays."""
        ...


class MemoryBackend:
    """Bucket state in this process's memory.

    Args:
        limits_for: the configured ceilings of a key.
        policy: how cautiously to admit.
        clock: the clock the buckets are kept in.
    """

    def __init__(
        self,
        limits_for: Callable[[BucketKey], Limits] = lambda _key: Limits(),
        policy: AdmissionPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._limits_for = limits_for
        self._policy = policy or AdmissionPolicy()
        self._clock = clock or MonotonicClock()
        self._keys: dict[BucketKey, KeyLimits] = {}
        self._breakers: dict[str, ErrorDetails] = {}
        self._listeners = Listeners()

    def __repr__(self) -> str:
        return f"MemoryBackend({self._keys!r}, open_breakers={sorted(self._breakers)})"

    @property
    def lease_seconds(self) -> float:
        """See :attr:`LimitBackend.lease_seconds`."""
        return self._policy.lease_seconds

    @property
    def answers_at_once(self) -> bool:
        """See :attr:`LimitBackend.answers_at_once`: always, the buckets are in memory."""
        return True

    def state(self, key: BucketKey) -> KeyLimits:
        """Return the live state of ``key`` (created on first use)."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyLimits(self._limits_for(key), self._policy)
        return state

    async def try_admit(self, key: BucketKey, costs: Sequence[Cost]) -> Admissions:
        """See :meth:`LimitBackend.try_admit`."""
        details = self._breakers.get(key.identity)
        if details is not None:
            raise QuotaExhaustedError(details)
        state, now = self.state(key), self._clock.now()
        tickets: list[Ticket] = []
        for cost in costs:
            try:
                result = state.try_admit(cost, now)
            except RequestTooLargeError:
                if not tickets:
                    raise
                return Admissions(tickets)
            if not isinstance(result, Ticket):
                return Admissions(tickets, result)
            tickets.append(result)
        return Admissions(tickets)

    async def complete(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """See :meth:`LimitBackend.complete`."""
        applied = self.state(key).complete(
            ticket, snapshot, self._clock.now(), answered=answered, succeeded=succeeded
        )
        self._listeners.capacity_returned(key)
        return applied

    async def cool_down(self, key: BucketKey, seconds: float) -> None:
        """See :meth:`LimitBackend.cool_down`."""
        self.state(key).cool_down(self._clock.now() + seconds)

    async def refused(self, key: BucketKey, ticket: Ticket, refusal: Refusal) -> None:
        """See :meth:`LimitBackend.refused`."""
        self.state(key).refused(ticket, refusal, self._clock.now())

    async def renew(self, key: BucketKey, tickets: Sequence[Ticket]) -> None:
        """See :meth:`LimitBackend.renew`."""
        state, now = self.state(key), self._clock.now()
        for ticket in tickets:
            state.renew(ticket.seq, now)

    async def open_breaker(self, identity: str, details: ErrorDetails) -> bool:
        """See :meth:`LimitBackend.open_breaker`."""
        if identity in self._breakers:
            return False
        self._breakers[identity] = details
        self._listeners.breaker_changed(identity, details)
        return True

    async def reset_breaker(self, identity: str | None) -> None:
        """See :meth:`LimitBackend.reset_breaker`."""
        for name in list(self._breakers) if identity is None else [identity]:
            if self._breakers.pop(name, None) is not None:
                self._listeners.breaker_changed(name, None)

    def subscribe(self, listener: BackendListener) -> Callable[[], None]:
        """See :meth:`LimitBackend.subscribe`."""
        return self._listeners.subscribe(listener)

    async def close(self) -> None:
        """See :meth:`LimitBackend.close`: nothing to release in memory."""
