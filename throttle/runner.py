"""``throttle run``: a JSONL file of requests in, one result line per request out, exactly once.

The flow: resume (what the results file already holds) -> stream the input -> on at most
``capacity`` workers (``job_stop``), each pending line is taken, checked against its file
(``job_records``), given its ``X-Client-Request-Id``, handed to the executor (``executor``;
online by default) and its result appended -> at the end (or on a signal, a quota error, a
rejected key) stop cleanly (``job_stop``). See ``jobfile`` for how results survive crashes,
and ``job_gc`` for the collector during a job. The runner uses only throttle's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from throttle.admission import KeyLoad
from throttle.errors import ConfigurationError, JobAbortedError
from throttle.events import EventListener
from throttle.executor import Executor, JobLine
from throttle.job_gc import young_collections_for
from throttle.job_input import (
    InputLine,
    InvalidLineError,
    RequestLine,
    count_lines,
    first_object,
    is_batch_line,
    read_lines,
)
from throttle.job_records import LineRecords, completed, failed, unwritable_request
from throttle.job_stop import STOP_GRACE_SECONDS, LineTasks, signals_call
from throttle.jobfile import IndexSet, ResultsFile
from throttle.keys import BucketKey
from throttle.progress import JobTally, Progress
from throttle.request_identity import new_client_request_id
from throttle.run_options import RunOptions, online_executor

logger = logging.getLogger(__name__)
_Taken = tuple[InputLine, RequestLine | InvalidLineError]  # a line, and what checking it gave
SYNC_EVERY_SECONDS = 1.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class JobRunner:
    """Runs one job to its end, or to a clean stop.

    Args:
        options: what to run.
        executor: what sends the lines; by default :func:`online_executor` of ``options``.
            The runner closes it at the end.
        live_progress: draw a live bar (a terminal); otherwise log a line now and then.
        show_progress: show progress at all.
        on_event: another listener for the executor's events (metrics).
        stop_grace: seconds the lines in flight get to finish after a signal or a fatal
            error, before they are cancelled (see :mod:`throttle.job_stop`).
    """

    def __init__(
        self,
        options: RunOptions,
        *,
        executor: Executor | None = None,
        live_progress: bool = False,
        show_progress: bool = True,
        on_event: EventListener | None = None,
        stop_grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.options = options
        self._executor = executor if executor is not None else online_executor(options)
        self._show_progress = show_progress
        self._live = live_progress
        self.tally = JobTally(total=0)
        self.progress = Progress(self.tally, live=live_progress)
        self._executor.subscribe(self.progress)
        if on_event is not None:
            self._executor.subscribe(on_event)
        self.fatal: str | None = None
        self._unwritable = False  # a results write failed: nothing more is written or sent
        self._lines = LineTasks(self._executor.stop, grace=stop_grace)
        # Lines without an id of their own send "<this run>-<index>": unique to this run, and
        # naming the line, so the provider's logs lead back to it even without a result.
        self._run_id = new_client_request_id()[:16]
        self._finished = asyncio.Event()  # tells the housekeeping task to end
        self._records = LineRecords(0, batch_file=False, custom_ids={})  # set by run()
        self._left_unrun = 0  # lines the executor gave back unrun (it stopped on its own)
        self._read_error: ConfigurationError | None = None  # the input failed mid-way

    def __repr__(self) -> str:
        return f"JobRunner({self.options.input} -> {self.options.output}, {self.tally!r})"

    @property
    def interrupted(self) -> bool:
        """Whether a signal stopped the job."""
        return self._lines.interrupted

    def load(self) -> Mapping[BucketKey, KeyLoad]:
        """Per busy key, the requests waiting to be sent and those sent, unanswered."""
        return self._executor.load()

    async def run(self) -> int:
        """Run the job; return the exit status (0, 1, 2 or 130).

        Raises:
            ConfigurationError: the input or results file cannot be used.
        """
        options = self.options
        try:
            resumed = ResultsFile.resume(options.output, retry_failed=options.retry_failed)
            if resumed.repaired_bytes:
                logger.warning(
                    "cut %d bytes of a result line torn by a crash from %s; that line runs again",
                    resumed.repaired_bytes,
                    options.output,
                )
            if resumed.failed:
                logger.warning(
                    "%d lines of %s hold errors from an earlier run and are not sent again; "
                    "add --retry-failed to retry them",
                    resumed.failed,
                    options.output,
                )
            self.tally.total = count_lines(options.input)
            first = first_object(options.input)
            self._records = LineRecords(
                first[0] if first is not None else 0,
                batch_file=first is not None and is_batch_line(first[1]),
                custom_ids=resumed.custom_ids,
            )
            self.tally.already_done = resumed.done.count
            results = ResultsFile(options.output)
        except BaseException:
            await self._executor.aclose()
            raise
        housekeeping = asyncio.create_task(self._housekeeping(results))
        with signals_call(self._lines.interrupt), young_collections_for(self._executor.capacity):
            try:
                await self._feed(results, resumed.done)
            finally:
                # Every task ends before the file closes: nothing writes to it afterwards.
                await self._lines.close()
                self._finished.set()
                await housekeeping
                await self._executor.aclose()
                try:
                    results.close()
                except OSError as error:  # nothing is left to stop: only say why it failed
                    self.fatal = (
                        self.fatal or f"cannot sync results to {self.options.output} ({error})"
                    )
        return self._exit_status(resumed.failed)

    async def _feed(self, results: ResultsFile, done: IndexSet) -> None:
        """Run the pending lines on as many workers as the executor takes lines at once.

        Raises:
            ConfigurationError: the input could not be read to its end (the lines taken
                before still finish, as after a stop).
        """
        pending = read_lines(self.options.input)
        if done.count:
            pending = (line for line in pending if line.index not in done)
        take, handle = partial(self._take, pending), partial(self._one, results)
        await self._lines.run(take, handle, workers=self._executor.capacity)
        if self._read_error is not None:
            raise self._read_error

    def _take(self, pending: Iterator[InputLine]) -> _Taken | None:
        """The next pending line, checked; ``None`` when none is left.

        Taken and checked in one step, so lines are checked in index order (the first of two
        lines with one ``custom_id`` keeps it), whichever worker takes them.
        """
        try:
            line = next(pending, None)
        except ConfigurationError as error:  # the input became unreadable mid-way
            self._read_error = self._read_error or error
            self._lines.stop()
            return None
        if line is None:
            return None
        try:
            return line, self._records.request(line)
        except InvalidLineError as error:
            return line, error

    async def _one(self, results: ResultsFile, taken: _Taken) -> None:
        """Process one line; write its result, or nothing when it must run again later."""
        line, request = taken
        records = self._records
        if isinstance(request, InvalidLineError):
            self._write(results, records.invalid(line, request), "InvalidLineError")
            return
        client_request_id = request.client_request_id or f"{self._run_id}-{line.index}"
        record = records.sent(line.index, request, client_request_id)
        job_line = JobLine(
            line.index,
            request.body,
            request.metadata,
            request.custom_id,
            request.url,
            client_request_id,
        )
        try:
            result = await self._executor.execute(job_line)
        except JobAbortedError as aborted:
            self._abort(str(aborted))
            return
        except Exception as error:  # a bug, or a line nothing expected: it still ends, as an error
            logger.exception("line %d failed unexpectedly", line.index)
            self._write(results, record, failed(record, error))
            return
        if result is None:  # not run (the executor stopped): it runs on the next invocation
            self._left_unrun += 1
        else:
            self._write(results, record, completed(record, result))

    def _write(self, results: ResultsFile, record: dict[str, Any], error_type: str | None) -> None:
        """Write one result; on a failed write (a full disk) stop the job, sending nothing more.

        A result whose request cannot be written back (nested too deep for JSON) keeps the
        line's raw text instead.
        """
        if self._unwritable:
            return  # a write failed: later results would land after a torn line, or not at all
        try:
            results.write(record)
        except (ValueError, TypeError, RecursionError):
            results.write(unwritable_request(record))
        except OSError as error:
            self._unwritable = True
            self._abort(
                f"cannot write results to {self.options.output} ({error}): the job stopped. "
                "Make room (or fix the file) and run the same command again: lines without "
                "a result run then, exactly once"
            )
            return
        if error_type is None:
            self.tally.succeeded += 1
        else:
            self.tally.failed[error_type] += 1

    def _abort(self, why: str) -> None:
        """Stop the job for a reason no line can get past; the first reason is the one shown."""
        if self.fatal is None:
            self.fatal = why
            self._lines.stop()

    async def _housekeeping(self, results: ResultsFile) -> None:
        """Sync results to disk and refresh the progress display, about once a second.

        Ends when told (never cancelled mid-sync: the file must not close under the thread).
        """
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_EVERY_SECONDS if not self._live else 0.25):
                    await self._finished.wait()
            if self._finished.is_set():
                return
            try:
                await asyncio.to_thread(results.sync)
            except OSError as error:
                self._unwritable = True
                self._abort(f"cannot sync results to {self.options.output} ({error})")
            if self._show_progress:
                self.progress.show(every=0.25 if self._live else 10.0)

    def _exit_status(self, failed_before: int) -> int:
        if self.fatal is not None:
            return EXIT_USAGE
        if self.interrupted or self._left_unrun:  # a rerun finishes the job
            return EXIT_INTERRUPTED
        return EXIT_FAILED if sum(self.tally.failed.values()) + failed_before else EXIT_OK
