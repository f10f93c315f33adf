"""A job's input: a JSONL file read as a stream, one request per line, parsed.

A line is a bare request body (the cookbook's format) or a Batch API request
(``{"custom_id", "method", "url", "body"}``): an object with any of those four keys at its top
level is taken as a Batch API request and must then have all four (no request body has such a
top-level key). The file's first JSON object says which format the file is in.

Either format may carry, at its top level, ``metadata`` (copied to the result) and
``client_request_id`` (sent as the request's ``X-Client-Request-Id``); neither is sent in the
body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from throttle.errors import ConfigurationError, InvalidRequestError
from throttle.request_identity import check_client_request_id

RAW_LINE_LIMIT = 1000  # characters of an unreadable line kept in its error result
BATCH_KEYS = ("custom_id", "method", "url", "body")  # a Batch API line's fields, all required
LINE_KEYS = ("metadata", "client_request_id")  # beside a request, never sent in its body
JSON_WHITESPACE = b" \t\r\n"  # a line of only these is blank: skipped, no index
# read_lines keeps each undecodable byte as one of these (surrogateescape); UTF-8 text never
# holds a surrogate, so finding one means the line was not UTF-8
_UNDECODABLE = re.compile("[\udc80-\udcff]")


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
        client_request_id: the line's own ``client_request_id`` (checked; sent as its
            ``X-Client-Request-Id``), or ``None``.
    """

    body: dict[str, Any]
    metadata: Any = None
    custom_id: str | None = None
    url: str | None = None
    client_request_id: str | None = None


class InvalidLineError(ValueError):
    """An input line that cannot be sent; becomes an error result for that line, never sent.

    Attributes:
        kind: the ``code`` of the error result: ``"invalid_utf8"``, ``"invalid_json"``,
            ``"not_an_object"``,
            ``"invalid_batch_line"`` (a Batch API line missing a field or with one of the
            wrong type), ``"method_not_allowed"`` (not ``POST``),
            ``"invalid_client_request_id"`` (not printable ASCII of 1 to 512 characters),
            ``"duplicate_custom_id"`` or ``"mixed_line_formats"``.
        custom_id: the line's ``custom_id`` when it has a readable one.
    """

    def __init__(self, kind: str, message: str, custom_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.custom_id = custom_id


def read_lines(path: Path) -> Iterator[InputLine]:
    r"""Yield the non-blank lines of ``path`` one by one, never loading the file.

    A line ends at ``\n`` only (a ``\r\n`` ending loses its ``\r``; a lone ``\r`` stays
    inside the line), exactly as :func:`count_lines` counts, so indices never shift. A line
    that is not UTF-8 is still yielded, its undecodable bytes kept as lone surrogates
    (``surrogateescape``), for :func:`parse_line` to refuse that line alone.

    Raises:
        ConfigurationError: the file cannot be opened or read.
    """
    for index, raw in enumerate(_non_blank_lines(path)):
        ending = 2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0
        yield InputLine(index, raw[: len(raw) - ending].decode("utf-8", "surrogateescape"))


def count_lines(path: Path) -> int:
    """Count the non-blank lines of ``path`` (one quick pass, for progress and ETA).

    Raises:
        ConfigurationError: the file cannot be opened or read.
    """
    return sum(1 for _ in _non_blank_lines(path))


def _non_blank_lines(path: Path) -> Iterator[bytes]:
    r"""The raw lines of ``path`` (split on ``\n`` only) that are not blank.

    The one place lines are split and blank ones dropped, for reading and counting alike.
    Blank means JSON whitespace only (space, tab, CR, LF): any other byte makes a line that
    gets an index and a result.
    """
    try:
        with path.open("rb") as handle:  # binary: no universal newlines, no decoding here
            for raw in handle:
                if raw.strip(JSON_WHITESPACE):
                    yield raw
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc


def is_batch_line(line: Mapping[str, Any]) -> bool:
    """Whether a line's object is a Batch API request: it has any of :data:`BATCH_KEYS`."""
    return not line.keys().isdisjoint(BATCH_KEYS)


def first_object(path: Path) -> tuple[int, dict[str, Any]] | None:
    """The index and object of the first line of ``path`` that is a JSON object, if any.

    Raises:
        ConfigurationError: the file cannot be read.
    """
    for line in read_lines(path):
        if _UNDECODABLE.search(line.text):
            continue  # parse_line refuses it, so it cannot give the file's format
        try:
            value = json.loads(line.text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return line.index, value
    return None


def parse_line(text: str) -> RequestLine:
    """Parse an input line: a bare request body, or a Batch API request.

    A bare body's top-level ``metadata`` and ``client_request_id`` are split off (never
    sent in the body); so are a Batch API line's, beside its four fields.

    Raises:
        InvalidLineError: the line is not UTF-8, not valid JSON, not a JSON object, has a
            ``client_request_id`` that cannot be sent, or is a Batch API line that is
            incomplete, has a field of the wrong type or a method other than POST.
    """
    # An ASCII line (most are: JSON escapes what is not) cannot hold a surrogate: no search.
    undecodable = None if text.isascii() else _UNDECODABLE.search(text)
    if undecodable:
        byte = ord(undecodable.group()) - 0xDC00
        raise InvalidLineError(
            "invalid_utf8",
            f"line is not UTF-8 text: byte 0x{byte:02x} at character "
            f"{undecodable.start() + 1} cannot be decoded",
        )
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
    return RequestLine(value, metadata, client_request_id=_client_request_id(value, None))


def _client_request_id(line: dict[str, Any], custom_id: str | None) -> str | None:
    """Pop and check a line's own ``client_request_id``.

    Raises:
        InvalidLineError: it cannot be sent as an ``X-Client-Request-Id``.
    """
    if "client_request_id" not in line:
        return None
    try:
        return check_client_request_id(line.pop("client_request_id"))
    except InvalidRequestError as bad:
        message = f"client_request_id: {bad}"
        raise InvalidLineError("invalid_client_request_id", message, custom_id) from None


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
    unknown = sorted(set(line) - {*BATCH_KEYS, *LINE_KEYS})
    if unknown:
        raise invalid(
            "invalid_batch_line",
            f"a Batch API line has only custom_id, method, url, body, metadata and "
            f"client_request_id, not {', '.join(unknown)} (request fields go inside body)",
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
    client_request_id = _client_request_id(line, readable_id)
    return RequestLine(body, line.get("metadata"), readable_id, url, client_request_id)
