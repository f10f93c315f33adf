"""The three admitters the admission benchmarks compare, behind one small interface.

An admission is what the issue defines: acquire, ``await asyncio.sleep(0)``, release, with
limits that never bind. Each :class:`Gate` admits on one of ``keys`` keys and can park a
waiter on a key that never has room (the "blocked" key).

* throttle: ``Throttle(limits=...)`` with no HTTP at all; an admission is
  ``await client.run(yield_once, model=f"m{key}", tokens=1)`` (the public API; each model is
  its own bucket key). Limits never bind (RPM 1e9, TPM 1e12 per key) and ``max_in_flight`` is
  raised to 10**6 so that the in-flight bound (default 1,024) does not bind at 1,000 tasks
  either. The blocked key is a model whose ceiling is RPM 1: its one request is spent first.
* aiolimiter: an ``AsyncLimiter(1e9, 1)`` per key (``async with``; it has no release). The
  blocked key is an ``AsyncLimiter(1, 3600)`` whose one unit is spent first.
* bare asyncio: an ``asyncio.Semaphore(10**9)`` per key; the blocked key a
  ``Semaphore(0)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from aiolimiter import AsyncLimiter

from throttle import Limits, Throttle

UNBOUND = Limits(rpm=1e9, tpm=1e12)
BLOCKED = Limits(rpm=1, tpm=1e12)
BLOCKED_MODEL = "blocked"
NO_CAP = 10**6  # max_in_flight for the admission benchmarks: no cap binds


async def yield_once() -> None:
    """The admitted work: one turn of the event loop."""
    await asyncio.sleep(0)


class Gate(Protocol):
    """Admits on a key, or parks on the blocked key."""

    async def admit(self, key: int, latencies: list[float] | None = None) -> None:
        """Acquire on ``key``, yield once, release; append the wait to ``latencies``."""

    async def park(self) -> None:
        """Wait on the blocked key (no room there for the rest of the run)."""


class Ceilings(Mapping[str, Limits]):
    """Per-group ceilings: RPM 1 for the blocked model, limits that never bind for any other."""

    def __getitem__(self, group: str) -> Limits:
        return BLOCKED if group == BLOCKED_MODEL else UNBOUND

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class ThrottleGate:
    """throttle's admission through :meth:`Throttle.run` (no HTTP)."""

    def __init__(self, client: Throttle, keys: int) -> None:
        self.client = client
        self.models = [f"m{key}" for key in range(keys)]

    def __repr__(self) -> str:
        return f"ThrottleGate(keys={len(self.models)}, {self.client!r})"

    async def admit(self, key: int, latencies: list[float] | None = None) -> None:
        """Admit through ``Throttle.run``; the wait ends when the work starts."""
        if latencies is None:
            await self.client.run(yield_once, model=self.models[key], tokens=1)
            return
        asked = time.perf_counter()

        async def timed() -> None:
            latencies.append(time.perf_counter() - asked)
            await asyncio.sleep(0)

        await self.client.run(timed, model=self.models[key], tokens=1)

    async def park(self) -> None:
        """Queue on the blocked model."""
        await self.client.run(yield_once, model=BLOCKED_MODEL, tokens=1)


class LimiterGate:
    """aiolimiter's leaky bucket, one per key."""

    def __init__(self, keys: int) -> None:
        self.limiters = [AsyncLimiter(1e9, 1) for _ in range(keys)]
        self.blocked = AsyncLimiter(1, 3600)

    def __repr__(self) -> str:
        return f"LimiterGate(keys={len(self.limiters)})"

    async def admit(self, key: int, latencies: list[float] | None = None) -> None:
        """Acquire the key's limiter (nothing to release)."""
        asked = time.perf_counter()
        async with self.limiters[key]:
            if latencies is not None:
                latencies.append(time.perf_counter() - asked)
            await asyncio.sleep(0)

    async def park(self) -> None:
        """Acquire the spent limiter."""
        await self.blocked.acquire()


class SemaphoreGate:
    """A bare ``asyncio.Semaphore`` per key."""

    def __init__(self, keys: int) -> None:
        self.semaphores = [asyncio.Semaphore(10**9) for _ in range(keys)]
        self.blocked = asyncio.Semaphore(0)

    def __repr__(self) -> str:
        return f"SemaphoreGate(keys={len(self.semaphores)})"

    async def admit(self, key: int, latencies: list[float] | None = None) -> None:
        """Acquire the key's semaphore, yield, release."""
        asked = time.perf_counter()
        async with self.semaphores[key]:
            if latencies is not None:
                latencies.append(time.perf_counter() - asked)
            await asyncio.sleep(0)

    async def park(self) -> None:
        """Acquire the semaphore that has no room."""
        await self.blocked.acquire()


@asynccontextmanager
async def throttle_gate(keys: int) -> AsyncIterator[Gate]:
    """A fresh Throttle, its blocked model already spent."""
    async with Throttle(limits=Ceilings(), max_in_flight=NO_CAP) as client:
        gate = ThrottleGate(client, keys)
        await gate.park()  # spends the blocked model's one request
        yield gate


@asynccontextmanager
async def limiter_gate(keys: int) -> AsyncIterator[Gate]:
    """Fresh limiters, the blocked one already spent."""
    gate = LimiterGate(keys)
    await gate.park()
    yield gate


@asynccontextmanager
async def semaphore_gate(keys: int) -> AsyncIterator[Gate]:
    """Fresh semaphores."""
    yield SemaphoreGate(keys)


GATES: dict[str, Callable[[int], AbstractAsyncContextManager[Gate]]] = {
    "throttle": throttle_gate,
    "aiolimiter": limiter_gate,
    "asyncio": semaphore_gate,
}
"""The subjects by report column: a factory of a gate over ``keys`` keys."""
