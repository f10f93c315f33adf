"""The batch executor's background tasks (submitting, polling, reading), and their end.

The executor's work goes on beside the lines it holds: one task submits, one polls, one per
ended batch reads its files. They are cancelled together when the executor stops (a task may
stop them all from within: it is left to finish its own step), and a task that fails
unexpectedly is reported, so the job stops instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("throttle.batch")


class BackgroundTasks:
    """Runs coroutines in tasks, and cancels and awaits them together.

    Args:
        failed: told of the exception of a task that ended with one (not cancelled).
    """

    def __init__(self, failed: Callable[[BaseException], None]) -> None:
        self._failed = failed
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"BackgroundTasks({len(self._tasks)} running)"

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task of its own."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("a batch executor task failed", exc_info=error)
            self._failed(error)

    def cancel(self) -> None:
        """Cancel every task but the one asking (it ends by itself)."""
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def wait(self) -> None:
        """Wait until every task has ended."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
