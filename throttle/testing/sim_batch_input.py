"""Reading an uploaded batch input file: JSONL lines the real Batch API would accept.

Each line is ``{"custom_id": ..., "method": "POST", "url": "/v1/...", "body": {...}}``; the
custom_ids are unique, the file names one endpoint and one model, and it stays within the
request, embedding-input and size limits. A file breaking a rule is refused at upload with a
400 naming the line, so that a client which builds bad files learns it here, not from a
batch that fails hours later in production.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from throttle.testing.sim_batch_config import BatchSettings
from throttle.testing.sim_routes import resolve_route

# The batch endpoints the simulator answers (the real API also batches moderations, images).
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
_FIELDS = ("custom_id", "method", "url", "body")


class BatchFileError(ValueError):
    """An uploaded batch file the real API would refuse (a 400 ``invalid_request_error``).

    Args:
        message: what is wrong, naming the line.
        code: the error code, e.g. ``"duplicate_custom_id"``.
        param: the field at fault, e.g. ``"custom_id"``, if any.
        line: the 1-based line at fault, if any.
    """

    def __init__(
        self, message: str, code: str, *, param: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.line = message, code, param, line


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of a batch file.

    Attributes:
        custom_id: the caller's name for the request, unique in its file.
        body: the request body, as the online endpoint would receive it.
    """

    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BatchInput:
    """A valid batch input file.

    Attributes:
        url: the endpoint of every line, e.g. ``"/v1/embeddings"``.
        kind: that endpoint's kind in :mod:`throttle.testing.sim_routes`, e.g. ``"embeddings"``.
        model: the model of every line.
        lines: the requests, in file order.
    """

    url: str
    kind: str
    model: str
    lines: tuple[BatchLine, ...]


def embedding_inputs(body: dict[str, Any]) -> int:
    """Return how many inputs an embeddings body holds (a list of texts counts each)."""
    raw = body.get("input")
    if isinstance(raw, list) and raw and not isinstance(raw[0], int):
        return len(raw)
    return 1


def _decode(number: int, text: str) -> dict[str, Any]:
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        message = f"Line {number}: this line is not a valid JSON object."
        raise BatchFileError(message, "invalid_json_line", line=number)
    for name in _FIELDS:
        if name not in decoded:
            raise BatchFileError(
                f"Line {number}: missing required parameter '{name}'.",
                "missing_required_parameter",
                param=name,
                line=number,
            )
    return decoded


def _check_fields(number: int, line: dict[str, Any]) -> None:
    """The four fields have the values the real API insists on."""
    problems = (
        ("custom_id", not isinstance(line["custom_id"], str), "must be a string"),
        ("method", line["method"] != "POST", "must be 'POST'"),
        ("url", line["url"] not in BATCH_ENDPOINTS, f"must be one of {', '.join(BATCH_ENDPOINTS)}"),
        ("body", not isinstance(line["body"], dict), "must be a JSON object"),
    )
    for name, wrong, rule in problems:
        if wrong:
            raise BatchFileError(
                f"Line {number}: '{name}' {rule}.", "invalid_value", param=name, line=number
            )
    if not isinstance(line["body"].get("model"), str):
        raise BatchFileError(
            f"Line {number}: missing required parameter 'body.model'.",
            "missing_required_parameter",
            param="body.model",
            line=number,
        )


def parse_batch_file(data: bytes, settings: BatchSettings) -> BatchInput:
    """Read ``data`` as a batch input file, or say why the real API would refuse it.

    Args:
        data: the uploaded file's bytes.
        settings: the request, embedding-input and size limits.

    Returns:
        The file's requests, endpoint and model.

    Raises:
        BatchFileError: the file breaks a rule; the first broken rule is reported.
    """
    if len(data) > settings.max_file_bytes:
        raise BatchFileError(
            f"The file is {len(data):,} bytes; a batch file holds at most "
            f"{settings.max_file_bytes:,} bytes.",
            "file_too_large",
        )
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise BatchFileError("The file is not UTF-8 text.", "invalid_file_format") from exc
    lines: list[BatchLine] = []
    seen: dict[str, int] = {}
    first: dict[str, Any] = {}
    inputs = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _decode(number, raw)
        _check_fields(number, line)
        first = first or line
        custom_id, body = line["custom_id"], line["body"]
        if custom_id in seen:
            raise BatchFileError(
                f"Line {number}: custom_id {custom_id!r} repeats line {seen[custom_id]}; each "
                "request in a batch needs a unique custom_id.",
                "duplicate_custom_id",
                param="custom_id",
                line=number,
            )
        seen[custom_id] = number
        for name, mine, theirs in (
            ("url", line["url"], first["url"]),
            ("body.model", body["model"], first["body"]["model"]),
        ):
            if mine != theirs:
                raise BatchFileError(
                    f"Line {number}: {name} {mine!r} differs from {theirs!r} on the first line; "
                    "a batch file holds one endpoint and one model.",
                    "mismatched_model" if name == "body.model" else "mismatched_url",
                    param=name,
                    line=number,
                )
        lines.append(BatchLine(custom_id, body))
        if len(lines) > settings.max_requests:
            raise BatchFileError(
                f"The file has more than {settings.max_requests:,} requests, the most a batch "
                "file holds.",
                "too_many_requests",
                line=number,
            )
        inputs += embedding_inputs(body) if line["url"] == "/v1/embeddings" else 0
        if inputs > settings.max_embedding_inputs:
            raise BatchFileError(
                f"The file has more than {settings.max_embedding_inputs:,} embedding inputs, "
                "the most a batch file holds.",
                "too_many_inputs",
                line=number,
            )
    if not lines:
        raise BatchFileError("The file holds no requests.", "empty_file")
    route = resolve_route("POST", first["url"])
    assert route is not None  # noqa: S101 - every batch endpoint is an online route
    return BatchInput(first["url"], route.kind, first["body"]["model"], tuple(lines))
