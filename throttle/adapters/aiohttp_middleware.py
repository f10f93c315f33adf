"""throttle under aiohttp sessions: a client middleware (aiohttp >= 3.12) and a ready session.

Example::

    async with throttled_session(t, headers={"Authorization": f"Bearer {key}"}) as session:
        async with session.post(url, json=body) as response:
            answer = await response.json()

or per request: ``session.post(url, json=body, middlewares=(throttle_middleware(t),))``.
aiohttp offers no public way to add a middleware to a session already built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, payload

from throttle.adapters.exchange import Metering, Received, exchange, meter
from throttle.client import Throttle
from throttle.errors import TransportError, transport_failures
from throttle.native_client import AIOHTTP_FAILURES
from throttle.request_identity import identify
from throttle.streams import StreamWatcher


class WatchedContent:
    """Stands in for a streamed response's ``content``, watching for the final event.

    Offers the reading methods of ``aiohttp.StreamReader`` that callers use: ``read``,
    ``readany``, ``readline``, ``iter_any``, ``iter_chunked``, line iteration and ``at_eof``.
    The first chunk, read before the answer was handed on, is served first. Anything else
    (``exception``, ``total_bytes``, ...) is the underlying reader's.
    """

    def __init__(
        self,
        source: aiohttp.StreamReader,
        first: bytes,
        watcher: StreamWatcher,
        on_finished: Callable[[StreamWatcher], None],
        what: str,
    ) -> None:
        self._source = source
        self._what = what
        self._buffer = bytearray(first)
        self._watcher = watcher
        self._on_finished = on_finished
        self._ended = False
        watcher.feed(first)

    def __repr__(self) -> str:
        return f"WatchedContent(buffered={len(self._buffer)}, {self._watcher!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    async def _fill(self) -> bool:
        """Read more from the connection; return ``False`` at the end of the stream."""
        if self._ended:
            return False
        with transport_failures(AIOHTTP_FAILURES, self._what, mid_stream=True):
            chunk = await self._source.readany()
        if not chunk:
            self._ended = True
            self._watcher.close()
            self._on_finished(self._watcher)
            return False
        self._watcher.feed(chunk)
        self._buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    async def readany(self) -> bytes:
        """Return what is buffered, or the next chunk; ``b""`` at the end."""
        if not self._buffer:
            await self._fill()
        return self._take(len(self._buffer))

    async def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (all that is left when ``n`` < 0)."""
        while (n < 0 or len(self._buffer) < n) and await self._fill():
            pass
        return self._take(len(self._buffer) if n < 0 else n)

    async def readline(self) -> bytes:
        """Return the next line, its newline included; ``b""`` at the end."""
        while b"\n" not in self._buffer and await self._fill():
            pass
        end = self._buffer.find(b"\n")
        return self._take(len(self._buffer) if end < 0 else end + 1)

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Yield chunks as they arrive."""
        while chunk := await self.readany():
            yield chunk

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        """Yield chunks of at most ``n`` bytes."""
        while chunk := await self.read(n):
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while line := await self.readline():
            yield line

    def at_eof(self) -> bool:
        """Return whether everything was read."""
        return self._ended and not self._buffer


async def _body_bytes(request: ClientRequest) -> bytes:
    body = request.body
    if isinstance(body, payload.Payload):
        return await body.as_bytes()
    return bytes(body)


def throttle_middleware(throttle: Throttle, *, priority: int = 0) -> Any:
    """Return an aiohttp client middleware that sends every request through ``throttle``.

    Args:
        throttle: needs no base URL or key: each request carries its own key, and each key
            is its own identity unless the Throttle was given one.
        priority: smaller goes first, for every request through this middleware.

    Returns:
        The middleware, for ``ClientSession(middlewares=...)`` or per request. A metered
        request without an ``X-Client-Request-Id`` gets one, the same on every attempt; one
        that is not printable ASCII of 1 to 512 characters raises ``InvalidRequestError``.
    """

    async def attempt(
        request: ClientRequest, handler: ClientHandlerType, metering: Metering
    ) -> Received[ClientResponse]:
        what = f"{request.method} {request.url}"
        with transport_failures(AIOHTTP_FAILURES, what):
            response = await handler(request)
            try:
                return await read(response, metering, what)
            except BaseException:
                # Failed, or cancelled when the attempt's time was up: free the connection.
                response.close()
                raise

    async def read(
        response: ClientResponse, metering: Metering, what: str
    ) -> Received[ClientResponse]:
        if metering.streaming and response.status < 300:
            first = await response.content.readany()
            if not first:
                raise TransportError(f"{what}: the stream ended before its first byte")
            content = WatchedContent(
                response.content,
                first,
                StreamWatcher(),
                lambda done: throttle.record_usage(
                    metering.key, done.usage, metering.estimate.prompt
                ),
                what,
            )
            response.content = content  # type: ignore[assignment] # reading API stand-in
            return Received(response, response.status, response.headers)
        body = await response.read()
        return Received(response, response.status, response.headers, body)

    async def middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        body = await _body_bytes(request)
        metering = meter(throttle, request.method, str(request.url), request.headers, body)
        if metering is None:
            return await handler(request)
        answer = await exchange(
            throttle,
            metering,
            lambda: attempt(request, handler, metering),
            what=f"{request.method} {request.url}",
            priority=priority,
            client_request_id=identify(request.headers),
        )
        return answer.response

    return middleware


def throttled_session(throttle: Throttle, **session_options: Any) -> aiohttp.ClientSession:
    """Return a new ``aiohttp.ClientSession`` whose every request goes through ``throttle``.

    Args:
        throttle: see :func:`throttle_middleware`.
        **session_options: passed to ``ClientSession``; given ``middlewares`` run after
            throttle's.
    """
    extra = tuple(session_options.pop("middlewares", ()))
    return aiohttp.ClientSession(
        middlewares=(throttle_middleware(throttle), *extra), **session_options
    )
