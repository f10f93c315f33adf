"""The one answer reader: what an attempt's status, headers and body mean to the scheduler.

The native client and every adapter hand the server's raw answer to :func:`read_answer`;
:meth:`throttle.Throttle.run` hands the outcome of the user's function to
:func:`answer_of_call` or :func:`answer_of_error`. Nothing else builds an :class:`Answer`, so
classification, the rate-limit snapshot, the request id and the usage are read in one way
whatever the HTTP library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from throttle.classify import SUCCESS, Classification, classify_response, decode_body, verdict_for
from throttle.errors import ThrottleError, TransportError
from throttle.headers import RateLimitSnapshot, parse_rate_limit_headers, request_id_of

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the server says an answer used (a body's or a stream's final ``usage``).

    Attributes:
        prompt_tokens: input tokens counted.
        completion_tokens: output tokens counted.
    """

    prompt_tokens: int
    completion_tokens: int


def read_usage(usage: object) -> Usage | None:
    """Read a chat, completions or Responses API ``usage`` object.

    Returns:
        The counts, or ``None`` when ``usage`` does not hold them.
    """
    if not isinstance(usage, Mapping):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    return None


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """One attempt's answer, as the scheduler sees it.

    Attributes:
        classification: what the answer means (``error`` is ``None`` on success).
        value: what the request returns to its caller when this answer ends it.
        snapshot: the rate-limit headers, if any could be read.
        status: HTTP status, when there was one.
        request_id: the server's ``x-request-id``.
        usage: the token counts the body reported.
    """

    classification: Classification
    value: T | None = None
    snapshot: RateLimitSnapshot | None = None
    status: int | None = None
    request_id: str | None = None
    usage: Usage | None = None

    @property
    def error(self) -> ThrottleError | None:
        """The error this answer means, ``None`` for a success."""
        return self.classification.error


@overload
def read_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, require_json: bool = ...
) -> Answer[Any]: ...
@overload
def read_answer(
    status: int, headers: Mapping[str, str], body: bytes | None, *, value: T
) -> Answer[T]: ...
def read_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    value: Any = None,
    require_json: bool = False,
) -> Answer[Any]:
    """Read one HTTP answer.

    Args:
        status: HTTP status code.
        headers: response headers (any case).
        body: the body bytes; ``None`` for a successful stream handed on unread.
        value: what the caller gets on success; by default the decoded body.
        require_json: a successful answer must be a JSON object (the native client's rule).

    Returns:
        The answer.

    Raises:
        TransportError: ``require_json`` and a success whose body is not a JSON object.
    """
    decoded = None if body is None else decode_body(body)
    classification = classify_response(status, headers, decoded)
    success = classification.error is None
    if require_json and success and not isinstance(decoded, dict):
        raise TransportError(f"status {status} with a body that is not a JSON object")
    usage = read_usage(decoded.get("usage")) if success and isinstance(decoded, dict) else None
    return Answer(
        classification,
        decoded if value is None else value,
        parse_rate_limit_headers(headers),
        status,
        request_id_of(headers),
        usage,
    )


def answer_of_call(value: T, headers: Mapping[str, str]) -> Answer[T]:
    """The answer of a function run under the scheduler that returned ``value``.

    Args:
        value: its result.
        headers: the response headers it exposed, to learn limits from (may be empty).
    """
    return Answer(SUCCESS, value, parse_rate_limit_headers(headers))


def answer_of_error(error: ThrottleError) -> Answer[Any]:
    """The answer of a function run under the scheduler that raised a server's ``error``."""
    return Answer(Classification(verdict_for(error), error))
