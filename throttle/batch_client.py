"""The Files and Batch API over HTTP: upload, create, retrieve, cancel, list, download.

A thin client on one aiohttp session, sending as the native client does (a bearer token, or
``api-key`` for Azure URLs). Each call retries what can pass (5xx, 408/409, 429 and no answer
at all) with the jittered exponential backoff of a :class:`throttle.RetryPolicy` (tenacity's
strategies), waiting as long as a ``retry-after`` says; what cannot pass raises throttle's own
error for it, mapped once here: :class:`APIStatusError` (and its subclasses) for an error
answer, :class:`RetryExhaustedError` when the attempts ran out, :class:`TransportError` for no
usable answer.

A call that creates something (an upload, a batch) is never repeated blindly: without an
answer, or with a 5xx or 408 (a gateway may answer so after the server acted), whether it
happened is unknown, so the error is raised at once for the caller to look the object up
before creating it again (:mod:`throttle.batch_steps`). A file's bytes (an upload, a download)
may take longer than ``timeout`` on a slow link: there ``timeout`` bounds each wait for the
peer, not the whole transfer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from throttle.answer import Answer, read_answer
from throttle.errors import (
    APIStatusError,
    RateLimitError,
    RetryExhaustedError,
    ThrottleError,
    TransportError,
    transport_error,
)
from throttle.native_client import AIOHTTP_FAILURES, auth_headers
from throttle.retry import Finish, Retry, RetryPolicy
from throttle.setup_check import setup_problem

DEFAULT_RETRY = RetryPolicy(max_attempts=8, initial_backoff=1.0, max_backoff=60.0)
MAX_RATE_LIMITED = 30  # 429 answers one call waits out before it gives up
# The slowest upload waited for, in bytes per second: aiohttp's read timeout starts only once
# the body is sent, so a peer that stops reading it is bounded by the body's size at this rate.
UPLOAD_FLOOR_RATE = 50_000
_CHUNK = 1 << 16


def api_root_of(base_url: str) -> str:
    """Return the API root below which ``/files`` and ``/batches`` live (ends in ``/v1``)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class BatchClient:
    """Calls the Files and Batch APIs below ``api_root``.

    Args:
        api_root: the API root, e.g. ``https://api.openai.com/v1``.
        api_key: the key (``api-key`` header for Azure URLs, else a bearer token).
        retry: attempts and backoff of each call.
        timeout: seconds one attempt may take; for a file's content (an upload, a download),
            seconds without progress (a 200 MB file takes a while on a slow link).
        sleep: how the client waits between attempts (a test can hand in a fake).
    """

    def __init__(
        self,
        api_root: str,
        api_key: str | None,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 600.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api_root = api_root.rstrip("/")
        self._api_key = api_key
        self._retry = retry
        self._timeout = timeout
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0  # attempts sent, for reports
        self.proven = False  # a call succeeded: the URL and key work

    def __repr__(self) -> str:
        return f"BatchClient({self.api_root!r}, calls={self.calls})"

    async def upload(self, name: str, content: bytes) -> dict[str, Any]:
        """Upload a batch input file (``purpose=batch``); return the file object.

        Raises:
            TransportError: no answer came; the file may or may not be stored (look it up
                by name before uploading it again).
            ServerError: a 5xx or 408 came; the file may or may not be stored, likewise.
        """

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field("file", content, filename=name, content_type="application/jsonl")
            return data

        timeout = self._streaming(total=self._timeout + len(content) / UPLOAD_FLOOR_RATE)
        return await self._call("POST", "/files", form=form, once=True, timeout=timeout)

    async def create_batch(
        self, file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        """Create a batch of the file's requests (24 h window); return the batch object.

        Raises:
            TransportError: no answer came; the batch may or may not exist (look it up with
                :meth:`find_batch` before creating it again).
            ServerError: a 5xx or 408 came; the batch may or may not exist, likewise.
        """
        payload = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": dict(metadata),
        }
        return await self._call("POST", "/batches", body=payload, once=True)

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """Return the batch object as it stands."""
        return await self._call("GET", f"/batches/{batch_id}")

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Ask for the batch to be cancelled; return the batch object (``cancelling``).

        Raises:
            APIStatusError: 409 at once (not retried) when the batch already stopped.
        """
        return await self._call("POST", f"/batches/{batch_id}/cancel", final={409})

    async def listing(
        self, path: str, limit: int, **params: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield every object of a cursor-paged list (``/files``, ``/batches``), newest first."""
        after: str | None = None
        while True:
            query = {**params, "limit": str(limit)} | ({"after": after} if after else {})
            page = await self._call("GET", path, params=query)
            items = [item for item in page.get("data") or [] if isinstance(item, dict)]
            for item in items:
                yield item
            if not page.get("has_more") or not items:
                return
            after = str(items[-1]["id"])

    async def file_records(self, file_id: str) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the JSON records of a file's content, one per line, as they arrive.

        A download cut short starts again, skipping the records already yielded (a file's
        content never changes). ``timeout`` bounds each wait for the next bytes, not the
        whole download, which may take longer on a slow link.

        Raises:
            APIStatusError: the file cannot be read (404: deleted, or never existed).
            RetryExhaustedError: every attempt failed transiently.
        """
        url = f"{self.api_root}/files/{file_id}/content"
        yielded = attempt = 0
        while True:
            attempt += 1
            self.calls += 1
            seen = 0
            try:
                async with self._http().get(url, timeout=self._streaming()) as response:
                    if response.status != 200:
                        raw = await response.read()
                        error: ThrottleError | None = read_answer(
                            response.status, response.headers, raw
                        ).error
                    else:
                        error = None
                        async for line in _lines(response.content):
                            seen += 1
                            if seen > yielded:
                                yielded = seen
                                record = json.loads(line)
                                if isinstance(record, dict):
                                    yield record
                        return
            except AIOHTTP_FAILURES as failure:
                error = _failed(failure, f"GET {url}")
            except ValueError as failure:  # a line that is not JSON: a cut or garbled body
                error = TransportError(f"GET {url}: unreadable line {seen}: {failure}")
            assert error is not None  # noqa: S101 - every path that gets here set one
            await self._wait_or_raise(error, attempt, 0)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        final: Collection[int] = (),
        once: bool = False,
        timeout: aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109 - aiohttp's, per request
    ) -> dict[str, Any]:
        """Send a request until it succeeds, or raise why it did not.

        The body is JSON (``body``) or multipart (``form``, built per attempt). ``final``
        statuses are not retried. With ``once`` the request creates something, and a failure
        after which whether it did is unknown (no answer, a 5xx, a 408) is raised, for a
        look-up first. ``timeout`` replaces the session's for this call.
        """
        url = f"{self.api_root}{path}"
        # aiohttp reads timeout=None as "no timeout": the session's applies unless one is given
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        attempt = limited = 0
        while True:
            self.calls += 1
            try:
                async with self._http().request(
                    method, url, json=body, params=params, data=form() if form else None, **options
                ) as response:
                    raw = await response.read()
                outcome: Answer[Any] | ThrottleError = read_answer(
                    response.status, response.headers, raw, require_json=True
                )
            except AIOHTTP_FAILURES as failure:
                outcome = _failed(failure, f"{method} {url}")
            except TransportError as unreadable:
                outcome = unreadable
            error = outcome if isinstance(outcome, ThrottleError) else outcome.error
            if error is None and not isinstance(outcome, ThrottleError):
                self.proven = True
                return dict(outcome.value or {})
            assert error is not None  # noqa: S101 - an answer without an error returned above
            is_final = isinstance(error, APIStatusError) and error.status in final
            if is_final or (once and _outcome_unknown(error)):
                error.attempts = attempt + limited + 1
                raise error
            if isinstance(error, RateLimitError):
                limited += 1
            else:
                attempt += 1
            await self._wait_or_raise(error, attempt, limited)

    async def _wait_or_raise(self, error: ThrottleError, attempt: int, limited: int) -> None:
        """Wait before the next attempt, or raise what ends the call.

        Until a call has succeeded, an error that shows a wrong set-up (no server at the URL,
        no such endpoint) ends the call at once: retrying would only delay saying so.
        """
        policy = self._retry
        if not self.proven and setup_problem(error) is not None:
            error.attempts = attempt + limited
            raise error
        if isinstance(error, RateLimitError) and error.retryable:
            pause = policy.rate_limit_pause(error, limited)
            if pause is None or limited > MAX_RATE_LIMITED:
                error.attempts = attempt + limited
                raise error
            await self._sleep(pause)
            return
        decision: Retry | Finish[Any] = policy.decide(error, max(attempt, 1))
        if isinstance(decision, Finish):
            failure = decision.error or error
            if not isinstance(failure, RetryExhaustedError):
                failure.attempts = attempt + limited
            raise failure
        await self._sleep(decision.after)

    def _streaming(self, total: float | None = None) -> aiohttp.ClientTimeout:
        """The timeout of a file's content: ``timeout`` per wait for the peer, ``total`` in all."""
        return aiohttp.ClientTimeout(
            total=total, sock_connect=self._timeout, sock_read=self._timeout
        )

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=auth_headers(self._api_key, self.api_root),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _outcome_unknown(error: ThrottleError) -> bool:
    """Whether a request that creates something may have done so although it ``error``-ed.

    No answer (short of a set-up that cannot work: nothing was reached), or a 5xx or 408: a
    gateway or a timeout may answer so after the server acted.
    """
    if isinstance(error, TransportError):
        return setup_problem(error) is None
    return isinstance(error, APIStatusError) and (error.status >= 500 or error.status == 408)


def _failed(failure: BaseException, what: str) -> TransportError:
    """Return throttle's error for aiohttp's ``failure``, caused by it (its kind shows)."""
    error = transport_error(failure, what)
    error.__cause__ = failure
    return error


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Yield the non-blank lines of a body, whatever their length."""
    parts: list[bytes] = []  # the line read so far, in pieces: a long line costs no copies
    async for chunk in stream.iter_chunked(_CHUNK):
        if b"\n" not in chunk:
            parts.append(chunk)
            continue
        head, *lines = chunk.split(b"\n")
        lines.insert(0, b"".join([*parts, head]))
        parts = [lines.pop()]
        for line in lines:
            if line.strip():
                yield line
    rest = b"".join(parts)
    if rest.strip():
        yield rest
