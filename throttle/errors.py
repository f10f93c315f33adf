"""Every error throttle raises, under one base class.

The hierarchy::

    ThrottleError
    ├── ConfigurationError          bad arguments to a throttle object (also a ValueError)
    ├── InvalidRequestError         a request body throttle cannot read (also a ValueError)
    ├── RequestTooLargeError        larger than the whole bucket: waiting can never help
    ├── APIStatusError              the server answered with an error status
    │   ├── RateLimitError          429 rate_limit_exceeded: slow down, then retry
    │   ├── QuotaExhaustedError     429 insufficient_quota and other billing codes: stop
    │   └── ServerError             5xx, 408, 409, 529: transient, retried with backoff
    ├── TransportError              no usable answer: connection reset, timeout, bad body
    │   └── StreamTruncatedError    a stream that ended before its final event
    ├── RetryExhaustedError         retryable failures until the attempt budget ran out
    ├── DeadlineExceededError       the caller's deadline passed before an answer
    ├── ClosedError                 the Throttle was closed before the request was sent
    ├── QueueFullError              max_queued requests held, and the caller would not wait
    ├── BackendUnavailableError     shared limit state unreachable, and the backend fails closed
    ├── MisconfiguredError          nothing succeeded and the URL cannot work (404, no server)
    ├── JobAbortedError             a job cannot go on (its key or URL was rejected)
    └── BatchLineError              the Batch API gave a line no answer (expired, failed batch)

Server-originated errors carry an :class:`ErrorDetails` (status, code, type, message,
request id); every error that ends a request carries the number of attempts it took.

An HTTP library's own exceptions become throttle's at the boundary, once, through
:func:`transport_failures`: each library names its failure types in one place (the native
client for aiohttp, the transport adapter for httpx and httpx2).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What the server said about a failed request.

    Attributes:
        status: HTTP status code.
        code: ``error.code`` from the body (``"rate_limit_exceeded"``, ``"429"`` on Azure, ...).
        type: ``error.type`` from the body (``"tokens"``, ``"insufficient_quota"``, ...).
        message: ``error.message``, or the raw body when it was not the usual JSON shape.
        request_id: the ``x-request-id`` response header, for support tickets.
    """

    status: int
    code: str | None = None
    type: str | None = None
    message: str = ""
    request_id: str | None = None

    def describe(self) -> str:
        """Return a one-line human description naming status, code and request id."""
        label = " ".join(part for part in (str(self.status), self.code or self.type or "") if part)
        text = f"{label}: {self.message}" if self.message else label
        return f"{text} (request id {self.request_id})" if self.request_id else text


class ThrottleError(Exception):
    """Base class of every error raised by throttle.

    Attributes:
        attempts: how many times the request was sent before this error ended it (0 if never).
        retryable: whether another attempt can help (the server's ``x-should-retry`` wins).
        client_request_id: the ``X-Client-Request-Id`` of the request it ended (every
            attempt sent it), to find the request in the provider's logs; ``None`` when the
            request had none (:meth:`throttle.Throttle.run`) or never got that far.
    """

    attempts: int = 0
    retryable: bool = False
    client_request_id: str | None = None


class ConfigurationError(ThrottleError, ValueError):
    """An argument given to a throttle object is invalid."""


class InvalidRequestError(ThrottleError, ValueError):
    """A request body cannot be read (missing model, content of an unexpected type, ...)."""


class RequestTooLargeError(ThrottleError):
    """A single request needs more than the whole bucket holds, so it can never be admitted.

    Attributes:
        requested: tokens the request needs (the estimate, or the server's count).
        limit: the bucket's capacity in tokens per window.
        details: the server's answer when the server refused it, else ``None``.
    """

    def __init__(
        self, message: str, *, requested: float, limit: float, details: ErrorDetails | None = None
    ) -> None:
        super().__init__(message)
        self.requested = requested
        self.limit = limit
        self.details = details


class APIStatusError(ThrottleError):
    """The server answered with an error status.

    Attributes:
        details: status, code, type, message and request id of the answer.
        retry_after: seconds the server asked the client to wait, if it said.
    """

    def __init__(self, details: ErrorDetails, *, retry_after: float | None = None) -> None:
        super().__init__(details.describe())
        self.details = details
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        """HTTP status code."""
        return self.details.status

    @property
    def code(self) -> str | None:
        """``error.code`` from the body."""
        return self.details.code

    @property
    def type(self) -> str | None:
        """``error.type`` from the body."""
        return self.details.type

    @property
    def request_id(self) -> str | None:
        """The ``x-request-id`` header of the answer."""
        return self.details.request_id

    @property
    def server_message(self) -> str:
        """The server's own words."""
        return self.details.message


class RateLimitError(APIStatusError):
    """429 rate_limit_exceeded: the bucket is empty; wait as the server says and retry.

    Never counted against the attempt budget: a rate limit says "wait", not "give up"; only
    the request's deadline (or a server delay past ``max_server_wait``) ends it.

    Attributes:
        limit_type: which limit was hit: ``"requests"``, ``"tokens"``, ``"requests_per_day"``,
            ``"tokens_per_day"`` or ``None`` when the server did not say.
        slow_down: the server said the traffic grew too fast (code ``slow_down``, or the older
            503 "Slow Down"): the key's pace is halved and ramps back up slowly.
    """

    def __init__(
        self,
        details: ErrorDetails,
        *,
        retry_after: float | None = None,
        limit_type: str | None = None,
        slow_down: bool = False,
    ) -> None:
        super().__init__(details, retry_after=retry_after)
        self.limit_type = limit_type
        self.slow_down = slow_down or details.code == "slow_down"
        self.retryable = True


