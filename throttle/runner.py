"""``throttle run``: a JSONL file of requests in, one result line per request out, exactly once.

The flow: resume (what the results file already holds) -> stream the input -> for each
pending line, parse it, give it its ``X-Client-Request-Id``, hand it to the executor
(``executor``; online by default), append its result -> at the end (or on a signal, a quota
error, a rejected key) stop cleanly (``job_stop``). See ``jobfile`` for how results survive
crashes. The runner uses only throttle's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from throttle.admission import KeyLoad
from throttle.errors import APIStatusError, JobAbortedError, RetryExhaustedError
from throttle.events import EventListener
from throttle.executor import Executor, JobLine
from throttle.job_input import (
    RAW_LINE_LIMIT,
    InputLine,
    InvalidLineError,
    RequestLine,
    count_lines,
    first_object,
    is_batch_line,
    parse_line,
    read_lines,
)
from throttle.job_stop import STOP_GRACE_SECONDS, LineTasks, signals_call
from throttle.jobfile import IndexSet, ResultsFile
from throttle.keys import BucketKey
from throttle.progress import JobTally, Progress
from throttle.request_identity import new_client_request_id
from throttle.run_options import RunOptions, online_executor

logger = logging.getLogger(__name__)
SYNC_EVERY_SECONDS = 1.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def error_record(error: BaseException) -> dict[str, Any]:
    """The ``error`` object of a failed line: type, status, code, message, attempts."""
    cause = error.last_error if isinstance(error, RetryExhaustedError) else error
    details = cause.details if isinstance(cause, APIStatusError) else None
    return {
        "type": type(error).__name__,
        "status": details.status if details else None,
        "code": details.code if details else getattr(error, "kind", None),
        "message": str(error),
        "attempts": getattr(error, "attempts", 0),
    }


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
        self._batch_file: tuple[int, bool] = (0, False)  # (first object's index, Batch format?)
        self._custom_ids: dict[str, int] = {}  # each Batch line's custom_id -> its index

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
            if first is not None:
                self._batch_file = (first[0], is_batch_line(first[1]))
            self._custom_ids = resumed.custom_ids
            self.tally.already_done = resumed.done.count
            results = ResultsFile(options.output)
        except BaseException:
            await self._executor.aclose()
            raise
        housekeeping = asyncio.create_task(self._housekeeping(results))
        with signals_call(self._lines.interrupt):
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
        slots = asyncio.Semaphore(self._executor.capacity)
        for line in read_lines(self.options.input):
            if self._lines.stopped:
                break
            if line.index in done:
                continue
            await slots.acquire()
            if self._lines.stopped:
                slots.release()
                break
            self._lines.start(self._one(results, line), slots.release)
        await self._lines.wait()

    async def _one(self, results: ResultsFile, line: InputLine) -> None:
        """Process one line; write its result, or nothing when it must run again later."""
        try:
            request = self._request(line)
        except InvalidLineError as error:
            record = {
                "index": line.index,
                **self._custom_id(error.custom_id),
                "client_request_id": None,  # never sent
                "metadata": None,
                "request": None,
                "line": line.text[:RAW_LINE_LIMIT],
                "error": error_record(error),
            }
            self._write(results, record, "InvalidLineError")
            return
        client_request_id = request.client_request_id or f"{self._run_id}-{line.index}"
        job_line = JobLine(
            line.index,
            request.body,
            request.metadata,
            request.custom_id,
            request.url,
            client_request_id,
        )
        record = {
            "index": line.index,
            **self._custom_id(request.custom_id),
            "client_request_id": client_request_id,
            "metadata": request.metadata,
            "request": request.body,
        }
        try:
            result = await self._executor.execute(job_line)
        except JobAbortedError as aborted:
            self._abort(str(aborted))
            return
        except Exception as error:  # a bug, or a line nothing expected: it still ends, as an error
            logger.exception("line %d failed unexpectedly", line.index)
            self._write(results, {**record, "error": error_record(error)}, type(error).__name__)
            return
        if result is None:
            return  # not run: it runs on the next invocation
        record.update(result.extra)
        if result.error is None:
            self._write(results, {**record, "response": result.response}, None)
        else:
            failure = result.error
            record["error"] = error_record(failure)
            self._write(results, record, type(failure).__name__)

    def _request(self, line: InputLine) -> RequestLine:
        """Parse a line and check it against the file: its format, its ``custom_id``.

        Called before the line's first wait, so lines are checked in index order.

        Raises:
            InvalidLineError: the line cannot be sent.
        """
        request = parse_line(line.text)
        first, batch_file = self._batch_file
        if (request.url is not None) != batch_file:
            formats = ("a bare request body", "a Batch API line (custom_id, method, url, body)")
            raise InvalidLineError(
                "mixed_line_formats",
                f"line {line.index} is {formats[not batch_file]} but the file's first request, "
                f"line {first}, is {formats[batch_file]}: --url is "
                f"{'a base URL' if batch_file else 'a full endpoint URL'} for this file, so "
                "every line must have the first one's format (split the file, or rewrite it)",
                request.custom_id,
            )
        if request.custom_id is not None:
            held = self._custom_ids.setdefault(request.custom_id, line.index)
            if held != line.index:
                raise InvalidLineError(
                    "duplicate_custom_id",
                    f"line {line.index} repeats the custom_id {request.custom_id!r} of line "
                    f"{held}; each line needs its own (results are joined on it)",
                    request.custom_id,
                )
        return request

    def _custom_id(self, custom_id: str | None) -> dict[str, str | None]:
        """The ``custom_id`` field of a result: every result of a Batch API file has one."""
        return {"custom_id": custom_id} if self._batch_file[1] else {}

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
            results.write(
                {**record, "request": None, "line": str(record.get("request"))[:RAW_LINE_LIMIT]}
            )
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
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if sum(self.tally.failed.values()) + failed_before else EXIT_OK
