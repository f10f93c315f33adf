"""The batch journal: what a batch job asked of the Batch API, kept durably beside its results.

A file uploaded or a batch created costs money or time that a crash must not spend twice, and
the server never tells which of its files and batches are this job's. So before and after each
such step a record is appended to ``<results>.batches.jsonl``, flushed and fsynced before the
next step; a rerun replays it (:class:`JournalState`) and carries on from there. One JSON
object per line, a ``type`` each::

    {"type": "job", "id": "4f0c...", "api_root": "https://api.openai.com/v1"}
    {"type": "upload", "name": "throttle-4f0c...-00001.jsonl", "model": "gpt-4o-mini",
     "endpoint": "/v1/chat/completions", "lines": [[0, 50000]], "tokens": 61234567}
    {"type": "uploaded", "name": "throttle-4f0c...-00001.jsonl", "file_id": "file-...",
     "created_at": 1767225600}
    {"type": "created", "file_id": "file-...", "batch_id": "batch_...", "created_at": ...}
    {"type": "ended", "batch_id": "batch_...", "status": "completed", "output_file_id": ...,
     "error_file_id": ..., "code": null, "message": null}
    {"type": "dropped", "name": "throttle-4f0c...-00001.jsonl"}
    {"type": "limit", "model": "gpt-4o-mini", "tokens": 2000000}

``upload`` is written before the upload (an intent: a crash during it leaves a file on the
server that the rerun finds by its unique name), ``uploaded`` after it; ``created`` after a
batch was created (a crash before it is covered by looking the file's batch up on the
server); ``ended`` when a batch stopped, before its lines' results are handed on; ``dropped``
when a file's lines moved to other files; ``limit`` when an enqueued-token limit was learned.
``lines`` holds the lines' indexes as ``[start, stop)`` ranges, in file order. A line belongs
to the last file that names it. A file name is journaled once (its ``upload``): a rerun finds
a file on the server by its name, so a name must never stand for two files. A record torn by
a crash is cut off when the journal is opened again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from io import BufferedWriter
from pathlib import Path
from typing import Any

from throttle.batch_lines import LineOwners, LineRuns
from throttle.errors import ConfigurationError

logger = logging.getLogger(__name__)
JOURNAL_SUFFIX = ".batches.jsonl"


def journal_path_for(results: Path) -> Path:
    """Return the journal of the job whose results file is ``results``."""
    return results.with_name(results.name + JOURNAL_SUFFIX)


def to_ranges(indexes: Iterable[int]) -> list[list[int]]:
    """Return ``indexes`` as ``[start, stop)`` runs of consecutive numbers, order kept."""
    runs: list[list[int]] = []
    for index in indexes:
        if runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
    return runs


def from_ranges(runs: Iterable[Iterable[int]]) -> Iterator[int]:
    """Yield the indexes of :func:`to_ranges` runs, in order."""
    for start, stop in runs:
        yield from range(start, stop)


@dataclass(slots=True)
class JournalBatch:
    """A batch the job created, as the journal knows it.

    Attributes:
        batch_id: its id.
        file_name: the name of the file it runs.
        status: how it ended (``completed``, ``expired``, ``cancelled``, ``failed``), or
            ``None`` while it may still run.
        output_file_id: its output file, once ended.
        error_file_id: its error file, once ended.
        code: why it failed (``token_limit_exceeded``, ...), if it did.
        message: the server's words about that.
    """

    batch_id: str
    file_name: str
    status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    code: str | None = None
    message: str | None = None


@dataclass(slots=True)
class JournalFile:
    """A batch input file of the job.

    Attributes:
        name: its unique file name (how the server's copy is found after a crash).
        model: the model of its lines.
        endpoint: their endpoint.
        indexes: its lines' indexes, in file order (kept as runs: a job may hold millions).
        tokens: their estimated enqueued tokens.
        file_id: the server's id, once uploaded.
        uploaded_at: the server's ``created_at`` of the file (Unix seconds).
        batch_ids: the batches created from it, oldest first.
        dropped: its lines moved to other files; it is never used again.
    """

    name: str
    model: str
    endpoint: str
    indexes: LineRuns
    tokens: int
    file_id: str | None = None
    uploaded_at: int | None = None
    batch_ids: list[str] = field(default_factory=list)
    dropped: bool = False


@dataclass(slots=True)
class JournalState:
    """What a journal's records add up to (pure: :meth:`apply` one record after another).

    Attributes:
        job_id: the job's id (in its file names and batch metadata).
        api_root: the API root the job's files and batches live at.
        files: every file, by name, in the order they were planned.
        batches: every batch, by id.
        line_file: each line's index -> the name of the last file that holds it (as runs).
        limits: enqueued-token limits learned, by model.
    """

    job_id: str | None = None
    api_root: str | None = None
    files: dict[str, JournalFile] = field(default_factory=dict)
    batches: dict[str, JournalBatch] = field(default_factory=dict)
    line_file: LineOwners = field(default_factory=LineOwners)
    limits: dict[str, int] = field(default_factory=dict)
    _by_file_id: dict[str, str] = field(default_factory=dict)

    def file_by_id(self, file_id: str) -> JournalFile | None:
        """Return the file the server knows as ``file_id``, if it is the job's."""
        name = self._by_file_id.get(file_id)
        return None if name is None else self.files[name]

    def ran(self) -> Iterator[tuple[str, int]]:
        """Yield the model and tokens of each file a batch ran (it passed validation)."""
        for journal_file in self.files.values():
            statuses = (self.batches[batch_id].status for batch_id in journal_file.batch_ids)
            if any(status in ("completed", "expired") for status in statuses):
                yield journal_file.model, journal_file.tokens

    def open_batches(self) -> list[JournalBatch]:
        """Return the batches that have not been seen to end, oldest first."""
        return [batch for batch in self.batches.values() if batch.status is None]

    def apply(self, record: Mapping[str, Any]) -> None:
        """Add one record's news (see the module docstring for the records)."""
        kind = record.get("type")
        if kind == "job":
            self.job_id, self.api_root = record["id"], record.get("api_root")
        elif kind == "upload":
            indexes = LineRuns(record["lines"])
            name = record["name"]
            if name in self.files:  # the server would then hold two files of one name
                raise ValueError(f"the file name {name} is journaled already")
            self.files[name] = JournalFile(
                name, record["model"], record["endpoint"], indexes, int(record["tokens"])
            )
            self.line_file.assign(indexes.runs(), name)
        elif kind == "uploaded":
            journal_file = self.files[record["name"]]
            journal_file.file_id, journal_file.uploaded_at = (
                record["file_id"],
                record.get("created_at"),
            )
            self._by_file_id[record["file_id"]] = journal_file.name
        elif kind == "created":
            name = self._by_file_id[record["file_id"]]
            self.files[name].batch_ids.append(record["batch_id"])
            self.batches[record["batch_id"]] = JournalBatch(record["batch_id"], name)
        elif kind == "ended":
            batch = self.batches[record["batch_id"]]
            batch.status = record["status"]
            batch.output_file_id = record.get("output_file_id")
            batch.error_file_id = record.get("error_file_id")
            batch.code, batch.message = record.get("code"), record.get("message")
        elif kind == "dropped":
            journal_file = self.files[record["name"]]
            journal_file.dropped = True
            self.line_file.release(journal_file.name)
        elif kind == "limit":
            self.limits[record["model"]] = int(record["tokens"])
        else:
            raise ValueError(f"unknown journal record type {kind!r}")


def _records(data: bytes, path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            logger.warning("skipped unreadable line %d of the batch journal %s", number, path)
            continue
        if isinstance(record, dict):
            yield record


def read_journal(path: Path) -> JournalState:
    """Replay the journal at ``path`` without changing it.

    Raises:
        ConfigurationError: it cannot be read, or holds records that do not add up.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalState()
    except OSError as error:
        raise ConfigurationError(f"cannot read the batch journal {path}: {error}") from error
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]  # a record torn by a crash: never written
    state = JournalState()
    for record in _records(data, path):
        try:
            state.apply(record)
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigurationError(
                f"the batch journal {path} does not add up at {record}: {error!r}; it belongs "
                "to this results file only (move it away to start the batches afresh)"
            ) from error
    return state


class BatchJournal:
    """The job's journal, open for appending; :attr:`state` is what it holds so far.

    Args:
        path: the journal file (created when the first record is written).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = read_journal(path)
        self._handle: BufferedWriter | None = None
        self.records_written = 0

    def __repr__(self) -> str:
        state = self.state
        return f"BatchJournal({self.path}, {len(state.files)} files, {len(state.batches)} batches)"

    def append(self, record: dict[str, Any]) -> None:
        """Apply ``record`` and write it durably (flushed and fsynced) before returning.

        Raises:
            OSError: it could not be written (the step it records must not go ahead).
        """
        self.state.apply(record)
        if self._handle is None:
            self._handle = self._open()
        self._handle.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records_written += 1

    def _open(self) -> BufferedWriter:
        """Open for appending, first cutting a record torn by a crash off the end."""
        existed = self.path.exists()
        handle = self.path.open("ab")
        size = handle.tell()
        if size:
            with self.path.open("rb") as reader:
                reader.seek(max(0, size - 1))
                if reader.read(1) != b"\n":
                    data = self.path.read_bytes()
                    handle.truncate(data.rfind(b"\n") + 1)
        if not existed:  # the new name must survive a crash too
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return handle

    def close(self) -> None:
        """Close the file (records are already on disk)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
