"""Polling the job's open batches, each at its own pace, until they end; and how they ended.

A batch is polled ``poll_initial`` seconds after it was created and after each change of its
status; while the status stays the same, the interval grows by ``poll_growth`` up to
``poll_max`` (:meth:`BatchOptions.next_poll`). So a batch is seen to pass validation within
seconds (the budget waits on it), and a batch that runs for hours costs a request a minute.
A failed poll is tried again after ``poll_max``: a batch is never given up on.

A batch that ends is settled here: refused over the enqueued-token limit, it teaches the
budget (:mod:`throttle.batch_budget`) and its file is queued for a new batch; failed for
another reason, its lines end with the validation errors; otherwise its output and error
files are read (:mod:`throttle.batch_download`). Each end is journaled before anything else.

The Batch API can also announce the end of a batch by webhook (``batch.completed``, ...): a
receiver that calls :meth:`BatchPoller.poll_soon` has the batch read at once, so polling can
be slow (docs/batch.md). Polling stays the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from throttle.batch_budget import EnqueuedBudget
from throttle.batch_client import BatchClient
from throttle.batch_download import BatchDownloads
from throttle.batch_files import (
    ENDED_STATUSES,
    RUNNING_STATUSES,
    TOKEN_LIMIT,
    Step,
    TrackedFile,
)
from throttle.batch_options import BatchOptions
from throttle.batch_outcomes import LineOutcome, failed_batch
from throttle.batch_steps import BatchSteps
from throttle.errors import ThrottleError

logger = logging.getLogger("throttle.batch")


class BatchPoller:
    """Polls open batches and settles how each ended.

    Args:
        client: the Batch API client.
        steps: where ends and lessons are journaled.
        budget: the enqueued-token budget, told of validations, ends and refusals.
        options: the polling intervals.
        clock: monotonic seconds.
        budget_changed: told when the budget has room again, or learned a limit.
        requeue: queues a refused batch's file for a new batch, first in line.
        spawn: runs a coroutine in a task the executor owns (reading a batch's files).
        deliver: ends (or retries) a waiting line of an ended batch.
        fatal: says whether an error ends the job (and ends it).
        journal_failed: ends the job when the journal cannot be written.
    """

    def __init__(
        self,
        client: BatchClient,
        steps: BatchSteps,
        budget: EnqueuedBudget,
        options: BatchOptions,
        *,
        clock: Callable[[], float],
        budget_changed: Callable[[], None],
        requeue: Callable[[TrackedFile], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        deliver: Callable[[TrackedFile, int, LineOutcome], None],
        fatal: Callable[[ThrottleError], bool],
        journal_failed: Callable[[OSError], None],
    ) -> None:
        self._client = client
        self._steps = steps
        self._budget = budget
        self._options = options
        self._counts = steps.counts
        self._clock = clock
        self._budget_changed = budget_changed
        self._requeue = requeue
        self._deliver = deliver
        self._fatal = fatal
        self._journal_failed = journal_failed
        self._open: dict[str, TrackedFile] = {}  # batch id -> its file
        self._wake = asyncio.Event()
        self.stopped = False
        self._downloads = BatchDownloads(
            client,
            deliver,
            steps.counts,
            spawn=spawn,
            fatal=fatal,
            stopped=lambda: self.stopped,
            gather_seconds=options.gather_seconds,
            retry_seconds=options.poll_max,
        )

    def __repr__(self) -> str:
        return f"BatchPoller({len(self._open)} batches open)"

    @property
    def open_batches(self) -> int:
        """Batches polled until they end."""
        return len(self._open)

    def track(self, tracked: TrackedFile) -> None:
        """Poll ``tracked``'s batch from now until it ends."""
        assert tracked.batch_id is not None  # noqa: S101 - only files with a batch are polled
        self._open[tracked.batch_id] = tracked
        self._wake.set()

    def read(self, tracked: TrackedFile) -> None:
        """Read an ended batch's files for the lines waiting on it (see ``batch_download``)."""
        self._downloads.fetch_soon(tracked)

    def poll_soon(self, batch_id: str) -> bool:
        """Poll ``batch_id`` now (a webhook said it changed); return whether it is open."""
        tracked = self._open.get(batch_id)
        if tracked is None:
            return False
        tracked.next_poll = 0.0
        self._wake.set()
        return True

    def stop(self) -> None:
        """Poll no more."""
        self.stopped = True
        self._wake.set()

    async def run(self) -> None:
        """Poll each open batch when its time comes; sleep until the next one is due."""
        while not self.stopped:
            self._wake.clear()
            for tracked in list(self._open.values()):
                if self.stopped:
                    return
                if tracked.next_poll <= self._clock():
                    await self._poll(tracked)
            timeout = None
            if self._open:
                due = min(tracked.next_poll for tracked in self._open.values())
                timeout = max(0.0, due - self._clock())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _poll(self, tracked: TrackedFile) -> None:
        batch_id = tracked.batch_id
        assert batch_id is not None  # noqa: S101 - only files with a batch are polled
        self._counts.polls += 1
        try:
            batch = await self._client.retrieve_batch(batch_id)
        except ThrottleError as error:
            if not self._fatal(error):
                logger.warning("could not poll batch %s: %s", batch_id, error)
                tracked.next_poll = self._clock() + self._options.poll_max
            return
        status = str(batch.get("status"))
        changed = status != tracked.batch_status
        tracked.batch_status = status
        tracked.interval = self._options.next_poll(tracked.interval, changed)
        tracked.next_poll = self._clock() + tracked.interval
        if status in RUNNING_STATUSES and tracked.step == Step.VALIDATING:
            tracked.step = Step.RUNNING
            self._budget.accepted(tracked.model, batch_id)
            self._budget_changed()
        elif status in ENDED_STATUSES:
            del self._open[batch_id]
            self._budget_changed()  # room in the budget, or a lesson
            try:
                self._ended(tracked, batch)
            except OSError as error:
                self._journal_failed(error)

    def _ended(self, tracked: TrackedFile, batch: Mapping[str, Any]) -> None:
        """Learn from a refusal, or end (or retry) the batch's waiting lines.

        Raises:
            OSError: the journal could not be written.
        """
        batch_id = tracked.batch_id
        assert batch_id is not None  # noqa: S101 - only files with a batch end
        errors = batch.get("errors")
        data = errors.get("data") if isinstance(errors, Mapping) else None
        data = [e for e in data if isinstance(e, Mapping)] if isinstance(data, list) else []
        codes = [str(e.get("code")) for e in data]
        if batch.get("status") == "failed" and TOKEN_LIMIT in codes:
            message = str(data[codes.index(TOKEN_LIMIT)].get("message") or "")
            lesson = self._budget.refused(tracked.model, batch_id, message)
            self._steps.ended(tracked, batch, TOKEN_LIMIT)
            self._steps.learned(tracked.model, lesson.after)
            self._counts.batches_refused += 1
            logger.warning(
                "batch %s (%s) went over %s's enqueued-token limit; the limit is now ~%d "
                "tokens, and the file goes into a new batch later",
                batch_id,
                tracked.name,
                tracked.model,
                lesson.after,
            )
            tracked.step, tracked.batch_id, tracked.batch_status = Step.UPLOADED, None, None
            self._requeue(tracked)
            return
        self._budget.ended(tracked.model, batch_id)
        self._steps.ended(tracked, batch, codes[0] if codes else None)
        tracked.step = Step.ENDED
        tracked.output_file_id = batch.get("output_file_id")
        tracked.error_file_id = batch.get("error_file_id")
        logger.info("batch %s (%s) ended %s", batch_id, tracked.name, tracked.batch_status)
        if batch.get("status") != "failed":
            self.read(tracked)
            return
        for index, outcome in failed_batch(batch_id, data, tracked.indexes).items():
            if index in tracked.waiting:
                self._deliver(tracked, index, outcome)
