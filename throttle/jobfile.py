"""The runner's results file: append-only, one result line per input line, exactly once.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from throttle.errors import ConfigurationError


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
