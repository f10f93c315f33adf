"""The job's steps at the Batch API, each written to the journal around itself.

Every step that costs something on the server goes through here, in this order, so that a
crash at any point leaves a journal from which the rerun repeats nothing already done:

* upload: the intent (``upload``, naming the file's unique name and lines) is written first,
  the file id (``uploaded``) after; a rerun that finds only the intent looks the file up by
  its name (:meth:`BatchSteps.resolve_intent`) before it uploads anything. A name is never
  given twice: a run numbers its files on from the highest number its journal holds (names
  drawn but never journaled were never uploaded);
* create: ``created`` is written once the batch exists; a rerun that finds a file uploaded and
  no batch (or only batches it knows failed) looks for a batch made from the file before
  creating one (:meth:`BatchSteps.adopt_batch`);
* end: ``ended`` is written before any line's result is handed on.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from throttle.batch_client import BatchClient
from throttle.batch_files import Step, TrackedFile
from throttle.batch_journal import BatchJournal, to_ranges
from throttle.batch_lookup import find_batch, find_file
from throttle.errors import ConfigurationError

logger = logging.getLogger("throttle.batch")


@dataclass(slots=True)
class BatchCounts:
    """What a batch executor did at the API in this run.

    Attributes:
        files_uploaded: input files uploaded.
        files_found: input files an earlier run uploaded, found by name after a crash.
        batches_created: batches created.
        batches_found: batches an earlier run created, found after a crash.
        batches_refused: batches that failed over the enqueued-token limit.
        batches_ended: batches seen to end (any status).
        lines_retried: lines put into a later batch (expired, 5xx, not run).
        polls: batch status requests.
        downloads: output and error file downloads.
    """

    files_uploaded: int = 0
    files_found: int = 0
    batches_created: int = 0
    batches_found: int = 0
    batches_refused: int = 0
    batches_ended: int = 0
    lines_retried: int = 0
    polls: int = 0
    downloads: int = 0


class BatchSteps:
    """Uploads files and creates batches, recording each step in the journal.

    Args:
        client: the Files and Batch API client.
        journal: the job's journal.
        metadata: the user's labels for every batch.
        counts: where the steps are counted.
    """

    def __init__(
        self,
        client: BatchClient,
        journal: BatchJournal,
        metadata: Mapping[str, str],
        counts: BatchCounts,
    ) -> None:
        self.client = client
        self.journal = journal
        self._metadata = dict(metadata)
        self.counts = counts
        self.job_id = journal.state.job_id or secrets.token_hex(8)
        self._sequence = _last_sequence(journal.state.files, self.job_id)

    def __repr__(self) -> str:
        return f"BatchSteps(job {self.job_id}, {self.counts})"

    def begin(self) -> None:
        """Record a new job (its id, its API) before its first step; an old one is known.

        Raises:
            ConfigurationError: the journal is a job's at another API (its files and batches
                cannot be found at this one).
            OSError: the journal could not be written.
        """
        journaled, current = self.journal.state.api_root, self.client.api_root
        if journaled is not None and journaled != current:
            raise ConfigurationError(
                f"the batch journal {self.journal.path} belongs to a job at {journaled}, not "
                f"at {current}, where its files and batches cannot be found: run with that "
                "job's --url and key, or move the journal away to start its batches afresh"
            )
        if self.journal.state.job_id is None:
            self.journal.append(
                {"type": "job", "id": self.job_id, "api_root": self.client.api_root}
            )

    def next_name(self) -> str:
        """Return a file name no file of any job has had: the job's id and a sequence."""
        self._sequence += 1
        return f"throttle-{self.job_id}-{self._sequence:05d}.jsonl"

    async def upload(self, tracked: TrackedFile) -> None:
        """Upload a planned file: intent recorded, file uploaded, its id recorded.

        An upload tried again (the server was not found to have it) keeps its first intent.
        """
        plan = tracked.plan
        assert plan is not None  # noqa: S101 - only files planned in this run are uploaded
        if tracked.name not in self.journal.state.files:
            self.journal.append(
                {
                    "type": "upload",
                    "name": tracked.name,
                    "model": tracked.model,
                    "endpoint": tracked.endpoint,
                    "lines": to_ranges(tracked.indexes),
                    "tokens": tracked.tokens,
                }
            )
        uploaded = await self.client.upload(tracked.name, plan.content())
        self.counts.files_uploaded += 1
        self._uploaded(tracked, uploaded)
        logger.info(
            "uploaded %s as %s: %d lines, %d bytes, ~%d tokens",
            tracked.name,
            tracked.file_id,
            len(tracked.indexes),
            plan.size,
            tracked.tokens,
        )

    async def resolve_intent(self, tracked: TrackedFile) -> bool:
        """Find an upload of ``tracked`` that began but was never recorded, by its name.

        Returns:
            Whether the server has it (it is then ``UPLOADED``).
        """
        found = await find_file(self.client, tracked.name)
        tracked.intent_unresolved = False
        if found is None:
            return False
        self.counts.files_found += 1
        self._uploaded(tracked, found)
        return True

    def _uploaded(self, tracked: TrackedFile, file_object: Mapping[str, Any]) -> None:
        file_id = str(file_object["id"])
        created_at = file_object.get("created_at")
        self.journal.append(
            {
                "type": "uploaded",
                "name": tracked.name,
                "file_id": file_id,
                "created_at": created_at if isinstance(created_at, int) else None,
            }
        )
        tracked.file_id = file_id
        tracked.uploaded_at = created_at if isinstance(created_at, int) else None
        tracked.plan = None  # its lines' bytes are on the server now
        tracked.step = Step.UPLOADED

    async def adopt_batch(self, tracked: TrackedFile) -> bool:
        """Find a batch an earlier run created from ``tracked`` after its last journal record.

        Returns:
            Whether one was found (``tracked`` then runs it).
        """
        assert tracked.file_id is not None  # noqa: S101 - only uploaded files get here
        found = await find_batch(
            self.client, tracked.file_id, tracked.uploaded_at, exclude=tracked.known_batches
        )
        tracked.maybe_created = False
        if found is None:
            return False
        self.counts.batches_found += 1
        self._created(tracked, str(found["id"]))
        return True

    async def create(self, tracked: TrackedFile) -> None:
        """Create a batch of an uploaded file; record it."""
        assert tracked.file_id is not None  # noqa: S101 - only uploaded files get here
        metadata = {**self._metadata, "throttle_job": self.job_id, "throttle_file": tracked.name}
        batch = await self.client.create_batch(tracked.file_id, tracked.endpoint, metadata)
        self.counts.batches_created += 1
        self._created(tracked, str(batch["id"]))
        logger.info("created batch %s of %s (%s)", tracked.batch_id, tracked.name, tracked.model)

    def _created(self, tracked: TrackedFile, batch_id: str) -> None:
        self.journal.append({"type": "created", "file_id": tracked.file_id, "batch_id": batch_id})
        tracked.with_batch(batch_id)
        tracked.watched = True

    def ended(self, tracked: TrackedFile, batch: Mapping[str, Any], code: str | None) -> None:
        """Record that ``tracked``'s batch stopped (``batch`` is its last object)."""
        message = None
        errors = batch.get("errors")
        data = errors.get("data") if isinstance(errors, Mapping) else None
        if isinstance(data, list) and data and isinstance(data[0], Mapping):
            message = data[0].get("message")
        self.journal.append(
            {
                "type": "ended",
                "batch_id": tracked.batch_id,
                "status": batch.get("status"),
                "output_file_id": batch.get("output_file_id"),
                "error_file_id": batch.get("error_file_id"),
                "code": code,
                "message": message,
            }
        )
        self.counts.batches_ended += 1

    def drop(self, tracked: TrackedFile) -> None:
        """Record that ``tracked``'s lines moved elsewhere (if the journal knows the file)."""
        if tracked.name in self.journal.state.files:
            self.journal.append({"type": "dropped", "name": tracked.name})
        tracked.step = Step.DROPPED
        tracked.plan = None

    def learned(self, model: str, tokens: int) -> None:
        """Record a model's enqueued-token limit learned from a failed batch."""
        self.journal.append({"type": "limit", "model": model, "tokens": tokens})


def _last_sequence(names: Iterable[str], job_id: str) -> int:
    """Return the highest number among the job's file names (0: none)."""
    prefix, suffix = f"throttle-{job_id}-", ".jsonl"
    numbers = (
        name[len(prefix) : -len(suffix)]
        for name in names
        if name.startswith(prefix) and name.endswith(suffix)
    )
    return max((int(n) for n in numbers if n.isdecimal() and n.isascii()), default=0)
