"""What a batch executor has in hand: its lines, and its files, each at its step.

A :class:`TrackedFile` is one batch input file with the lines that wait on it. It is made
either from lines just cut into a file (:meth:`TrackedFile.planned`) or, on a rerun, from what
the journal says of an earlier run's file (:func:`tracked_from_journal`): then the server's
state is taken as the journal last saw it, and the steps a crash may have interrupted are
looked up before they are repeated (``intent_unresolved``, ``maybe_created``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from throttle.batch_journal import JournalFile, JournalState
from throttle.batch_outcomes import TOKEN_LIMIT
from throttle.batch_split import FilePlan
from throttle.executor import JobLine, LineResult

ENDED_STATUSES = frozenset({"completed", "expired", "cancelled", "failed"})
RUNNING_STATUSES = frozenset({"in_progress", "finalizing", "cancelling"})
CANCELLED_STATUSES = frozenset({"cancelling", "cancelled"})


class Step(StrEnum):
    """Where a file is."""

    PLANNED = "planned"  # cut from lines; not (known to be) uploaded
    UPLOADED = "uploaded"  # on the server; no batch runs it
    VALIDATING = "validating"  # a batch was created from it (or may still validate)
    RUNNING = "running"  # its batch passed validation
    ENDED = "ended"  # its batch stopped: the lines' outcomes are in its files
    DROPPED = "dropped"  # its lines went elsewhere (or to their end)


@dataclass(slots=True, eq=False)
class TrackedFile:
    """One batch input file of the job and the lines waiting on it.

    Attributes:
        name: its unique file name.
        model: its lines' model.
        endpoint: their endpoint.
        indexes: its lines' indexes, in file order.
        tokens: their estimated enqueued tokens.
        step: where it is.
        plan: its content until it is uploaded (a file planned in this run).
        file_id: the server's id, once uploaded.
        uploaded_at: the server's upload time (Unix seconds).
        batch_id: the batch that runs (or ran) it.
        batch_status: that batch's last status seen.
        output_file_id: its batch's output file, once ended.
        error_file_id: its batch's error file, once ended.
        known_batches: every batch ever created from it (a lookup after a crash skips them).
        waiting: the indexes of lines held by the executor that this file will answer.
        intent_unresolved: an earlier run began uploading it: look for it on the server.
        maybe_created: an earlier run may have created a batch from it: look that up first.
        from_earlier_run: its batch ended in an earlier run.
        watched: this run saw its batch uncancelled (created it, or polled it so): a cancel
            then came from outside while the job ran, and stops it.
        interval: seconds between its last two polls.
        next_poll: when to poll its batch next (the executor's clock).
        not_before: when to try its next step again after a transient failure.
    """

    name: str
    model: str
    endpoint: str
    indexes: Sequence[int]
    tokens: int
    step: Step = Step.PLANNED
    plan: FilePlan | None = None
    file_id: str | None = None
    uploaded_at: int | None = None
    batch_id: str | None = None
    batch_status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    known_batches: set[str] = field(default_factory=set)
    waiting: set[int] = field(default_factory=set)
    intent_unresolved: bool = False
    maybe_created: bool = False
    from_earlier_run: bool = False
    watched: bool = False
    interval: float | None = None
    next_poll: float = 0.0
    not_before: float = 0.0

    def __repr__(self) -> str:
        return (
            f"TrackedFile({self.name}, {self.step}, {len(self.indexes)} lines, "
            f"{len(self.waiting)} waiting, batch {self.batch_id})"
        )

    @classmethod
    def planned(cls, name: str, plan: FilePlan) -> TrackedFile:
        """A file just cut from lines held by the executor (all of them wait on it)."""
        indexes = plan.indexes
        return cls(
            name, plan.model, plan.endpoint, indexes, plan.tokens, plan=plan, waiting=set(indexes)
        )

    def with_batch(self, batch_id: str) -> None:
        """A batch was created from it (or found): it validates."""
        self.batch_id = batch_id
        self.known_batches.add(batch_id)
        self.step = Step.VALIDATING
        self.batch_status = "validating"
        self.interval = None
        self.next_poll = 0.0
        self.maybe_created = False


def tracked_files(state: JournalState) -> dict[str, TrackedFile]:
    """Return an earlier run's files, by name, as the journal left them (dropped ones left out)."""
    files = ((name, tracked_from_journal(state, f)) for name, f in state.files.items())
    return {name: tracked for name, tracked in files if tracked is not None}


def tracked_from_journal(state: JournalState, journal_file: JournalFile) -> TrackedFile | None:
    """Return an earlier run's file as the journal left it, or ``None`` if it was dropped."""
    if journal_file.dropped:
        return None
    tracked = TrackedFile(
        journal_file.name,
        journal_file.model,
        journal_file.endpoint,
        journal_file.indexes,
        journal_file.tokens,
        file_id=journal_file.file_id,
        uploaded_at=journal_file.uploaded_at,
        known_batches=set(journal_file.batch_ids),
    )
    if journal_file.file_id is None:
        tracked.intent_unresolved = True
        return tracked
    tracked.step = Step.UPLOADED
    if not journal_file.batch_ids:
        tracked.maybe_created = True
        return tracked
    last = state.batches[journal_file.batch_ids[-1]]
    if last.status is None:
        tracked.with_batch(last.batch_id)
        return tracked
    if last.status == "failed" and last.code == TOKEN_LIMIT:
        tracked.maybe_created = True  # it was to be created again: perhaps it was
        return tracked
    tracked.batch_id, tracked.batch_status = last.batch_id, last.status
    tracked.output_file_id, tracked.error_file_id = last.output_file_id, last.error_file_id
    tracked.step = Step.ENDED
    tracked.from_earlier_run = True
    return tracked


@dataclass(slots=True, eq=False)
class HeldLine:
    """A line the executor holds until it ends.

    Attributes:
        line: the line.
        endpoint: its endpoint, as a batch names it.
        model: its model.
        tokens: its estimated enqueued tokens.
        future: where its result goes (``None``: not run, it runs next time).
        arrived: when the executor took it (its clock).
        attempts: the batches that ran it and gave no final answer.
        resent: an earlier run's error for it was not taken (``retry_failed``).
        sent_at: when its latest batch was created.
    """

    line: JobLine
    endpoint: str
    model: str
    tokens: int
    future: asyncio.Future[LineResult | None]
    arrived: float = 0.0
    attempts: int = 0
    resent: bool = False
    sent_at: float | None = None

    def end(self, result: LineResult | None) -> None:
        """End the line with ``result``, unless it already ended."""
        if not self.future.done():
            self.future.set_result(result)
