"""The Batch API executor: a job's lines through OpenAI's Batch API, at half the price.

``execute(line)`` holds the line until a batch has answered it. Behind it, one flow, a module
per step: plan and submit (:mod:`throttle.batch_submitter`: files within the API's limits,
each a batch once the enqueued-token budget allows, every step journaled first by
:mod:`throttle.batch_steps`); poll and settle each batch's end (:mod:`throttle.batch_poller`);
read its files (:mod:`throttle.batch_download`); and here, end each line with its answer or
error, or put it into a later batch when it expired, met a 5xx or was not run
(:mod:`throttle.batch_outcomes`), up to ``max_attempts`` batches. A rerun takes up the earlier
run's files and batches from the journal (:mod:`throttle.batch_files`): nothing is paid twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from throttle.admission import KeyLoad
from throttle.batch_budget import EnqueuedBudget
from throttle.batch_client import BatchClient, api_root_of
from throttle.batch_events import BatchEvents
from throttle.batch_files import HeldLine, Step, TrackedFile, tracked_files
from throttle.batch_journal import BatchJournal
from throttle.batch_options import BatchOptions
from throttle.batch_outcomes import LineOutcome, abort_reason, final_error
from throttle.batch_poller import BatchPoller
from throttle.batch_split import batch_endpoint
from throttle.batch_steps import BatchCounts, BatchSteps
from throttle.batch_submitter import BatchSubmitter
from throttle.batch_tasks import BackgroundTasks
from throttle.errors import (
    ConfigurationError,
    InvalidRequestError,
    JobAbortedError,
    ThrottleError,
)
from throttle.estimate import estimate_tokens
from throttle.events import EventListener
from throttle.executor import JobLine, LineResult
from throttle.keys import BucketKey


class BatchExecutor:
    """Runs lines through the Batch API (see the module docstring); an :class:`Executor`.

    Args:
        base_url: the API's base URL (``https://api.openai.com/v1``); Batch API lines'
            ``url`` name their endpoint below it.
        api_key: the key.
        options: file sizes, enqueued limits, attempts, polling.
        journal: the journal file (``<results>.batches.jsonl`` for ``throttle run``).
        endpoint: the endpoint of lines without a ``url`` (bare bodies): ``/v1/embeddings``.
        retry_failed: a line whose batch ended in an earlier run with an error for it is
            sent again (instead of ending with that error again).
        client: the Files and Batch API client (by default one for ``base_url``).
        clock: monotonic seconds (the one place time is read).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        options: BatchOptions | None = None,
        *,
        journal: Path,
        endpoint: str | None = None,
        retry_failed: bool = False,
        client: BatchClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options = options or BatchOptions()
        self._client = client or BatchClient(api_root_of(base_url), api_key)
        self._journal = BatchJournal(journal)
        self._default_endpoint = None if endpoint is None else batch_endpoint(endpoint)
        self._retry_failed = retry_failed
        self._clock = clock
        self.budget = EnqueuedBudget(options.enqueued_by_model, options.enqueued_tokens)
        self.counts = BatchCounts()
        self._events = BatchEvents(api_key, clock)
        self._held: dict[int, HeldLine] = {}
        self._files: dict[str, TrackedFile] = {}
        self._tasks = BackgroundTasks(self._task_failed)
        self._aborted: JobAbortedError | None = None
        self._started = self._stopped = False
        steps = BatchSteps(self._client, self._journal, options.metadata, self.counts)
        self._steps = steps
        self._submitter = BatchSubmitter(
            steps,
            self.budget,
            options,
            self._held,
            self._files,
            clock=clock,
            submitted=self._submitted,
            deliver=self.deliver,
            fatal=self._fatal,
            journal_failed=self._journal_failed,
        )
        self._poller = BatchPoller(
            self._client,
            steps,
            self.budget,
            options,
            clock=clock,
            budget_changed=self._submitter.wake,
            requeue=lambda tracked: self._submitter.enqueue(tracked, first=True),
            spawn=self._tasks.spawn,
            deliver=self.deliver,
            fatal=self._fatal,
            abort=self._abort,
            cancelled=self._submitter.stop,
            journal_failed=self._journal_failed,
        )

    def __repr__(self) -> str:
        return (
            f"BatchExecutor({self._client.api_root!r}, {len(self._held)} lines held, "
            f"{self._poller.open_batches} batches open, {self.budget!r})"
        )

    @property
    def capacity(self) -> int:
        """Lines held at once (``max_lines``)."""
        return self.options.max_lines

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Tell ``listener`` what becomes of each line (see :mod:`throttle.batch_events`)."""
        return self._events.subscribe(listener)

    def load(self) -> Mapping[BucketKey, KeyLoad]:
        """No bucket is involved: nothing is waiting at one."""
        return {}

    async def execute(self, line: JobLine) -> LineResult | None:
        """Hold ``line`` until a batch answered it (see :meth:`Executor.execute`).

        Returns:
            Its result, with ``batch_id`` and ``input_file_id`` in ``extra`` once it was in
            a batch; ``None`` when the executor stopped first (it runs next time).

        Raises:
            JobAbortedError: no batch can be made or read (a rejected key, a wrong URL,
                no quota, an unwritable journal).
        """
        if self._aborted is not None:
            raise self._aborted
        if self._stopped or self._submitter.stopped:
            return None
        self._start()
        endpoint = (line.url and batch_endpoint(line.url)) or self._default_endpoint
        if endpoint is None:
            problem = "the line names no endpoint: give --url the full endpoint URL"
            return LineResult(error=InvalidRequestError(problem))
        try:
            tokens = estimate_tokens(endpoint, line.body).total
        except InvalidRequestError as error:
            return LineResult(error=error)
        future: asyncio.Future[LineResult | None] = asyncio.get_running_loop().create_future()
        held = HeldLine(line, endpoint, str(line.body["model"]), tokens, future, self._clock())
        self._held[line.index] = held
        try:
            self._route(held)
            return await future
        finally:
            if self._held.get(line.index) is held:
                del self._held[line.index]

    def batch_changed(self, batch_id: str) -> bool:
        """Poll ``batch_id`` now: a webhook (``batch.completed``, ...) said it changed.

        Returns:
            Whether it is one of this run's open batches.
        """
        return self._poller.poll_soon(batch_id)

    def _start(self) -> None:
        """Start on first use: take up the journal's files, start submitting and polling.

        Raises:
            JobAbortedError: the journal is another API's, or cannot be written.
        """
        if self._started:
            return
        self._started = True
        try:
            self._steps.begin()
        except ConfigurationError as error:
            self._abort(JobAbortedError(f"{error} (nothing was lost)", error))
            assert self._aborted is not None  # noqa: S101 - set just above
            raise self._aborted from error
        except OSError as error:
            self._journal_failed(error)
            assert self._aborted is not None  # noqa: S101 - set just above
            raise self._aborted from error
        state = self._journal.state
        for model, tokens in state.ran():
            self.budget.passed(model, tokens)
        for model, tokens in state.limits.items():
            self.budget.learn(model, tokens)
        self._files.update(tracked_files(self._journal.state))
        for tracked in self._files.values():
            if tracked.step == Step.VALIDATING:  # its batch may still run: it counts
                self._submitted(tracked)
        self._tasks.spawn(self._submitter.run())
        self._tasks.spawn(self._poller.run())

    def _route(self, held: HeldLine) -> None:
        """Attach a line to the earlier run's file that holds it, or plan it afresh."""
        index = held.line.index
        name = self._journal.state.line_file.get(index)
        tracked = self._files.get(name) if name is not None else None
        if tracked is None or tracked.step == Step.DROPPED:
            self._submitter.plan(held)
            return
        tracked.waiting.add(index)
        if tracked.step in (Step.PLANNED, Step.UPLOADED):
            self._submitter.enqueue(tracked)
        elif tracked.step == Step.ENDED:
            self._poller.read(tracked)

    def _submitted(self, tracked: TrackedFile) -> None:
        assert tracked.batch_id is not None  # noqa: S101 - a batch was just created or found
        self.budget.submitted(tracked.model, tracked.batch_id, tracked.tokens)
        self._poller.track(tracked)
        for index in sorted(tracked.waiting):
            held = self._held.get(index)
            if held is not None and not held.future.done():
                self._events.admitted(held, held.arrived)

    def deliver(self, tracked: TrackedFile, index: int, outcome: LineOutcome) -> None:
        """End a line waiting on ``tracked`` with its outcome, or put it into a later batch."""
        tracked.waiting.discard(index)
        held = self._held.get(index)
        if held is None or held.future.done():
            return
        extra = {"batch_id": tracked.batch_id, "input_file_id": tracked.file_id}
        self._events.answered(held, outcome)
        if outcome.retry is None:
            resend = tracked.from_earlier_run and self._retry_failed and not held.resent
            if outcome.error is not None and resend:
                held.resent = True
                self._retry(held, "retry_failed")
                return
            held.attempts += 1
            self._finish(held, LineResult(outcome.response, outcome.error, extra))
            return
        held.attempts += 1
        if held.attempts >= self.options.max_attempts:
            error = final_error(outcome, held.attempts, tracked.batch_id)
            self._finish(held, LineResult(error=error, extra=extra))
            return
        self._retry(held, outcome.retry)

    def _retry(self, held: HeldLine, reason: str) -> None:
        if self._submitter.stopped:
            held.end(None)  # no later batch in this run: it runs next time
            return
        self.counts.lines_retried += 1
        self._events.retried(held, reason)
        self._submitter.plan(held)

    def _finish(self, held: HeldLine, result: LineResult) -> None:
        self._events.finished(held, result.error, held.arrived)
        held.end(result)

    def _fatal(self, error: ThrottleError) -> bool:
        """Abort the job when ``error`` says no batch can be made or read; return whether."""
        why = abort_reason(error, proven=self._client.proven, api_root=self._client.api_root)
        if why is None:
            return False
        self._abort(JobAbortedError(f"{why} (nothing was lost)", error))
        return True

    def _journal_failed(self, error: OSError) -> None:
        self._abort(f"cannot write the batch journal {self._journal.path} ({error})")

    def _task_failed(self, error: BaseException) -> None:
        self._abort(f"the batch executor failed unexpectedly: {error!r}")

    def _abort(self, error: JobAbortedError | str) -> None:
        """No line can go on: every line held ends with ``error`` (the job stops, resumable)."""
        if isinstance(error, str):
            why = f"{error}; nothing was lost"
            error = JobAbortedError(why, ThrottleError(why))
        if self._aborted is None:
            self._aborted = error
        for held in self._held.values():
            if not held.future.done():
                held.future.set_exception(error)
        self._halt()

    def _halt(self) -> None:
        """Submit, poll and read nothing more."""
        self._stopped = True
        self._submitter.stop()
        self._poller.stop()
        self._tasks.cancel()

    async def stop(self) -> None:
        """Create no more batches; lines held return ``None`` (they run next time).

        Batches already created keep running at the API; the journal holds them, and the
        next run polls them instead of sending their lines again.
        """
        self._halt()
        for held in self._held.values():
            held.end(None)

    async def aclose(self) -> None:
        """Stop, wait for the background tasks to end, close the client and the journal."""
        await self.stop()
        await self._tasks.wait()
        await self._client.aclose()
        self._journal.close()
