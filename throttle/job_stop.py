"""How ``throttle run`` runs its lines, and how it stops: at the end, on a signal or an error.

The lines run on workers, at most one per line in flight: each worker takes the next line when
its own ends (:meth:`LineTasks.run`). Stopping sends nothing more: no worker takes another line
and the executor's ``stop`` leaves the queued lines unsent (they get no result, and run on the
next invocation). Lines in flight get ``grace`` seconds (:data:`STOP_GRACE_SECONDS` by default)
for their answers, already paid for, to arrive and be written; then they are cancelled, as they
are at once on a second signal, and run again next time. :meth:`LineTasks.close` cancels and
awaits whatever is left, so once it returns no task of the job can still write a result, and
none is left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 10.0  # for answers in flight after a stop; a second signal cuts it short
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")  # a line, as the runner takes it


class LineTasks:
    """The workers that run a job's lines, and how they stop.

    Args:
        stop_sending: the executor's ``stop``; run once, on the first stop.
        grace: seconds the lines in flight get after a stop before they are cancelled.
    """

    def __init__(
        self,
        stop_sending: Callable[[], Coroutine[Any, Any, None]],
        *,
        grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.stopped = False
        self.interrupted = False
        self._stop_sending = stop_sending
        self._grace = grace
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Task[None] | None = None
        self._cutoff: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        state = "interrupted" if self.interrupted else "stopped" if self.stopped else "running"
        return f"LineTasks({len(self._tasks)} running, {state})"

    async def run(
        self,
        take: Callable[[], T | None],
        handle: Callable[[T], Awaitable[None]],
        *,
        workers: int,
    ) -> None:
        """Handle each line ``take`` gives, on at most ``workers`` tasks; return when all ended.

        A task per worker, not per line: a line costs no task, context or semaphore (the
        workers are the bound on lines in flight). A worker starts with the line it was
        started for, while fewer than ``workers`` run; then each, its line handled, takes the
        next, until ``take`` gives ``None`` or the job stops. ``take`` runs in one step, never
        two at once, so lines are taken in their order.

        Args:
            take: the next line, or ``None`` when there is none.
            handle: runs one line to its end; an exception it raises is logged (the line has
                no result and runs next time) and the worker goes on.
            workers: the most lines in flight.
        """
        for _ in range(workers):
            line = None if self.stopped else take()
            if line is None:
                break
            task = asyncio.create_task(self._work(line, take, handle))
            self._tasks.add(task)
            task.add_done_callback(self._ended)
        await self.wait()

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("a job's worker failed", exc_info=error)

    async def _work(
        self, line: T | None, take: Callable[[], T | None], handle: Callable[[T], Awaitable[None]]
    ) -> None:
        while line is not None:
            try:
                await handle(line)
            except Exception:  # a bug: that line gets no result now and runs next time
                logger.exception("a line failed unexpectedly; it has no result and runs next time")
            line = None if self.stopped else take()

    def stop(self) -> None:
        """Send nothing more; cancel the lines still in flight once the grace has passed."""
        if self.stopped:
            return
        self.stopped = True
        loop = asyncio.get_running_loop()
        self._stopping = loop.create_task(self._stop_sending())
        self._cutoff = loop.call_later(self._grace, self.cancel)

    def interrupt(self) -> None:
        """A signal: the first one stops (see :meth:`stop`); one after a stop cancels at once."""
        if self.stopped:
            self.cancel()
        self.interrupted = True
        self.stop()

    def cancel(self) -> None:
        """Cancel every line still running: it gets no result now, and runs next time."""
        for task in self._tasks:
            task.cancel()

    async def wait(self) -> None:
        """Wait until every line started has ended."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Cancel the lines still running (the job itself was cancelled) and await them all.

        Awaits the executor's ``stop`` too: when this returns, no task of the job is left.
        """
        self.cancel()
        await self.wait()
        if self._cutoff is not None:
            self._cutoff.cancel()
        if self._stopping is not None:
            try:
                await self._stopping
            except Exception:
                logger.exception("stopping the executor failed")


@contextlib.contextmanager
def signals_call(handler: Callable[[], None]) -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM call ``handler`` instead of ending the process."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, handler)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
