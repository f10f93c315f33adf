"""``ThrottleHttpx2Transport``: throttle under any httpx2 client, the openai SDK 3.x's included.

Example::

    client = openai.AsyncOpenAI(
        http_client=openai.DefaultAsyncHttpx2Client(transport=ThrottleHttpx2Transport(t))
    )
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx2

from throttle.adapters.transport import TransportCore, WatchedStream


class _Httpx2Stream(WatchedStream, httpx2.AsyncByteStream):
    """A watched body stream, typed as httpx2 expects."""


class ThrottleHttpx2Transport(TransportCore, httpx2.AsyncBaseTransport):
    """An httpx2 transport that sends every request through a :class:`throttle.Throttle`.

    See :class:`throttle.adapters.transport.TransportCore` for the arguments.
    """

    library: ClassVar[Any] = httpx2
    failures: ClassVar[tuple[type[BaseException], ...]] = (httpx2.TransportError,)
    stream_class: ClassVar[type[WatchedStream]] = _Httpx2Stream
