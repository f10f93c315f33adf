"""Polling the job's open batches, each at its own pace, until they end; and how they ended.

A batch is polled ``poll_initial`` seconds after it was created and after each change of its
status; while the status stays the same, the interval grows by ``poll_growth`` up to
``poll_max`` (:meth:`BatchOptions.next_poll`). So a batch is seen to pass validation within
seconds (the budget waits on it), and a batch that runs for hours costs a request a minute.
A failed poll is tried again after ``poll_max``: a batch is never given up on, unless the
server says it has no such batch (404): the key, project or URL is not the one that created
it, and no poll will ever find it, so the job stops (resumable with the right ones).

A batch that ends is settled here: refused over the enqueued-token limit, it teaches the
budget (:mod:`throttle.batch_budget`) and its file is queued for a new batch; failed for
another reason, its lines end with the validation errors; otherwise its output and error
files are read (:mod:`throttle.batch_download`). Each end is journaled before anything else.
A batch this run saw uncancelled and then sees ``cancelling`` or ``cancelled`` was cancelled
from outside while the job ran (this run never cancels one: ``throttle batches cancel``, the
dashboard): the user stops the job, and the executor is told before the batch's lines are
read (nothing new is submitted). A batch cancelled before the run began ends as any other:
its lines left unanswered go into new batches (what a rerun after a cancel is for).

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
    CANCELLED_STATUSES,
    ENDED_STATUSES,
    RUNNING_STATUSES,
    Step,
    TrackedFile,
)
from throttle.batch_options import BatchOptions
from throttle.batch_outcomes import TOKEN_LIMIT, LineOutcome, failed_batch, one_line_refused
from throttle.batch_steps import BatchSteps
from throttle.errors import APIStatusError, JobAbortedError, ThrottleError

logger = logging.getLogger("throttle.batch")
MAX_CROWDED_PAUSES = 16  # the longest wait after a crowded refusal, in poll_max


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
        abort: ends the job (a batch the server does not know: 404).
        cancelled: stops submitting (a batch was cancelled from outside: the job is to stop).
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
        abort: Callable[[JobAbortedError], None],
        cancelled: Callable[[], None],
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
        self._abort = abort
        self._cancelled = cancelled
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
            lost=self._lost,
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
        except APIStatusError as error:
            if error.status == 404:
                self._lost(tracked, error)
            elif not self._fatal(error):
                logger.warning("could not poll batch %s: %s", batch_id, error)
                tracked.next_poll = self._clock() + self._options.poll_max
            return
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
        if status not in CANCELLED_STATUSES:
            tracked.watched = True
        elif tracked.watched:  # not cancelled before this run: the user stops it now
            tracked.watched = False  # told once, at cancelling or at cancelled
            logger.warning(
                "batch %s (%s) was cancelled from outside this run: submitting nothing more; "
                "lines its open batches do not answer run when the job runs again",
                batch_id,
                tracked.name,
            )
            self._cancelled()
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

    def _lost(self, tracked: TrackedFile, error: APIStatusError) -> None:
        """End the job: the server does not know one of its batches (404)."""
        why = (
            f"batch {tracked.batch_id} of the journal {self._steps.journal.path} is not found "
            f"at {self._client.api_root} ({error}): the key is another organization's or "
            "project's than the one that created it (or the URL another API's); run again "
            "with those, or move the journal away to start the batches afresh (nothing was "
            "lost)"
        )
        self._abort(JobAbortedError(why, error))

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
            message = data[codes.index(TOKEN_LIMIT)].get("message")
            self._refused(tracked, batch, str(message or ""))
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

    def _refused(self, tracked: TrackedFile, batch: Mapping[str, Any], message: str) -> None:
        """Learn from a refusal over the enqueued-token limit; queue the file for a new batch.

        When the server counted more than the job holds (:attr:`LearningStep.crowded`), the
        file waits for the job's running batches to end, or, refused alone and going again
        as it is, for a pause that doubles with each such refusal in a row. A file of one
        line refused alone otherwise never shrinks to fit: its line ends when it is over the
        limit the server states, and else counts the refusal as one of its attempts.

        Raises:
            OSError: the journal could not be written.
        """
        batch_id = tracked.batch_id
        assert batch_id is not None  # noqa: S101 - only files with a batch end
        lesson = self._budget.refused(tracked.model, batch_id, message)
        if lesson.after != lesson.before and not lesson.crowded:  # before the end: a kill
            self._steps.learned(tracked.model, lesson.after)  # between keeps the lesson
        self._steps.ended(tracked, batch, TOKEN_LIMIT)
        self._counts.batches_refused += 1
        tracked.step, tracked.batch_id, tracked.batch_status = Step.UPLOADED, None, None
        single = len(tracked.indexes) == 1
        if lesson.crowded and not lesson.alone:
            later = "once the job's running batches have ended"
        elif lesson.crowded and (single or lesson.tokens <= lesson.after):
            pause = min(2 ** (lesson.crowded - 1), MAX_CROWDED_PAUSES) * self._options.poll_max
            tracked.not_before = self._clock() + pause
            later = f"in {pause:g} s (batches not the job's may hold the rest)"
        elif single and lesson.alone:
            self._steps.drop(tracked)
            self._deliver(tracked, tracked.indexes[0], one_line_refused(lesson, tracked.indexes[0]))
            return
        else:
            later = "later"
        logger.warning(
            "batch %s (%s) went over %s's enqueued-token limit (%s); the limit is now ~%d "
            "tokens, and the file goes into a new batch %s",
            batch_id,
            tracked.name,
            tracked.model,
            "none stated" if lesson.stated is None else f"{lesson.stated:,} stated",
            lesson.after,
            later,
        )
        self._requeue(tracked)
