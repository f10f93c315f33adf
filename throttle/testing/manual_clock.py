"""A clock that moves only when a test moves it."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ManualClock:
    """A :class:`throttle.clock.Clock` for tests: time stands still until :meth:`advance`.

    Args:
        start: the initial time in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:.3f}, timers={len(self._timers)})"

    def now(self) -> float:
        """Return the current (manual) time in seconds."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock was advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + seconds, next(self._order), future))
        await future

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or the clock was advanced by ``seconds``."""
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        timer = None if math.isinf(seconds) else asyncio.ensure_future(self.sleep(seconds))
        pending = {waiter} if timer is None else {waiter, timer}
        try:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this wait is cancelled: leave no helper task behind
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return waiter in done

    @asynccontextmanager
    async def timeout(self, seconds: float | None) -> AsyncIterator[asyncio.Timeout]:
        """Cancel the block once the clock was advanced by ``seconds`` (``None``: never)."""
        async with asyncio.timeout(None) as scope:
            if seconds is None:
                yield scope
                return
            loop = asyncio.get_running_loop()
            timer = loop.create_future()
            heapq.heappush(self._timers, (self._now + seconds, next(self._order), timer))

            def expire(fired: asyncio.Future[None]) -> None:
                # Manual time reached the deadline: expire the real scope at once.
                if not fired.cancelled():
                    scope.reschedule(loop.time())

            timer.add_done_callback(expire)
            try:
                yield scope
            finally:
                timer.cancel()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every timer that falls due, in order."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, future = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle() -> None:
    """Let woken tasks run until they block again."""
    for _ in range(20):
        await asyncio.sleep(0)
