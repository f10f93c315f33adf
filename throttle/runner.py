"""``throttle run``: a JSONL file of requests in, one result line per request out, exactly once.

The flow: resume (what the results file already holds) -> stream the input -> for each
pending line, parse it, send it through a :class:`Throttle`, append its result -> at the end
(or on a signal, a quota error, a rejected key) stop cleanly. See ``jobfile`` for how results
survive crashes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from throttle.client import Throttle
from throttle.errors import (
    APIStatusError,
    ClosedError,
    RetryExhaustedError,
    ThrottleError,
)
from throttle.events import EventListener
from throttle.jobfile import (
    RAW_LINE_LIMIT,
    IndexSet,
    InputLine,
    InvalidLineError,
    ResultsFile,
    count_lines,
    parse_line,
    read_lines,
)
from throttle.limits import Limits
from throttle.progress import JobTally, Progress
from throttle.retry import RetryPolicy

logger = logging.getLogger(__name__)
SYNC_EVERY_SECONDS = 1.0
FATAL_STATUSES = frozenset({401, 403})  # the key or URL is wrong: every other line would fail
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``throttle run`` was asked to do.

    Attributes:
        input: the JSONL file of request bodies.
        output: the results file (appended to, resumed from).
        url: the full endpoint URL.
        api_key: the key (sent as ``api-key`` to Azure URLs, else as a bearer token).
        limits: optional ceilings; by default limits are learned.
        max_attempts: attempts per request.
        max_concurrency: requests being processed at once (bounds memory too).
        retry_failed: also re-run lines whose result is an error.
    """

    input: Path
    output: Path
    url: str
    api_key: str | None
    limits: Limits | None = None
    max_attempts: int = 6
    max_concurrency: int = 256
    retry_failed: bool = False


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
        live_progress: draw a live bar (a terminal); otherwise log a line now and then.
        show_progress: show progress at all.
        on_event: another listener for the scheduler's events (metrics).
    """

    def __init__(
        self,
        options: RunOptions,
        *,
        live_progress: bool = False,
        show_progress: bool = True,
        on_event: EventListener | None = None,
    ) -> None:
        self.options = options
        self._show_progress = show_progress
        self._live = live_progress
        self._on_event = on_event
        self.tally = JobTally(total=0)
        self.progress = Progress(self.tally, live=live_progress)
        self.fatal: str | None = None
        self.interrupted = False
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"JobRunner({self.options.input} -> {self.options.output}, {self.tally!r})"

    async def run(self) -> int:
        """Run the job; return the exit status (0, 1, 2 or 130).

        Raises:
            ConfigurationError: the input or results file cannot be used.
        """
        options = self.options
        resumed = ResultsFile.resume(options.output, retry_failed=options.retry_failed)
        if resumed.repaired_bytes:
            logger.warning(
                "cut %d bytes of a result line torn by a crash from %s; that line runs again",
                resumed.repaired_bytes,
                options.output,
            )
        self.tally.total = count_lines(options.input)
        self.tally.already_done = resumed.done.count
        results = ResultsFile(options.output)
        client = Throttle(
            options.url,
            options.api_key,
            limits=options.limits,
            retry=RetryPolicy(max_attempts=options.max_attempts),
            max_in_flight=options.max_concurrency,
            on_event=self.progress,
        )
        if self._on_event is not None:
            client.events.subscribe(self._on_event)
        housekeeping = asyncio.create_task(self._housekeeping(results))
        self._install_signal_handlers(client)
        try:
            await self._feed(client, results, resumed.done)
        finally:
            self._remove_signal_handlers()
            housekeeping.cancel()
            await client.close()
            results.close()
        return self._exit_status(resumed.failed)

    async def _feed(self, client: Throttle, results: ResultsFile, done: IndexSet) -> None:
        slots = asyncio.Semaphore(self.options.max_concurrency)

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            slots.release()

        for line in read_lines(self.options.input):
            if self._stopping.is_set():
                break
            if line.index in done:
                continue
            await slots.acquire()
            if self._stopping.is_set():
                slots.release()
                break
            task = asyncio.create_task(self._one(client, results, line))
            self._tasks.add(task)
            task.add_done_callback(finished)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(self, client: Throttle, results: ResultsFile, line: InputLine) -> None:
        """Process one line; write its result, or nothing when it must run again later."""
        try:
            body, metadata = parse_line(line.text)
        except InvalidLineError as error:
            record = {
                "index": line.index,
                "metadata": None,
                "request": None,
                "line": line.text[:RAW_LINE_LIMIT],
                "error": error_record(error),
            }
            self._write(results, record, "InvalidLineError")
            return
        base = {"index": line.index, "metadata": metadata, "request": body}
        if client.scheduler.breakers.is_open(client.identity):
            # Out of quota: record the line at once instead of estimating and queueing it.
            refused = client.scheduler.breakers.error(client.identity)
            self._write(results, {**base, "error": error_record(refused)}, type(refused).__name__)
            return
        try:
            response = await client.post("", body)
        except ClosedError:
            return  # stopped before it was sent: it runs on the next invocation
        except ThrottleError as error:
            if isinstance(error, APIStatusError) and error.status in FATAL_STATUSES:
                self._stop_fatally(client, error)
                return
            self._write(results, {**base, "error": error_record(error)}, type(error).__name__)
            return
        self._write(results, {**base, "response": response}, None)

    def _write(self, results: ResultsFile, record: dict[str, Any], error_type: str | None) -> None:
        results.write(record)
        if error_type is None:
            self.tally.succeeded += 1
        else:
            self.tally.failed[error_type] += 1

    def _stop_fatally(self, client: Throttle, error: APIStatusError) -> None:
        """A rejected key or URL: send nothing more; queued lines stay pending."""
        if self.fatal is None:
            self.fatal = (
                f"the server rejected the request with {error}; fix the key or URL "
                "and run the same command again (nothing was lost)"
            )
            self._stop_sending(client)

    async def _housekeeping(self, results: ResultsFile) -> None:
        """Sync results to disk and refresh the progress display, about once a second."""
        while True:
            await asyncio.sleep(SYNC_EVERY_SECONDS if not self._live else 0.25)
            await asyncio.to_thread(results.sync)
            if self._show_progress:
                self.progress.show(every=0.25 if self._live else 10.0)

    def _install_signal_handlers(self, client: Throttle) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, client)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    def _on_signal(self, client: Throttle) -> None:
        """First signal: send nothing more, let answers in flight arrive. Second: abandon them."""
        if not self.interrupted:
            self.interrupted = True
            self._stop_sending(client)
            return
        for task in list(self._tasks):
            task.cancel()

    def _stop_sending(self, client: Throttle) -> None:
        """Read no more lines and fail queued requests unsent; answers in flight still land."""
        self._stopping.set()
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(client.scheduler.close())

    def _exit_status(self, failed_before: int) -> int:
        if self.fatal is not None:
            return EXIT_USAGE
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if sum(self.tally.failed.values()) + failed_before else EXIT_OK
