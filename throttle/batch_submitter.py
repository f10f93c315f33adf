"""Lines into files, files into batches: as soon as they are ready and the budget allows.

A line joins its (model, endpoint) group's open file (:mod:`throttle.batch_split`); a full
file is queued at once, partial files when no line arrived for ``gather_seconds`` (also when
the executor holds all the lines it may: those that arrive as others end, one by one while an
output file is read, would otherwise each go in a file of its own). Queued files are uploaded
and their batches created oldest first within each model, each when the model's
enqueued-token budget allows it (:mod:`throttle.batch_budget`); a file larger than a learned
limit is cut again, smaller (a line larger than it goes alone: only a configured limit ends a
line).
Before anything new, the files an earlier run may have left half-done are looked up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from throttle.batch_budget import EnqueuedBudget
from throttle.batch_files import HeldLine, Step, TrackedFile
from throttle.batch_options import BatchOptions
from throttle.batch_outcomes import LINE_TOO_LARGE, LineOutcome
from throttle.batch_split import (
    FilePlan,
    FileSplitter,
    SplitLine,
    embedding_inputs,
    encode_line,
    line_problem,
)
from throttle.batch_steps import BatchSteps
from throttle.errors import BatchLineError, RetryExhaustedError, ThrottleError, TransportError
from throttle.executor import LineResult

logger = logging.getLogger("throttle.batch")


class BatchSubmitter:
    """Plans lines into files and submits the files as batches.

    Args:
        steps: the journaled upload and create steps.
        budget: the enqueued-token budget.
        options: file limits and ``gather_seconds``.
        held: the executor's lines, by index (read, never changed here).
        files: the executor's files, by name (new files are added).
        clock: monotonic seconds.
        submitted: told of each file whose batch was just created (or found).
        deliver: ends a waiting line of a file whose step failed.
        fatal: says whether an error ends the job (and ends it).
        journal_failed: ends the job when the journal cannot be written.
    """

    def __init__(
        self,
        steps: BatchSteps,
        budget: EnqueuedBudget,
        options: BatchOptions,
        held: Mapping[int, HeldLine],
        files: dict[str, TrackedFile],
        *,
        clock: Callable[[], float],
        submitted: Callable[[TrackedFile], None],
        deliver: Callable[[TrackedFile, int, LineOutcome], None],
        fatal: Callable[[ThrottleError], bool],
        journal_failed: Callable[[OSError], None],
    ) -> None:
        self._steps = steps
        self._budget = budget
        self._options = options
        self._held = held
        self._files = files
        self._clock = clock
        self._submitted = submitted
        self._deliver = deliver
        self._fatal = fatal
        self._journal_failed = journal_failed
        self._splitter = FileSplitter(options.file_limits)
        self._queue: list[TrackedFile] = []  # to upload and create, oldest first
        self._wake = asyncio.Event()
        self._last_arrival = 0.0
        self.stopped = False

    def __repr__(self) -> str:
        return f"BatchSubmitter({self._splitter!r}, {len(self._queue)} files queued)"

    def wake(self) -> None:
        """Look again at what can be submitted (the budget changed)."""
        self._wake.set()

    def plan(self, held: HeldLine) -> None:
        """Put a line into its group's next file, or end it when it fits in no batch.

        Once submitting stopped, the line returns ``None`` instead (it runs next time).
        """
        if self.stopped:
            held.end(None)
            return
        line, model, budget = held.line, held.model, self._budget
        data = encode_line(line.index, held.endpoint, line.body)
        split = SplitLine(line.index, data, embedding_inputs(held.endpoint, line.body), held.tokens)
        problem = line_problem(split, self._options.file_limits)
        configured = budget.configured(model)  # not a learned limit: that may be too low
        if problem is None and configured is not None and held.tokens > configured:
            problem = (
                f"it needs ~{held.tokens:,} enqueued tokens, more than {model}'s configured "
                f"limit of {configured:,}"
            )
        if problem is not None:
            why = f"line {line.index} cannot go into a batch: {problem}"
            held.end(LineResult(error=BatchLineError(why, LINE_TOO_LARGE)))
            return
        cut = self._splitter.add(model, held.endpoint, split, budget.limit(model))
        if cut is not None:
            self._queue_plans([cut])
        self._last_arrival = self._clock()
        self._wake.set()

    def replan(self, tracked: TrackedFile) -> None:
        """Plan the lines waiting on ``tracked`` afresh (it will not run them)."""
        waiting, tracked.waiting = tracked.waiting, set()
        for index in sorted(waiting):
            held = self._held.get(index)
            if held is not None and not held.future.done():
                self.plan(held)

    def enqueue(self, tracked: TrackedFile, *, first: bool = False) -> None:
        """Queue a file to be uploaded (if need be) and its batch created.

        Once submitting stopped, its waiting lines return ``None`` instead (they run next time).
        """
        if self.stopped:
            waiting, tracked.waiting = tracked.waiting, set()
            for index in waiting:
                held = self._held.get(index)
                if held is not None:
                    held.end(None)
            return
        if tracked not in self._queue:
            self._queue.insert(0 if first else len(self._queue), tracked)
        self._wake.set()

    def _queue_plans(self, plans: list[FilePlan]) -> None:
        for plan in plans:
            tracked = TrackedFile.planned(self._steps.next_name(), plan)
            self._files[tracked.name] = tracked
            self.enqueue(tracked)

    def stop(self) -> None:
        """Submit nothing more: lines not in a submitted batch return ``None`` (run next time).

        Lines whose batches were created still get their answers.
        """
        self.stopped = True
        self._splitter.flush()
        self._queue.clear()
        self._wake.set()
        submitted = (Step.VALIDATING, Step.RUNNING, Step.ENDED)
        answering = {i for t in self._files.values() if t.step in submitted for i in t.waiting}
        for index, held in self._held.items():
            if index not in answering:
                held.end(None)

    async def run(self) -> None:
        """Resolve what a crash left open, then cut and submit files as they become ready."""
        await self._resolve_resumed()
        while not self.stopped:
            self._wake.clear()
            due: list[float] = []
            if self._splitter.pending:
                # Idle, even with all the lines it may hold: lines then arrive one by one as
                # others end (an output file read over a slow link), and each would go alone.
                idle = self._clock() - self._last_arrival
                if idle >= self._options.gather_seconds:
                    self._queue_plans(self._splitter.flush())
                else:
                    due.append(self._last_arrival + self._options.gather_seconds)
            await self._submit_ready()
            due += [t.not_before for t in self._queue if t.not_before > self._clock()]
            timeout = max(0.0, min(due) - self._clock()) if due else None
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _resolve_resumed(self) -> None:
        """Look up the uploads and batches an earlier run may have left unrecorded.

        Done before anything is submitted, so that a batch still running from the earlier
        run counts in the budget.
        """
        for tracked in list(self._files.values()):
            if self.stopped:
                return
            if not (tracked.intent_unresolved or tracked.maybe_created):
                continue
            try:
                if tracked.intent_unresolved:
                    if not await self._steps.resolve_intent(tracked):
                        self._steps.drop(tracked)  # never stored: its lines go afresh
                        self.replan(tracked)
                elif await self._steps.adopt_batch(tracked):
                    self._submitted(tracked)
            except ThrottleError as error:
                if self._fatal(error):
                    return
                logger.warning("could not look %s up on the server yet: %s", tracked.name, error)
            except OSError as error:
                self._journal_failed(error)
                return

    async def _submit_ready(self) -> None:
        """Submit what the budget allows, oldest file first within each model."""
        blocked: set[str] = set()
        for tracked in list(self._queue):
            if self.stopped:
                return
            model = tracked.model
            if tracked.step not in (Step.PLANNED, Step.UPLOADED) or not tracked.waiting:
                self._queue.remove(tracked)
            elif model in blocked:
                continue
            elif tracked.not_before > self._clock():
                blocked.add(model)  # its later files would meet what it waits out
            elif len(tracked.indexes) > 1 and not self._budget.fits_alone(model, tracked.tokens):
                self._queue.remove(tracked)
                self._steps.drop(tracked)
                self.replan(tracked)  # cut smaller, to the learned limit
            elif not self._budget.can_submit(model, tracked.tokens):
                blocked.add(model)
            else:
                self._queue.remove(tracked)
                await self._submit(tracked)

    async def _submit(self, tracked: TrackedFile) -> None:
        """Upload ``tracked`` if need be and create its batch.

        A step that failed for now (no answer, a 5xx) is tried again ``poll_max`` later, the
        server first asked whether it happened after all; a refusal ends the file's lines
        with it.
        """
        steps = self._steps
        try:
            if tracked.step == Step.PLANNED:
                found = tracked.intent_unresolved and await steps.resolve_intent(tracked)
                if not found and tracked.plan is None:  # an earlier run's, never stored
                    steps.drop(tracked)
                    self.replan(tracked)
                    return
                if not found:
                    await steps.upload(tracked)
            if self.stopped:
                return  # uploaded and journaled: the next run creates its batch
            if not (tracked.maybe_created and await steps.adopt_batch(tracked)):
                await steps.create(tracked)
        except ThrottleError as error:
            if self._fatal(error):
                return
            if _transient(error):
                logger.warning("%s: %s; trying again later", tracked.name, error)
                # The step may have happened without an answer: look before doing it again.
                tracked.intent_unresolved = tracked.step == Step.PLANNED
                tracked.maybe_created = tracked.step == Step.UPLOADED
                tracked.not_before = self._clock() + self._options.poll_max
                self.enqueue(tracked, first=True)
                return
            logger.warning("%s was refused: %s", tracked.name, error)
            steps.drop(tracked)
            for index in sorted(tracked.waiting):
                self._deliver(tracked, index, LineOutcome(error=error))
            return
        except OSError as error:
            self._journal_failed(error)
            return
        self._submitted(tracked)


def _transient(error: ThrottleError) -> bool:
    """Whether a step that failed with ``error`` may pass later (no answer, a 5xx, a 429)."""
    last = error.last_error if isinstance(error, RetryExhaustedError) else error
    return last.retryable or isinstance(last, TransportError)
