"""The one place throttle reads time and waits, so tests can drive time by hand."""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Clock(Protocol):
    """Where the scheduler reads the time and waits. Times are seconds on a monotonic scale."""

    def now(self) -> float:
        """Return the current time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass (``inf``: no time limit).

        Returns:
            ``True`` if the event was set.
        """
        ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[asyncio.Timeout]:
        """Return a context that cancels its block ``seconds`` from now (``None``: never).

        Like ``asyncio.timeout``: the block ends with ``TimeoutError`` and the scope's
        ``expired()`` is true.
        """
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and asyncio's timers."""

    def __repr__(self) -> str:
        return f"MonotonicClock(now={self.now():.3f})"

    def now(self) -> float:
        """Return ``time.monotonic()`` in seconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` with ``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass."""
        if event.is_set():
            return True
        if math.isinf(seconds):
            await event.wait()
            return True
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        except TimeoutError:
            return False
        return True

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[asyncio.Timeout]:
        """Return ``asyncio.timeout(seconds)``."""
        return asyncio.timeout(seconds)
