"""The simulated Batch API's batches: created, validated against the enqueued limit, finished.

Every method takes ``now`` (simulated Unix seconds) and first settles what fell due by then,
in order: validations (a batch is accepted only if its tokens fit under its model's enqueued
limit next to the organization's batches still running at that moment) and the files of
batches that finished. Nothing runs in the background; the same calls at the same moments
give the same batches.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from throttle.testing.sim_batch_config import COMPLETION_WINDOW_SECONDS, BatchSettings
from throttle.testing.sim_batch_input import BatchInput
from throttle.testing.sim_batch_output import render_files
from throttle.testing.sim_batch_plan import EXPIRED, BatchPlan, plan_batch
from throttle.testing.sim_batch_timeline import BatchTimeline
from throttle.testing.sim_files import FileStore, StoredFile, object_id

_STOPPED = ("completed", "expired", "failed", "cancelled")


class BatchConflictError(ValueError):
    """A cancel of a batch that already stopped (the real API's 409)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Cannot cancel a batch with status '{status}'.")
        self.status = status


@dataclass(slots=True)
class SimBatch:
    """One batch on the simulated server.

    Attributes:
        id: ``batch_...``.
        org: the organization that created it.
        endpoint: the endpoint it was created for, e.g. ``"/v1/embeddings"``.
        input_file_id: the file its requests came from.
        metadata: the caller's labels.
        requests: the input file's requests.
        plan: each line's turn and fate.
        timeline: when it is in which status.
        errors: why validation failed it, in the real ``errors.data`` shape.
        output_file_id: its output file, once written (if any line was answered).
        error_file_id: its error file, once written (if any line failed or expired).
    """

    id: str
    org: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    requests: BatchInput
    plan: BatchPlan
    timeline: BatchTimeline
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    def as_object(self, now: float) -> dict[str, Any]:
        """Return the real API's ``batch`` object as it stands at ``now``."""
        status = self.timeline.status(now)
        taken = self.timeline.answered(now)
        total = len(self.requests.lines) if self.timeline.accepted else 0
        completed = self.plan.answered_before[taken]
        finished = status in ("completed", "expired")
        failed = total - completed if finished else self.plan.errors_before[taken]
        prompt, completion = self.plan.prompt_before[taken], self.plan.completion_before[taken]
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.requests.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            **self.timeline.timestamps(now),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            },
            "metadata": self.metadata,
        }


def enqueued_limit_message(model: str, org: str, limit: int) -> str:
    """Return the real API's message for a batch over the enqueued-token limit."""
    return (
        f"Enqueued token limit reached for {model} in organization {org}. Limit: {limit:,} "
        "enqueued tokens. Please try again once some in_progress batches have been completed."
    )


