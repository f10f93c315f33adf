"""Waiting in tests for counters that signal no event (a server's stats, an executor's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (in real time) until ``condition`` holds.

    Raises:
        TimeoutError: it did not hold within ``seconds``.
    """
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the counters looked at have no event
            await asyncio.sleep(0.002)
