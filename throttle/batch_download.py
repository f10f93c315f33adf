"""Reading an ended batch's output and error files into its waiting lines' outcomes.

The files are read as streams, a record at a time, and joined on ``custom_id`` (the output
is unordered): a line held by the executor gets its outcome as soon as its record is read, so
memory holds one record, not the file. A line in neither file was not run (a cancel drops
those). Lines that arrive after their batch ended (a rerun) are gathered for a moment and
served by one more read of the same files, which the API keeps for 30 days.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from throttle.batch_client import BatchClient
from throttle.batch_files import TrackedFile
from throttle.batch_outcomes import LineOutcome, not_run, read_record
from throttle.batch_split import index_of
from throttle.batch_steps import BatchCounts
from throttle.errors import APIStatusError, ThrottleError

logger = logging.getLogger("throttle.batch")
Deliver = Callable[[TrackedFile, int, LineOutcome], None]


class BatchDownloads:
    """Reads ended batches' files and hands each waiting line its outcome.

    Args:
        client: the Files API client.
        deliver: ends a line with an outcome (or puts it into a later batch).
        counts: where downloads are counted.
        spawn: runs a coroutine in a task the executor owns.
        fatal: says whether an error ends the job (and ends it).
        lost: ends the job: the server does not know a batch of the journal (404).
        stopped: says whether the executor stopped (reading then ends).
        gather_seconds: how long late arrivals are gathered before a read.
        retry_seconds: the wait before reading again after a read failed.
    """

    def __init__(
        self,
        client: BatchClient,
        deliver: Deliver,
        counts: BatchCounts,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        fatal: Callable[[ThrottleError], bool],
        lost: Callable[[TrackedFile, APIStatusError], None],
        stopped: Callable[[], bool],
        gather_seconds: float,
        retry_seconds: float,
    ) -> None:
        self._client = client
        self._deliver = deliver
        self._counts = counts
        self._spawn = spawn
        self._fatal = fatal
        self._lost = lost
        self._stopped = stopped
        self._gather = gather_seconds
        self._retry = retry_seconds
        self._reading: set[str] = set()  # names of files being read

    def __repr__(self) -> str:
        return f"BatchDownloads(reading {len(self._reading)} files)"

    def fetch_soon(self, tracked: TrackedFile) -> None:
        """Read ``tracked``'s batch files for its waiting lines (unless a read is under way).

        A read under way serves lines that arrive meanwhile with one more read when it ends.
        """
        if tracked.name not in self._reading:
            self._reading.add(tracked.name)
            self._spawn(self._serve(tracked))

    async def _serve(self, tracked: TrackedFile) -> None:
        try:
            while tracked.waiting and not self._stopped():
                if tracked.from_earlier_run:
                    await asyncio.sleep(self._gather)  # let the rest of its lines arrive
                wanted = set(tracked.waiting)
                if not await self._read(tracked, wanted):
                    await asyncio.sleep(self._retry)
                    continue
                status = tracked.batch_status or "ended"
                for index in sorted(wanted & tracked.waiting):
                    self._deliver(tracked, index, not_run(tracked.batch_id or "?", status))
        finally:
            self._reading.discard(tracked.name)

    async def _read(self, tracked: TrackedFile, wanted: set[int]) -> bool:
        """Deliver the records of ``wanted`` lines; return whether both files were read."""
        for file_id in (tracked.output_file_id, tracked.error_file_id):
            if file_id is None:
                continue
            self._counts.downloads += 1
            try:
                async with contextlib.aclosing(self._client.file_records(file_id)) as records:
                    async for record in records:
                        index = index_of(record.get("custom_id"))
                        if index is not None and index in wanted and index in tracked.waiting:
                            self._deliver(tracked, index, read_record(record))
            except APIStatusError as error:
                if error.status != 404:
                    return self._failed(tracked, file_id, error)
                if not await self._batch_visible(tracked):
                    return False  # the key cannot see the job: it stops, nothing is resent
                logger.warning(
                    "file %s of batch %s is gone (%s): its lines go into new batches",
                    file_id,
                    tracked.batch_id,
                    error,
                )
            except ThrottleError as error:
                return self._failed(tracked, file_id, error)
        return True

    async def _batch_visible(self, tracked: TrackedFile) -> bool:
        """Whether the file's batch is still there for this key.

        A file answering 404 is then gone (deleted, or past its 30 days) and its lines go
        again. If the batch answers 404 too, the key is not the one that made the job, and
        sending the lines again would pay for them twice: the job stops (the poller's
        ``lost``).
        """
        if tracked.batch_id is None:
            return True
        try:
            await self._client.retrieve_batch(tracked.batch_id)
        except APIStatusError as error:
            if error.status == 404:
                self._lost(tracked, error)
                return False
        except ThrottleError:
            pass  # unknown: the file's 404 stands
        return True

    def _failed(self, tracked: TrackedFile, file_id: str, error: ThrottleError) -> bool:
        if not self._fatal(error):
            logger.warning(
                "could not read file %s of batch %s (%s); trying again in %g s",
                file_id,
                tracked.batch_id,
                error,
                self._retry,
            )
        return False
