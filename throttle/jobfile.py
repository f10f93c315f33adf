"""The runner's files: a JSONL input read as a stream, and an append-only results file.

Exactly once, across crashes: every result is one ``os.write`` of one whole line to a file
opened with ``O_APPEND``, so a killed process leaves either the whole line or, rarely, a torn
last line, which the next run detects and cuts off. A background ``fsync`` every second makes
finished lines survive a reboot too. On resume the indices already in the results file are
skipped; with ``--retry-failed`` the file is first rewritten without its error lines, so an
index never has two lines.

A line is a bare request body (the cookbook's format) or a Batch API request
(``{"custom_id", "method", "url", "body"}``): an object with any of those four keys at its top
level is taken as a Batch API request and must then have all four (no request body has such a
top-level key). The file's first JSON object says which format the file is in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from throttle.errors import ConfigurationError

RAW_LINE_LIMIT = 1000  # characters of an unreadable line kept in its error result
BATCH_KEYS = ("custom_id", "method", "url", "body")  # a Batch API line's fields, all required


class IndexSet:
    """A set of non-negative line indices as a bitmap: 1 MB for a million lines."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def __repr__(self) -> str:
        return f"IndexSet(count={self.count})"

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))

    def add(self, index: int) -> None:
        """Add ``index``."""
        if index in self:
            return
        byte = index >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1024))
        self._bits[byte] |= 1 << (index & 7)
        self.count += 1


@dataclass(frozen=True, slots=True)
class InputLine:
    """One non-blank input line. ``index`` is 0-based among non-blank lines."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class RequestLine:
    """One input line, parsed: what to send, and what travels to its result.

    Attributes:
        body: the request body to send.
        metadata: the line's top-level ``metadata`` (never sent; copied to its result).
        custom_id: a Batch API line's ``custom_id``; ``None`` for a bare body.
        url: a Batch API line's endpoint path (``/v1/embeddings``); ``None`` for a bare body.
    """

    body: dict[str, Any]
    metadata: Any = None
    custom_id: str | None = None
    url: str | None = None


class InvalidLineError(ValueError):
    """An input line that cannot be sent; becomes an error result for that line, never sent.

    Attributes:
        kind: the ``code`` of the error result: ``"invalid_json"``, ``"not_an_object"``,
            ``"invalid_batch_line"`` (a Batch API line missing a field or with one of the
            wrong type), ``"method_not_allowed"`` (not ``POST``), ``"duplicate_custom_id"``
            or ``"mixed_line_formats"``.
        custom_id: the line's ``custom_id`` when it has a readable one.
    """

    def __init__(self, kind: str, message: str, custom_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.custom_id = custom_id


def read_lines(path: Path) -> Iterator[InputLine]:
    """Yield the non-blank lines of ``path`` one by one, never loading the file.

    Raises:
        ConfigurationError: the file cannot be opened or is not UTF-8 text.
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        index = 0
        try:
            for text in handle:
                if text.strip():
                    yield InputLine(index, text.rstrip("\n"))
                    index += 1
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{path} is not UTF-8 text: {exc}") from exc


def count_lines(path: Path) -> int:
    """Count the non-blank lines of ``path`` (one quick pass, for progress and ETA)."""
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc


def is_batch_line(line: Mapping[str, Any]) -> bool:
    """Whether a line's object is a Batch API request: it has any of :data:`BATCH_KEYS`."""
    return any(key in line for key in BATCH_KEYS)


