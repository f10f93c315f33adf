"""What a job's line becomes: checked against its file, then a result record.

A line must match the file it is in before it is sent: the format of the file's first JSON
object (bare bodies, or Batch API lines) and a ``custom_id`` no other line holds. Its result
record then starts with its ``index`` (see :mod:`throttle.jobfile`), carries a ``custom_id``
in a Batch API file, and ends with exactly one of ``response`` and ``error``.
"""

from __future__ import annotations

from typing import Any

from throttle.errors import APIStatusError, RetryExhaustedError
from throttle.executor import LineResult
from throttle.job_input import RAW_LINE_LIMIT, InputLine, InvalidLineError, RequestLine, parse_line

_FORMATS = ("a bare request body", "a Batch API line (custom_id, method, url, body)")


def error_record(error: BaseException) -> dict[str, Any]:
    """The ``error`` object of a failed line: type, status, code, message, attempts."""
    cause = error.last_error if isinstance(error, RetryExhaustedError) else error
    details = cause.details if isinstance(cause, APIStatusError) else None
    return {
        "type": type(error).__name__,
        "status": details.status if details else None,
        "code": details.code if details else getattr(error, "kind", None),
        "message": str(error),
        "attempts": getattr(error, "attempts", 0),
    }


def completed(record: dict[str, Any], result: LineResult) -> str | None:
    """End a sent line's record with its result; return its error's type, ``None`` on success."""
    record.update(result.extra)
    if result.error is None:
        record["response"] = result.response
        return None
    return failed(record, result.error)


def failed(record: dict[str, Any], error: BaseException) -> str:
    """End a sent line's record with ``error``; return the error's type."""
    record["error"] = error_record(error)
    return type(error).__name__


def unwritable_request(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its request (nested too deep for JSON) kept as the line's raw text."""
    return {**record, "request": None, "line": str(record.get("request"))[:RAW_LINE_LIMIT]}


class LineRecords:
    """Checks each line against its file and starts its result record.

    Args:
        first_index: the index of the file's first JSON object (named in a format error).
        batch_file: whether that object is a Batch API line: then every line must be one,
            and every result carries a ``custom_id``.
        custom_ids: the ``custom_id`` of each line done before -> its index.
    """

    def __init__(self, first_index: int, *, batch_file: bool, custom_ids: dict[str, int]):
        self._first = first_index
        self.batch_file = batch_file
        self._custom_ids = custom_ids

    def __repr__(self) -> str:
        kind = "Batch API" if self.batch_file else "bare bodies"
        return f"LineRecords({kind}, custom_ids={len(self._custom_ids)})"

    def request(self, line: InputLine) -> RequestLine:
        """Parse a line and check it against the file: its format, its ``custom_id``.

        Called in index order (so the first of two lines with one ``custom_id`` keeps it).

        Raises:
            InvalidLineError: the line cannot be sent.
        """
        request = parse_line(line.text)
        batch_file = self.batch_file
        if (request.url is not None) != batch_file:
            raise InvalidLineError(
                "mixed_line_formats",
                f"line {line.index} is {_FORMATS[not batch_file]} but the file's first "
                f"request, line {self._first}, is {_FORMATS[batch_file]}: --url is "
                f"{'a base URL' if batch_file else 'a full endpoint URL'} for this file, so "
                "every line must have the first one's format (split the file, or rewrite it)",
                request.custom_id,
            )
        if request.custom_id is not None:
            held = self._custom_ids.setdefault(request.custom_id, line.index)
            if held != line.index:
                raise InvalidLineError(
                    "duplicate_custom_id",
                    f"line {line.index} repeats the custom_id {request.custom_id!r} of line "
                    f"{held}; each line needs its own (results are joined on it)",
                    request.custom_id,
                )
        return request

    def invalid(self, line: InputLine, error: InvalidLineError) -> dict[str, Any]:
        """The whole result of a line that was never sent: its raw text and its error."""
        record: dict[str, Any] = {"index": line.index}
        if self.batch_file:
            record["custom_id"] = error.custom_id
        record["client_request_id"] = None  # never sent
        record["metadata"] = None
        record["request"] = None
        record["line"] = line.text[:RAW_LINE_LIMIT]
        record["error"] = error_record(error)
        return record

    def sent(
        self, index: int, request: RequestLine, client_request_id: str | None
    ) -> dict[str, Any]:
        """The start of a sent line's result; its ``response`` or ``error`` comes last."""
        record: dict[str, Any] = {"index": index}
        if self.batch_file:
            record["custom_id"] = request.custom_id
        record["client_request_id"] = client_request_id
        record["metadata"] = request.metadata
        record["request"] = request.body
        return record