class BatchBook:
    """Every batch on the simulated server.

    Args:
        settings: speed, enqueued limits and shares of lost lines.
        files: where input files are read and output files written.
        completion_tokens: what the simulator generates per answer when ``max_tokens`` allows.
    """

    def __init__(self, settings: BatchSettings, files: FileStore, completion_tokens: int) -> None:
        self._settings = settings
        self._files = files
        self._completion_tokens = completion_tokens
        self._batches: dict[str, SimBatch] = {}
        self._count = itertools.count(1)
        self._validating: list[SimBatch] = []  # in creation order, which is validation order
        self._unwritten: list[SimBatch] = []
        self._running: dict[tuple[str, str], list[SimBatch]] = defaultdict(list)

    def __repr__(self) -> str:
        return f"BatchBook(batches={len(self._batches)}, validating={len(self._validating)})"

    def create(
        self,
        org: str,
        input_file: StoredFile,
        endpoint: str,
        metadata: dict[str, str] | None,
        now: float,
    ) -> SimBatch:
        """Create a batch of ``input_file``'s requests (a ``"batch"`` file) at ``now``."""
        requests = input_file.batch_input
        assert requests is not None  # noqa: S101 - the caller checked the file's purpose
        batch_id = object_id("batch_", self._settings.seed, "batch", next(self._count))
        plan = plan_batch(
            requests, self._settings, f"{self._settings.seed} {batch_id}", self._completion_tokens
        )
        timeline = BatchTimeline(
            created_at=now,
            validated_at=now + self._settings.validating_seconds,
            lines=len(requests.lines),
            lines_per_second=self._settings.lines_per_second,
            finalizing_seconds=self._settings.finalizing_seconds,
            window_seconds=COMPLETION_WINDOW_SECONDS,
            drawn_expired=EXPIRED in plan.fates,
        )
        batch = SimBatch(batch_id, org, endpoint, input_file.id, metadata, requests, plan, timeline)
        self._batches[batch_id] = batch
        self._validating.append(batch)
        self._unwritten.append(batch)
        self.advance(now)  # with no validating time, it is validated at once
        return batch

    def get(self, org: str, batch_id: str, now: float) -> SimBatch | None:
        """Return ``org``'s batch ``batch_id`` as of ``now``, or ``None`` (the real 404)."""
        self.advance(now)
        batch = self._batches.get(batch_id)
        return batch if batch is not None and batch.org == org else None

    def cancel(self, batch: SimBatch, now: float) -> None:
        """Cancel ``batch`` at ``now``: lines answered so far are kept, the rest dropped.

        Raises:
            BatchConflictError: the batch already stopped.
        """
        self.advance(now)
        status = batch.timeline.status(now)
        if status in _STOPPED:
            raise BatchConflictError(status)
        if status != "cancelling":
            batch.timeline.cancel_requested_at = now

    def listing(self, org: str, now: float) -> list[SimBatch]:
        """Return ``org``'s batches as of ``now``, newest first."""
        self.advance(now)
        return [b for b in reversed(self._batches.values()) if b.org == org]

    def advance(self, now: float) -> None:
        """Settle the validations that fell due by ``now``, then write finished batches' files."""
        while self._validating and self._validating[0].timeline.validated_at <= now:
            self._validate(self._validating.pop(0))
        unwritten = []
        for batch in self._unwritten:
            if batch.timeline.finished_at > now:
                unwritten.append(batch)
            elif batch.timeline.accepted:
                self._write(batch)
        self._unwritten = unwritten

    def _validate(self, batch: SimBatch) -> None:
        timeline = batch.timeline
        at = timeline.validated_at
        cancel = timeline.cancel_requested_at
        if cancel is not None and cancel <= at:
            return  # cancelled while validating: never accepted
        if batch.requests.url != batch.endpoint:
            message = (
                f"The URL provided for this request ({batch.requests.url}) does not match the "
                f"batch endpoint {batch.endpoint}."
            )
            self._fail(batch, "invalid_url", message, param="url", line=1)
            return
        model = batch.requests.model
        running = self._running[batch.org, model]
        running[:] = [b for b in running if b.timeline.finished_at > at]
        limit = self._settings.enqueued_limit(model)
        enqueued = sum(b.plan.enqueued for b in running) + batch.plan.enqueued
        if limit is not None and enqueued > limit:
            message = enqueued_limit_message(model, batch.org, limit)
            self._fail(batch, "token_limit_exceeded", message)
            return
        timeline.accepted = True
        running.append(batch)

    def _fail(
        self,
        batch: SimBatch,
        code: str,
        message: str,
        param: str | None = None,
        line: int | None = None,
    ) -> None:
        batch.timeline.accepted = False
        batch.errors = [{"code": code, "message": message, "param": param, "line": line}]

    def _write(self, batch: SimBatch) -> None:
        answered = batch.timeline.answered(batch.timeline.finished_at)
        cancelled = batch.timeline.cancel_requested_at is not None
        output, errors = render_files(
            batch.id, batch.requests, batch.plan, answered, cancelled=cancelled
        )
        if output:
            batch.output_file_id = self._store(batch, "output", output)
        if errors:
            batch.error_file_id = self._store(batch, "error", errors)

    def _store(self, batch: SimBatch, kind: str, content: bytes) -> str:
        name = f"{batch.id}_{kind}.jsonl"
        finished = int(batch.timeline.finished_at)
        return self._files.add(batch.org, name, "batch_output", content, created_at=finished).id