def first_object(path: Path) -> tuple[int, dict[str, Any]] | None:
    """The index and object of the first line of ``path`` that is a JSON object, if any.

    Raises:
        ConfigurationError: the file cannot be read.
    """
    for line in read_lines(path):
        try:
            value = json.loads(line.text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return line.index, value
    return None


def parse_line(text: str) -> RequestLine:
    """Parse an input line: a bare request body, or a Batch API request.

    A bare body's top-level ``metadata`` is split off (never sent); so is a Batch API
    line's, beside its four fields.

    Raises:
        InvalidLineError: the line is not valid JSON, not a JSON object, or a Batch API line
            that is incomplete, has a field of the wrong type or a method other than POST.
    """
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidLineError("invalid_json", f"line is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        kind = type(value).__name__
        raise InvalidLineError("not_an_object", f"line is a JSON {kind}, not an object")
    if is_batch_line(value):
        return _batch_line(value)
    metadata = value.pop("metadata", None)
    return RequestLine(value, metadata)


def _batch_line(line: dict[str, Any]) -> RequestLine:
    custom_id = line.get("custom_id")
    readable_id = custom_id if isinstance(custom_id, str) and custom_id else None

    def invalid(kind: str, message: str) -> InvalidLineError:
        return InvalidLineError(kind, message, readable_id)

    missing = [key for key in BATCH_KEYS if key not in line]
    if missing:
        present = ", ".join(key for key in BATCH_KEYS if key in line)
        raise invalid(
            "invalid_batch_line",
            f"a Batch API line (it has {present}) needs {', '.join(missing)} too",
        )
    unknown = sorted(set(line) - {*BATCH_KEYS, "metadata"})
    if unknown:
        raise invalid(
            "invalid_batch_line",
            f"a Batch API line has only custom_id, method, url, body and metadata, not "
            f"{', '.join(unknown)} (request fields go inside body)",
        )
    if readable_id is None:
        raise invalid(
            "invalid_batch_line", f"custom_id must be a non-empty string, not {custom_id!r}"
        )
    method = line["method"]
    if method != "POST":
        raise invalid(
            "method_not_allowed",
            f"method {method!r} is not supported: throttle run, like the Batch API, "
            "sends POST only",
        )
    url = line["url"]
    if not isinstance(url, str) or not url.startswith("/") or url.startswith("//"):
        raise invalid(
            "invalid_batch_line",
            f"url must be an endpoint path such as /v1/chat/completions, not {url!r} "
            "(the server is --url)",
        )
    body = line["body"]
    if not isinstance(body, dict):
        raise invalid(
            "invalid_batch_line", f"body must be a JSON object, not {type(body).__name__}"
        )
    return RequestLine(body, line.get("metadata"), readable_id, url)


@dataclass(slots=True)
class Resumed:
    """What an existing results file already holds.

    Attributes:
        done: indices that need no new result.
        succeeded: of those, successes.
        failed: of those, errors (kept unless ``--retry-failed``).
        repaired_bytes: bytes of a torn last line that were cut off.
        custom_ids: the ``custom_id`` of each done Batch API line -> its smallest index.
    """

    done: IndexSet
    succeeded: int = 0
    failed: int = 0
    repaired_bytes: int = 0
    custom_ids: dict[str, int] = field(default_factory=dict)


class ResultsFile:
    """The append-only JSONL results file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.unsynced = 0

    def __repr__(self) -> str:
        return f"ResultsFile({str(self.path)!r}, unsynced={self.unsynced})"

    @staticmethod
    def resume(path: Path, *, retry_failed: bool) -> Resumed:
        """Read what ``path`` already holds, cutting off a torn last line.

        With ``retry_failed``, rewrite the file (atomically) without its error lines.

        Raises:
            ConfigurationError: the file exists but cannot be read or written.
        """
        resumed = Resumed(IndexSet())
        if not path.exists():
            return resumed
        try:
            resumed.repaired_bytes = _cut_torn_tail(path)
            kept: list[bytes] = []
            with path.open("rb") as handle:
                for raw in handle:
                    record = json.loads(raw)
                    failed = "error" in record
                    if failed and retry_failed:
                        continue
                    index = int(record["index"])
                    resumed.done.add(index)
                    custom_id = record.get("custom_id")
                    if isinstance(custom_id, str):
                        held = resumed.custom_ids.setdefault(custom_id, index)
                        resumed.custom_ids[custom_id] = min(held, index)
                    resumed.failed += failed
                    resumed.succeeded += not failed
                    if retry_failed:
                        kept.append(raw)
            if retry_failed:
                _replace(path, kept)
        except OSError as exc:
            raise ConfigurationError(f"cannot use results file {path}: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"{path} is not a throttle results file (a line without an index): {exc}"
            ) from exc
        return resumed

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one result as one line, in one write."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # a short write on a full disk: finish the line
            written += os.write(self._fd, data[written:])
        self.unsynced += 1

    def sync(self) -> None:
        """Flush written lines to the disk (they already survive a killed process)."""
        if self.unsynced:
            os.fsync(self._fd)
            self.unsynced = 0

    def close(self) -> None:
        """Sync and close."""
        self.sync()
        os.close(self._fd)


def _cut_torn_tail(path: Path) -> int:
    """Cut a last line that a crash left unfinished (no newline, or not JSON)."""
    data = path.read_bytes()
    end = len(data)
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1
    last_start = data.rfind(b"\n", 0, max(0, end - 1)) + 1
    if end > last_start:
        try:
            json.loads(data[last_start:end])
        except ValueError:
            end = last_start
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
            os.fsync(handle.fileno())
    return len(data) - end


def _replace(path: Path, lines: list[bytes]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
