"""Cutting a job's lines into Batch API input files: one model and one endpoint per file.

The Batch API refuses a file over its limits (50,000 requests, 50,000 embedding inputs across
the file, 200 MB) and a batch whose tokens do not fit under the model's enqueued-token limit.
A :class:`FileSplitter` groups lines by (model, endpoint) and cuts a file just before the line
that would break any of those limits, so a file is never refused for its size. Pure: no I/O,
no clock; the executor decides when a partial file is worth sending (:meth:`FileSplitter.flush`).

Each line gets the executor's own ``custom_id``, ``t-<index>`` (:func:`custom_id_for`): unique
in the file whatever the user's ``custom_id`` holds, and mapped back to the line by
:func:`index_of` when the unordered output file is joined. The user's ``custom_id`` stays in
the line's result, as in online mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from throttle.estimate import endpoint_kind

MAX_REQUESTS = 50_000  # requests per file (the Batch API's limit)
MAX_EMBEDDING_INPUTS = 50_000  # embedding inputs across a file
MAX_FILE_BYTES = 200 * 1000 * 1000  # "200 MB", read as the smaller (decimal) megabyte
_CUSTOM_ID_PREFIX = "t-"


def custom_id_for(index: int) -> str:
    """Return the ``custom_id`` a line has in its batch file: ``t-<index>``."""
    return f"{_CUSTOM_ID_PREFIX}{index}"


def index_of(custom_id: object) -> int | None:
    """Return the line index a ``custom_id`` of :func:`custom_id_for` names, else ``None``."""
    if not isinstance(custom_id, str) or not custom_id.startswith(_CUSTOM_ID_PREFIX):
        return None
    digits = custom_id[len(_CUSTOM_ID_PREFIX) :]
    return int(digits) if digits.isdecimal() and digits.isascii() else None


def batch_endpoint(url: str) -> str:
    """Return a line's endpoint as a batch file names it: ``/v1/...``, without a query."""
    path = "/" + urlsplit(url).path.lstrip("/")
    return path if path.startswith("/v1/") else "/v1" + path


def embedding_inputs(endpoint: str, body: Mapping[str, Any]) -> int:
    """Return the inputs a request adds to a file's embedding-input count.

    An embeddings body with a list of texts (or of token lists) counts each; one text, or
    one list of token ids, counts one. Other endpoints count nothing.
    """
    if endpoint_kind(endpoint) != "embeddings":
        return 0
    raw = body.get("input")
    if isinstance(raw, list) and raw and not isinstance(raw[0], int):
        return len(raw)
    return 1


