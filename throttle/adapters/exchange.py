"""What every adapter shares: which requests are metered, and one scheduled exchange.

Library-agnostic: the adapters hand in method, URL, headers and body bytes, and a function
that sends the request once and returns what the library received; the answer is read by
:func:`throttle.answer.read_answer`, like the native client's, and this module decides the
rest. Each adapter gives a metered request its ``X-Client-Request-Id``
(:func:`throttle.request_identity.identify`) on the library's own request object, before the
first attempt, so that every attempt sends it; requests passed through unmetered are left as
they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from throttle.answer import Answer, read_answer
from throttle.client import Throttle
from throttle.errors import RetryExhaustedError, ThrottleError, TransportError, transport_failures
from throttle.estimate import TokenEstimate, estimate_tokens
from throttle.headers import header
from throttle.keys import BucketKey, azure_deployment
from throttle.scheduled import ScheduledRequest
from throttle.streams import StreamWatcher

R = TypeVar("R")
METERED_METHODS = frozenset({"POST", "PUT", "PATCH"})
_MULTIPART_MODEL = re.compile(rb'name="model"\r?\n(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]+)')


@dataclass(frozen=True, slots=True)
class Metering:
    """How one request is charged.

    Attributes:
        key: the buckets it draws from.
        estimate: its estimated tokens.
        streaming: it asked for a streamed answer.
    """

    key: BucketKey
    estimate: TokenEstimate
    streaming: bool


@dataclass(frozen=True, slots=True)
class Received(Generic[R]):
    """What the library received for one attempt, before it is read.

    Attributes:
        response: the library's response object.
        status: HTTP status.
        headers: response headers.
        body: the decoded body bytes; ``None`` for a successful stream, which is handed on
            unread (its first chunk already arrived, so it will not be retried).
    """

    response: R
    status: int
    headers: Mapping[str, str]
    body: bytes | None = field(default=None, repr=False)


def credential_of(headers: Mapping[str, str]) -> str | None:
    """Return the API key a request carries (``Authorization: Bearer`` or ``api-key``)."""
    bearer = header(headers, "authorization") or ""
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip() or None
    return header(headers, "api-key") or None


def meter(
    throttle: Throttle, method: str, url: str, headers: Mapping[str, str], body: bytes
) -> Metering | None:
    """Decide how a request is charged, or ``None`` to pass it through uncounted.

    GET, DELETE and bodies naming no model (files, batches) are not rate-limited per model
    and pass through. JSON bodies are estimated per endpoint; other bodies (multipart uploads)
    with a model field count as one request with ``default_output_tokens`` tokens.

    Raises:
        InvalidRequestError: a JSON body names a model but has a field of the wrong type.
    """
    if method.upper() not in METERED_METHODS:
        return None
    content_type = header(headers, "content-type") or ""
    deployment = azure_deployment(url)
    identity = throttle.identity_for(credential_of(headers))
    if "json" in content_type or (not content_type and body[:1] == b"{"):
        return _meter_json(throttle, url, body, deployment, identity)
    return _meter_upload(throttle, body, deployment, identity)


def _meter_json(
    throttle: Throttle, url: str, body: bytes, deployment: str | None, identity: str
) -> Metering | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None  # the server will say what is wrong with it
    if not isinstance(payload, dict):
        return None
    model = payload.get("model") or deployment
    if not isinstance(model, str):
        return None
    estimate = estimate_tokens(
        url, payload, model=model, default_output_tokens=throttle.options.default_output_tokens
    )
    return Metering(throttle.key_for(model, identity), estimate, bool(payload.get("stream")))


def _meter_upload(
    throttle: Throttle, body: bytes, deployment: str | None, identity: str
) -> Metering | None:
    found = _MULTIPART_MODEL.search(body)
    model = found.group(1).decode("utf-8", "replace") if found else deployment
    if model is None:
        return None
    estimate = TokenEstimate(prompt=throttle.options.default_output_tokens, completion=0)
    return Metering(throttle.key_for(model, identity), estimate, streaming=False)


def _ended_by(error: ThrottleError, answered: ThrottleError | None) -> bool:
    """Whether ``error`` ended the request on the very answer that carried ``answered``.

    True for that answer's own error, or retries running out on it; a deadline, a closed
    client or an open breaker is throttle's decision, not the server's answer.
    """
    if answered is None:
        return False
    if isinstance(error, RetryExhaustedError):
        return error.last_error is answered
    return error is answered


async def exchange(
    throttle: Throttle,
    metering: Metering,
    attempt: Callable[[], Awaitable[Received[R]]],
    *,
    what: str,
    priority: int = 0,
    client_request_id: str | None = None,
) -> Received[R]:
    """Send a request through the scheduler and return the server's final answer.

    Every attempt is limited to the Throttle's ``timeout`` (seconds, on its clock), as the
    native client's is: one that takes longer fails with :class:`TransportError`, which the
    retry policy retries like a dropped connection.

    Args:
        throttle: whose buckets, retries and breaker apply.
        metering: from :func:`meter`.
        attempt: sends the request once and returns what was received (for a stream, once
            its first chunk arrived); raises :class:`TransportError` when nothing usable
            arrived. Cancelled when the attempt's time is up.
        what: names the request in errors (``"POST https://..."``).
        priority: smaller goes first.
        client_request_id: the ``X-Client-Request-Id`` every attempt sends (from
            :func:`throttle.request_identity.identify`), recorded in events and in the
            errors raised.

    Returns:
        The final answer: a success, or the server's error answer once throttle stopped
        retrying (the caller passes it on, marked not to be retried again).

    Raises:
        ThrottleError: throttle ended the request without a server answer to show for it.
    """
    final: list[tuple[Received[R], Answer[Received[R]]]] = []

    async def send() -> Answer[Received[R]]:
        received = await _within_timeout(throttle, attempt, what)
        answer = read_answer(received.status, received.headers, received.body, value=received)
        final[:] = [(received, answer)]
        return answer

    request = ScheduledRequest(
        metering.key, metering.estimate, send, priority, client_request_id=client_request_id
    )
    try:
        return await throttle.submit(request)
    except ThrottleError as error:
        if final and _ended_by(error, final[0][1].error):
            return final[0][0]
        raise


async def _within_timeout(
    throttle: Throttle, attempt: Callable[[], Awaitable[Received[R]]], what: str
) -> Received[R]:
    seconds = throttle.options.timeout
    try:
        async with throttle.options.clock.timeout(seconds) as scope:
            return await attempt()
    except TimeoutError as exc:
        if not scope.expired():  # the caller's deadline, or the library's own timeout
            raise
        raise TransportError(
            f"{what} failed: TimeoutError: no answer within {seconds:g} s"
        ) from exc


async def watch_chunks(
    first: bytes,
    rest: AsyncIterator[bytes],
    watcher: StreamWatcher,
    on_finished: Callable[[StreamWatcher], None],
    *,
    failures: tuple[type[BaseException], ...],
    what: str,
) -> AsyncIterator[bytes]:
    """Pass a stream's chunks through as they arrive, watching for its final event.

    Args:
        first: the chunk that already arrived.
        rest: the chunks still to come.
        watcher: follows the events.
        on_finished: told when the stream ended complete.
        failures: the library's failure types (see :func:`throttle.errors.transport_failures`).
        what: names the request in errors.

    Raises:
        StreamTruncatedError: the stream ended, or broke, before its final event.
    """
    watcher.feed(first)
    yield first
    with transport_failures(failures, what, mid_stream=True):
        async for chunk in rest:
            watcher.feed(chunk)
            yield chunk
    watcher.close()
    on_finished(watcher)