class QuotaExhaustedError(APIStatusError):
    """429 insufficient_quota (or another billing code): retrying can never help.

    The credential's breaker opens: queued requests on it fail with this error at once and no
    further request is sent on it until :meth:`throttle.Throttle.reset_quota_breaker`.
    """


class ServerError(APIStatusError):
    """A transient server-side failure (5xx, 408, 409, 529); retried with jittered backoff."""

    retryable = True


class CapacityUnavailableError(ServerError):
    """429 "Resource Unavailable" of flex processing: the tier has no capacity right now.

    Not billed and not a rate limit (no key slows down): retried later with backoff, like a
    server error. Sending without ``service_tier: "flex"`` avoids it at the standard price.
    """


class TransportError(ThrottleError):
    """No usable answer arrived: connection refused or reset, timeout, unreadable body."""

    retryable = True


class StreamTruncatedError(TransportError):
    """A streamed answer ended before its final event (``[DONE]``, ``response.completed``).

    Raised to the reader of the stream, after the chunks that did arrive. It is never retried:
    part of the answer already reached the caller.
    """

    retryable = False


class RetryExhaustedError(ThrottleError):
    """Every allowed attempt failed with a retryable error.

    Attributes:
        last_error: the error of the final attempt.
    """

    def __init__(self, last_error: ThrottleError, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts; last error: {last_error}")
        self.last_error = last_error
        self.attempts = attempts


class DeadlineExceededError(ThrottleError):
    """The request's deadline passed before it got an answer.

    Attributes:
        deadline: the deadline in seconds, as given by the caller.
        last_error: the error of the last attempt, if any attempt failed before the deadline.
    """

    def __init__(self, deadline: float, attempts: int, last_error: ThrottleError | None) -> None:
        cause = f"; last error: {last_error}" if last_error else ""
        super().__init__(f"deadline of {deadline:g}s passed after {attempts} attempts{cause}")
        self.deadline = deadline
        self.attempts = attempts
        self.last_error = last_error


class ClosedError(ThrottleError):
    """The Throttle was closed: queued requests fail with this, and new ones are refused."""


class QueueFullError(ThrottleError):
    """``max_queued`` requests are already held, and the caller asked not to wait for room."""


class BackendUnavailableError(ThrottleError):
    """The shared limit state (Redis) stayed unreachable, and the backend fails closed.

    The request was not sent: sending without the shared state could exceed the limits
    every worker shares. Raised only after the backend waited for the storage to come back.
    """


class MisconfiguredError(ThrottleError):
    """The set-up cannot work: no request has succeeded, and one showed none can (a wrong URL).

    A 404 or 405 that is not ``model_not_found`` (no such endpoint), or an attempt that got no
    answer at all (connection refused, unknown host), before any request of the Throttle
    succeeded: that request and every request queued or made later fail with this error, at
    once, instead of each failing the same way after its own retries.

    Attributes:
        cause: the error that showed it.
    """

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


class JobAbortedError(ThrottleError):
    """A job cannot go on: every other line would fail the same way (a rejected key or URL).

    Raised by an executor of ``throttle run``; the runner then sends nothing more and leaves
    the lines not yet answered without a result, so a rerun after the fix does them.

    Attributes:
        cause: the error that showed it.
    """

    def __init__(self, message: str, cause: ThrottleError) -> None:
        super().__init__(message)
        self.cause = cause


class BatchLineError(ThrottleError):
    """The Batch API gave a line no answer it could end with, in every batch it was allowed.

    Its batches expired before reaching it (``batch_expired``), were cancelled, failed
    validation, or the line can never be batched (``line_too_large``).

    Attributes:
        kind: the cause's code, recorded as the result's error ``code``.
        batch_id: the last batch it was in, if any.
        attempts: the batches it was in.
    """

    def __init__(
        self, message: str, kind: str, *, batch_id: str | None = None, attempts: int = 0
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.batch_id = batch_id
        self.attempts = attempts


@contextmanager
def transport_failures(
    failures: tuple[type[BaseException], ...], what: str, *, mid_stream: bool = False
) -> Iterator[None]:
    """Raise throttle's error for an HTTP library's failure inside the block.

    Args:
        failures: the library's exception types that mean "no usable answer".
        what: names the request in the message (``"POST https://..."``).
        mid_stream: part of a streamed answer already reached the caller.

    Raises:
        TransportError: one of ``failures`` before the answer was handed on.
        StreamTruncatedError: one of ``failures`` while a stream was being read.
    """
    try:
        yield
    except failures as exc:
        raise transport_error(exc, what, mid_stream=mid_stream) from exc


def transport_error(
    failure: BaseException, what: str, *, mid_stream: bool = False
) -> TransportError:
    """Return the error an HTTP library's ``failure`` means (see :func:`transport_failures`)."""
    detail = f"{type(failure).__name__}: {failure}"
    if mid_stream:
        return StreamTruncatedError(f"{what}: the stream broke: {detail}")
    return TransportError(f"{what} failed: {detail}")
