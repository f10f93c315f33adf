"""The runner's files: a JSONL input read as a stream, and an append-only results file.

Exactly once, across crashes: every result is one ``os.write`` of one whole line to a file
opened with ``O_APPEND``, so a killed process leaves either the whole line or, rarely, a torn
last line, which the next run detects and cuts off. A background ``fsync`` every second makes
finished lines survive a reboot too. On resume the indices already in the results file are
skipped; with ``--retry-failed`` the file is first rewritten without its error lines, so an
index never has two lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from throttle.errors import ConfigurationError

RAW_LINE_LIMIT = 1000  # characters of an unreadable line kept in its error result


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


class InvalidLineError(ValueError):
    """An input line that is not a JSON object; becomes an error result for that line.

    Attributes:
        kind: ``"invalid_json"`` or ``"not_an_object"``, the ``code`` of the error result.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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


def parse_line(text: str) -> tuple[dict[str, Any], Any]:
    """Split an input line into the request body and its ``metadata`` (never sent).

    Raises:
        InvalidLineError: the line is not valid JSON, or not a JSON object.
    """
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise InvalidLineError("invalid_json", f"line is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        kind = type(body).__name__
        raise InvalidLineError("not_an_object", f"line is a JSON {kind}, not an object")
    metadata = body.pop("metadata", None)
    return body, metadata


@dataclass(slots=True)
class Resumed:
    """What an existing results file already holds.

    Attributes:
        done: indices that need no new result.
        succeeded: of those, successes.
        failed: of those, errors (kept unless ``--retry-failed``).
        repaired_bytes: bytes of a torn last line that were cut off.
    """

    done: IndexSet
    succeeded: int = 0
    failed: int = 0
    repaired_bytes: int = 0


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
                    resumed.done.add(int(record["index"]))
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
