"""How ``throttle run`` stops: at the end of its input, on a signal, or on a fatal error.

Stopping sends nothing more: the runner reads no further and the executor's ``stop`` leaves
the queued lines unsent (they get no result, and run on the next invocation). Lines in flight
get ``grace`` seconds (:data:`STOP_GRACE_SECONDS` by default) for their answers, already paid
for, to arrive and be written; then they are cancelled, as they are at once on a second
signal, and run again next time. :meth:`LineTasks.close` cancels and awaits whatever is left,
so once it returns no task of the job can still write a result, and none is left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

logger = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 10.0  # for answers in flight after a stop; a second signal cuts it short
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LineTasks:
    """The tasks that run a job's lines, and how they stop.

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

    def start(self, line: Coroutine[Any, Any, None], on_done: Callable[[], None]) -> None:
        """Run ``line`` in a task of its own; call ``on_done`` when it ends, however it ends."""
        task = asyncio.create_task(line)
        self._tasks.add(task)

        def ended(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            on_done()
            if not task.cancelled() and (error := task.exception()) is not None:
                logger.error("a line's task failed", exc_info=error)

        task.add_done_callback(ended)

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
