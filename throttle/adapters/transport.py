"""The transport adapter: one implementation for httpx and httpx2, which share one API.

httpx and httpx2 clients send every request through one method,
``handle_async_request(request) -> response``: the seam throttle wraps. This module holds the
whole logic; :mod:`throttle.adapters.httpx_transport` and
:mod:`throttle.adapters.httpx2_transport` only bind it to their library's types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from throttle.adapters.exchange import Metering, Received, exchange, meter, watch_chunks
from throttle.client import Throttle
from throttle.errors import TransportError, transport_failures
from throttle.request_identity import identify
from throttle.streams import StreamWatcher

# Dropped from answers handed on: the body is handed on decoded, with its own length.
_BODY_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class _OpenStream:
    """A successful streamed answer whose first chunk arrived: from here on, no retry."""

    response: Any
    first: bytes
    rest: AsyncIterator[bytes]


class WatchedStream:
    """A response body stream that passes chunks through as they arrive.

    Mixed with the library's ``AsyncByteStream`` by each binding module.
    """

    def __init__(self, chunks: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]) -> None:
        self._chunks = chunks
        self._close = close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        """Release the connection of the underlying answer."""
        await self._close()


class TransportCore:
    """Sends every request of an httpx-style client through a :class:`Throttle`.

    Args:
        throttle: whose buckets, retries and quota breaker apply. It needs no base URL or
            key: each request carries its own, and each key is its own identity unless the
            Throttle was given one.
        inner: the transport that really sends (the library's default HTTP transport).
        priority: smaller goes first, for every request of this client.
    """

    library: ClassVar[Any]  # the httpx or httpx2 module
    stream_class: ClassVar[type[WatchedStream]]
    failures: ClassVar[tuple[type[BaseException], ...]]  # the library's "no usable answer"

    def __init__(self, throttle: Throttle, inner: Any | None = None, *, priority: int = 0) -> None:
        self.throttle = throttle
        self._inner = inner if inner is not None else self.library.AsyncHTTPTransport()
        self._priority = priority

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.throttle!r}, inner={self._inner!r})"

    async def handle_async_request(self, request: Any) -> Any:
        """Send ``request`` through the scheduler and return the server's final answer.

        A metered request without an ``X-Client-Request-Id`` gets one, on ``request``
        itself, so every attempt sends the same one.

        Raises:
            InvalidRequestError: the body cannot be estimated, or the request's own
                ``X-Client-Request-Id`` is not printable ASCII of 1 to 512 characters.
            ThrottleError: throttle refused or gave up without an answer to show.
        """
        body = await request.aread()
        metering = meter(self.throttle, request.method, str(request.url), request.headers, body)
        if metering is None:
            return await self._inner.handle_async_request(request)
        answer = await exchange(
            self.throttle,
            metering,
            lambda: self._attempt(request, metering),
            what=self._what(request),
            priority=self._priority,
            client_request_id=identify(request.headers),
        )
        return self._respond(request, answer, metering)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()

    def _what(self, request: Any) -> str:
        return f"{request.method} {request.url}"

    async def _attempt(self, request: Any, metering: Metering) -> Received[Any]:
        with transport_failures(self.failures, self._what(request)):
            response = await self._inner.handle_async_request(request)
            try:
                return await self._read(request, response, metering)
            except BaseException:
                # Failed, or cancelled when the attempt's time was up: free the connection.
                await response.aclose()
                raise

    async def _read(self, request: Any, response: Any, metering: Metering) -> Received[Any]:
        if metering.streaming and response.status_code < 300:
            chunks = response.aiter_bytes()
            first = await anext(chunks, b"")
            if not first:
                raise TransportError(
                    f"{self._what(request)}: the stream ended before its first byte"
                )
            opened = _OpenStream(response, first, chunks)
            return Received(opened, response.status_code, response.headers)
        content = await response.aread()
        return Received(response, response.status_code, response.headers, content)

    def _respond(self, request: Any, answer: Received[Any], metering: Metering) -> Any:
        opened = answer.response if isinstance(answer.response, _OpenStream) else None
        original = opened.response if opened else answer.response
        headers = [
            (name, value)
            for name, value in original.headers.multi_items()
            if name.lower() not in _BODY_FRAMING
        ]
        if opened is not None:
            watcher = StreamWatcher()
            chunks = watch_chunks(
                opened.first,
                opened.rest,
                watcher,
                lambda done: self.throttle.record_usage(
                    metering.key, done.usage, metering.estimate.prompt
                ),
                failures=self.failures,
                what=self._what(request),
            )
            return self.library.Response(
                answer.status,
                headers=headers,
                request=request,
                stream=self.stream_class(chunks, original.aclose),
                extensions=original.extensions,
            )
        if answer.status >= 400:
            # throttle already retried what retrying can fix: the SDK must not retry again.
            headers.append(("x-should-retry", "false"))
        return self.library.Response(
            answer.status,
            headers=headers,
            content=answer.body,
            request=request,
            extensions=original.extensions,
        )
