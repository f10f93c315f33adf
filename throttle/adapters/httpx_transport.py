"""``ThrottleHttpxTransport``: throttle under any httpx client.

Example::

    async with httpx.AsyncClient(transport=ThrottleHttpxTransport(t)) as client:
        await client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from throttle.adapters.transport import TransportCore, WatchedStream


class _HttpxStream(WatchedStream, httpx.AsyncByteStream):
    """A watched body stream, typed as httpx expects."""


class ThrottleHttpxTransport(TransportCore, httpx.AsyncBaseTransport):
    """An httpx transport that sends every request through a :class:`throttle.Throttle`.

    See :class:`throttle.adapters.transport.TransportCore` for the arguments.
    """

    library: ClassVar[Any] = httpx
    failures: ClassVar[tuple[type[BaseException], ...]] = (httpx.TransportError,)
    stream_class: ClassVar[type[WatchedStream]] = _HttpxStream
