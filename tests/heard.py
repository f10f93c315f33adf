"""A backend listener for tests: records what it was told, and waits until it was told enough."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from throttle import BucketKey, ErrorDetails


class Heard:
    """Records every call of :class:`throttle.BackendListener` made on it."""

    def __init__(self) -> None:
        self.capacity: list[BucketKey | None] = []
        self.breakers: list[tuple[str, ErrorDetails | None]] = []
        self.problems: list[str | None] = []
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"Heard({self.capacity}, {self.breakers}, {self.problems})"

    def capacity_returned(self, key: BucketKey | None) -> None:
        """Record it."""
        self.capacity.append(key)
        self._changed.set()

    def breaker_changed(self, identity: str, details: ErrorDetails | None) -> None:
        """Record it."""
        self.breakers.append((identity, details))
        self._changed.set()

    def availability_changed(self, problem: str | None) -> None:
        """Record it."""
        self.problems.append(problem)
        self._changed.set()

    async def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        """Return once ``condition()`` holds (told synchronously or by a later message).

        Raises:
            TimeoutError: it did not hold within ``seconds``.
        """
        async with asyncio.timeout(seconds):
            while not condition():
                self._changed.clear()
                await self._changed.wait()