def encode_line(index: int, endpoint: str, body: Mapping[str, Any]) -> bytes:
    r"""Return the JSONL line (with its newline) that asks for ``body`` in a batch file.

    Text is UTF-8 (a half to a third of the bytes of ``\u`` escapes), except in a line
    holding a lone surrogate (valid JSON, ``"\ud800"``, but no UTF-8 character): that line
    is escaped to ASCII, as the online mode sends it.
    """
    line = {"custom_id": custom_id_for(index), "method": "POST", "url": endpoint, "body": body}
    text = json.dumps(line, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class FileLimits:
    """What one batch input file may hold.

    Attributes:
        max_requests: requests per file.
        max_embedding_inputs: embedding inputs per file.
        max_bytes: bytes per file.
    """

    max_requests: int = MAX_REQUESTS
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS
    max_bytes: int = MAX_FILE_BYTES


@dataclass(frozen=True, slots=True)
class SplitLine:
    """One line, ready for a file.

    Attributes:
        index: the line's index in the job.
        data: its JSONL line in the file (see :func:`encode_line`).
        inputs: the embedding inputs it holds (0 for other endpoints).
        tokens: its estimated enqueued tokens.
    """

    index: int
    data: bytes
    inputs: int
    tokens: int


@dataclass(slots=True)
class FilePlan:
    """One batch input file: its lines' indexes and its bytes, built as lines join it.

    Attributes:
        model: the model of every line.
        endpoint: the endpoint of every line, e.g. ``/v1/embeddings``.
        indexes: its lines' indexes, in file order.
        data: its bytes so far (one buffer: a line costs its bytes and no object).
        inputs: its embedding inputs.
        tokens: its estimated enqueued tokens.
    """

    model: str
    endpoint: str
    indexes: list[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    inputs: int = 0
    tokens: int = 0

    def __repr__(self) -> str:
        return (
            f"FilePlan({self.model!r}, {self.endpoint!r}, {len(self.indexes)} lines, "
            f"{self.size:,} bytes, {self.tokens:,} tokens)"
        )

    @property
    def size(self) -> int:
        """The file's bytes."""
        return len(self.data)

    def fits(self, line: SplitLine, limits: FileLimits, max_tokens: int | None) -> bool:
        """Whether ``line`` can join this file within ``limits`` and ``max_tokens``.

        An empty file takes any line: a line too large on its own is refused before
        (:func:`line_problem`), and one over ``max_tokens`` alone cannot be cut smaller.
        """
        if not self.indexes:
            return True
        return (
            len(self.indexes) < limits.max_requests
            and self.inputs + line.inputs <= limits.max_embedding_inputs
            and self.size + len(line.data) <= limits.max_bytes
            and (max_tokens is None or self.tokens + line.tokens <= max_tokens)
        )

    def add(self, line: SplitLine) -> None:
        """Append ``line`` (the caller checked :meth:`fits`)."""
        self.indexes.append(line.index)
        self.data += line.data
        self.inputs += line.inputs
        self.tokens += line.tokens

    def content(self) -> bytes:
        """Return the file's bytes."""
        return bytes(self.data)


def line_problem(line: SplitLine, limits: FileLimits) -> str | None:
    """Why ``line`` fits in no file at all, or ``None`` when it fits in an empty one."""
    if len(line.data) > limits.max_bytes:
        return f"its batch line is {len(line.data):,} bytes; a file holds {limits.max_bytes:,}"
    if line.inputs > limits.max_embedding_inputs:
        return (
            f"it holds {line.inputs:,} embedding inputs; a file holds "
            f"{limits.max_embedding_inputs:,}"
        )
    return None


class FileSplitter:
    """Groups lines by (model, endpoint) and cuts each group into files within the limits.

    Args:
        limits: what a file may hold.
    """

    def __init__(self, limits: FileLimits) -> None:
        self.limits = limits
        self._open: dict[tuple[str, str], FilePlan] = {}

    def __repr__(self) -> str:
        return f"FileSplitter({self.pending} lines in {len(self._open)} open files)"

    @property
    def pending(self) -> int:
        """Lines added but not yet in a cut file."""
        return sum(len(plan.indexes) for plan in self._open.values())

    def add(
        self, model: str, endpoint: str, line: SplitLine, max_tokens: int | None = None
    ) -> FilePlan | None:
        """Add ``line`` to its group's open file.

        Args:
            model: the line's model.
            endpoint: the line's endpoint.
            line: the line (see :func:`line_problem` for lines that fit nowhere).
            max_tokens: the most estimated tokens a file of this model may hold (its
                enqueued-token limit, when known).

        Returns:
            The group's previous file, cut because ``line`` would not fit in it (``line``
            starts the next one), or ``None``.
        """
        key = (model, endpoint)
        plan = self._open.get(key)
        cut = None
        if plan is None or not plan.fits(line, self.limits, max_tokens):
            cut = plan
            plan = self._open[key] = FilePlan(model, endpoint)
        plan.add(line)
        return cut

    def flush(self) -> list[FilePlan]:
        """Cut every open file, full or not, and return them (oldest group first)."""
        plans = list(self._open.values())
        self._open.clear()
        return plans


def split_lines(
    lines: Iterable[tuple[str, str, SplitLine]],
    limits: FileLimits,
    max_tokens: Mapping[str, int] | None = None,
) -> list[FilePlan]:
    """Cut ``(model, endpoint, line)`` triples into files (all of them, the last ones partial).

    Args:
        lines: the lines with their model and endpoint, in the order they join files.
        limits: what a file may hold.
        max_tokens: per model, the most estimated tokens a file may hold.

    Returns:
        The files, in the order they were cut.
    """
    splitter = FileSplitter(limits)
    caps = max_tokens or {}
    files = [
        cut
        for model, endpoint, line in lines
        if (cut := splitter.add(model, endpoint, line, caps.get(model))) is not None
    ]
    return files + splitter.flush()
