r"""The runner's results file: append-only, one result line per input line, exactly once.

Exactly once, across crashes: every result is one ``os.write`` of one whole line to a file
opened with ``O_APPEND``, so a killed process leaves either the whole line or, rarely, a torn
last line, which the next run detects and cuts off. A background ``fsync`` every second makes
finished lines survive a reboot too. On resume the indices already in the results file are
skipped; with ``--retry-failed`` the file is first rewritten without its error lines, so an
index never has two lines.

A results file is a file in which every line ending in ``\n`` is a result line: a JSON object
whose ``index`` is an integer (not a bool) from 0 to :data:`MAX_INDEX`, with exactly one of
``response`` and ``error``, and a ``custom_id``, if any, that is a string or null. Only its last
line may be otherwise, and only when it is a torn result line: a result line without its ``\n``,
or a line that is not JSON (with or without its ``\n``) but begins as every result line begins
(``{"index":``, or a piece of it); only such a line is ever cut, and only once the rest has
passed. Anything else is not a results file: it is refused, and never modified, so that ``-o``
pointed at the wrong file cannot destroy it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from throttle.errors import ConfigurationError

MAX_INDEX = 10**9 - 1  # a billion lines; the done bitmap then takes at most 125 MB
RESULT_LINE_START = b'{"index":'  # how every line that ResultsFile.write writes begins
# a result line's text can hold a lone surrogate (an input line that was not UTF-8); written
# as U+FFFD, so the results file stays UTF-8
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# one encoder for every result: json.dumps with options would build a new one per line
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class IndexSet:
    """A set of non-negative line indices as a bitmap: 1 MB for a million lines."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def __repr__(self) -> str:
        return f"IndexSet(count={self.count})"

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return 0 <= byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))

    def add(self, index: int) -> None:
        """Add ``index``.

        Raises:
            ValueError: ``index`` is not from 0 to :data:`MAX_INDEX`.
        """
        if not 0 <= index <= MAX_INDEX:
            raise ValueError(f"index {index} is not from 0 to {MAX_INDEX}")
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

        The whole file is checked before anything is changed: a file that is not a results
        file (see the module docstring) is refused as it is. With ``retry_failed``, the file
        is then rewritten (atomically) without its error lines.

        Raises:
            ConfigurationError: the file exists but cannot be read or written, or is not a
                results file (the error names the line and what is wrong with it).
        """
        resumed = Resumed(IndexSet())
        if not path.exists():
            return resumed
        kept: list[bytes] = []
        good_bytes = 0  # the length of the file without a torn last line
        try:
            with path.open("rb") as handle:
                for number, raw, last in _numbered_lines(handle):
                    try:
                        index, failed, custom_id = _read_result(raw)
                    except _NotAResultLineError as exc:
                        if last and _is_torn(raw):
                            break
                        raise ConfigurationError(
                            f"{path} is not a throttle results file: line {number} {exc}; "
                            "it was left as it is (use another -o, or move it away)"
                        ) from None
                    if last and not raw.endswith(b"\n"):
                        break  # whole but for its newline: torn all the same, so redone
                    good_bytes += len(raw)
                    if failed and retry_failed:
                        continue
                    resumed.done.add(index)
                    if custom_id is not None:
                        held = resumed.custom_ids.setdefault(custom_id, index)
                        resumed.custom_ids[custom_id] = min(held, index)
                    resumed.failed += failed
                    resumed.succeeded += not failed
                    if retry_failed:
                        kept.append(raw)
                size = handle.seek(0, os.SEEK_END)
            resumed.repaired_bytes = size - good_bytes
            if resumed.repaired_bytes:
                _truncate(path, good_bytes)
            if retry_failed:
                _replace(path, kept)
        except OSError as exc:
            raise ConfigurationError(f"cannot use results file {path}: {exc}") from exc
        return resumed

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one result as one line, in one write.

        ``record`` starts with its ``index`` (so a torn line can be told from another file's
        line); a lone surrogate in its text is written as U+FFFD.
        """
        line = _ENCODER.encode(record) + "\n"
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:  # only a lone surrogate fails: rare, so looked for only then
            data = _LONE_SURROGATE.sub("\ufffd", line).encode("utf-8")
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


def _numbered_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    r"""Each line of ``handle`` (split on ``\n`` only) with its 1-based number and lastness."""
    number = 0
    previous = handle.readline()
    while previous:
        current = handle.readline()
        number += 1
        yield number, previous, not current
        previous = current


class _NotAResultLineError(Exception):
    """A line that is not a result line; the message says why, after "line N"."""


def _read_result(raw: bytes) -> tuple[int, bool, str | None]:
    """A result line's index, whether it is an error, and its ``custom_id``.

    Raises:
        _NotAResultLineError: ``raw`` is not a result line.
    """
    try:
        record = json.loads(raw)
    except ValueError:  # UnicodeDecodeError too
        if not raw.strip():
            raise _NotAResultLineError("is blank") from None
        raise _NotAResultLineError("is not JSON") from None
    if not isinstance(record, dict):
        raise _NotAResultLineError(f"is a JSON {type(record).__name__}, not an object")
    if "index" not in record:
        raise _NotAResultLineError("has no index")
    index = record["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
        raise _NotAResultLineError(f"has the index {index!r}, not an integer from 0 to {MAX_INDEX}")
    if ("response" in record) == ("error" in record):
        raise _NotAResultLineError("has not exactly one of response and error")
    custom_id = record.get("custom_id")
    if custom_id is not None and not isinstance(custom_id, str):
        raise _NotAResultLineError(f"has the custom_id {custom_id!r}, not a string")
    return index, "error" in record, custom_id


def _is_torn(raw: bytes) -> bool:
    """Whether a last line that is not a result line is a torn one (see the module docstring)."""
    text = raw.rstrip(b"\n")
    if not text:
        return False
    try:
        json.loads(text)
    except ValueError:
        return text.startswith(RESULT_LINE_START) or RESULT_LINE_START.startswith(text)
    return False  # whole JSON that is not a result: another file's line, not a torn one


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as handle:
        handle.truncate(size)
        os.fsync(handle.fileno())


def _replace(path: Path, lines: list[bytes]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
