"""A batch job's batches seen from outside the run: their status, and cancelling them.

Both read the job's journal (``<results>.batches.jsonl``), which names every file the job
uploaded and every batch it created, so they work on the job's batches only, while the run is
stopped or from another terminal while it runs. The API is asked only about the batches the
journal has not seen end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from throttle.batch_client import BatchClient
from throttle.batch_journal import JournalState, read_journal
from throttle.errors import APIStatusError, ConfigurationError


@dataclass(frozen=True, slots=True)
class BatchView:
    """One file of a batch job and its latest batch.

    Attributes:
        file_name: the file's unique name.
        model: its lines' model.
        endpoint: their endpoint.
        lines: how many lines it holds.
        tokens: their estimated enqueued tokens.
        batch_id: its latest batch, if one was created.
        status: that batch's status (from the API when asked, else the journal's), or
            ``"uploading"`` / ``"uploaded"`` for a file without a batch.
        request_counts: the batch's ``request_counts`` when the API was asked.
    """

    file_name: str
    model: str
    endpoint: str
    lines: int
    tokens: int
    batch_id: str | None
    status: str
    request_counts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """Whether its batch may still run (and cost)."""
        return self.batch_id is not None and self.status not in (
            "completed",
            "expired",
            "cancelled",
            "failed",
        )


def _views(state: JournalState) -> list[BatchView]:
    views = []
    for journal_file in state.files.values():
        if journal_file.dropped and not journal_file.batch_ids:
            continue
        batch_id = journal_file.batch_ids[-1] if journal_file.batch_ids else None
        if batch_id is not None:
            status = state.batches[batch_id].status or "open"
        else:
            status = "uploaded" if journal_file.file_id is not None else "uploading"
        views.append(
            BatchView(
                journal_file.name,
                journal_file.model,
                journal_file.endpoint,
                len(journal_file.indexes),
                journal_file.tokens,
                batch_id,
                status,
            )
        )
    return views


def _client(state: JournalState, journal: Path, api_key: str, api_root: str | None) -> BatchClient:
    root = api_root or state.api_root
    if root is None:
        raise ConfigurationError(f"the batch journal {journal} names no API; give its base URL")
    return BatchClient(root, api_key)


def _seen(view: BatchView, batch: Mapping[str, Any]) -> BatchView:
    counts = batch.get("request_counts")
    return BatchView(
        view.file_name,
        view.model,
        view.endpoint,
        view.lines,
        view.tokens,
        view.batch_id,
        str(batch.get("status")),
        counts if isinstance(counts, Mapping) else {},
    )


async def batch_status(
    journal: Path, api_key: str | None = None, *, api_root: str | None = None
) -> list[BatchView]:
    """Return the job's files and their batches, asking the API about the open ones.

    Args:
        journal: the job's journal.
        api_key: the key; without one, the journal's view only.
        api_root: the API root (by default the one the journal names).

    Raises:
        ConfigurationError: the journal cannot be read.
        ThrottleError: the API could not be asked.
    """
    state = read_journal(journal)
    views = _views(state)
    if api_key is None or not any(view.open for view in views):
        return views
    client = _client(state, journal, api_key, api_root)
    try:
        return [
            _seen(view, await client.retrieve_batch(view.batch_id))
            if view.open and view.batch_id is not None
            else view
            for view in views
        ]
    finally:
        await client.aclose()


async def cancel_open_batches(
    journal: Path, api_key: str, *, api_root: str | None = None
) -> list[BatchView]:
    """Cancel the job's batches that may still run; return them as they now stand.

    Lines already answered stay in the batches' output (a rerun of the job writes them);
    the rest are dropped, and a rerun sends them in new batches.

    Args:
        journal: the job's journal.
        api_key: the key.
        api_root: the API root (by default the one the journal names).

    Raises:
        ConfigurationError: the journal cannot be read.
        ThrottleError: the API refused or could not be reached.
    """
    state = read_journal(journal)
    client = _client(state, journal, api_key, api_root)
    cancelled = []
    try:
        for view in _views(state):
            if not view.open or view.batch_id is None:
                continue
            try:
                batch = await client.cancel_batch(view.batch_id)
            except APIStatusError as error:
                if error.status != 409:  # 409: it stopped already
                    raise
                batch = await client.retrieve_batch(view.batch_id)
            cancelled.append(_seen(view, batch))
    finally:
        await client.aclose()
    return cancelled
