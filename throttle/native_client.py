"""The native client: JSON requests over one aiohttp session, for :meth:`Throttle.post`.

The only module of the native path that imports aiohttp, and the one place that names
aiohttp's failures (:data:`AIOHTTP_FAILURES`; the aiohttp middleware uses it too). Everything
about rate limits is the scheduler's; this module sends once and hands the raw answer to
:func:`throttle.answer.read_answer`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

import aiohttp

from throttle.answer import Answer, read_answer
from throttle.errors import ClosedError, transport_error
from throttle.keys import is_azure_url
from throttle.options import ThrottleOptions

AIOHTTP_FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
"""What aiohttp raises when no usable answer arrived (refused, reset, timed out, cut)."""


def auth_headers(api_key: str | None, url: str, auth: str = "auto") -> dict[str, str]:
    """Return the headers that send ``api_key`` to ``url``.

    None without a key; ``api-key`` when ``auth`` says so (``"auto"``: for an Azure URL);
    else a bearer token.
    """
    if not api_key:
        return {}
    if auth == "api-key" or (auth == "auto" and is_azure_url(url)):
        return {"api-key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


class PreparedPost:
    """One JSON request, ready to be sent by a :class:`NativeClient` on each attempt.

    A slotted object rather than a ``functools.partial`` of :meth:`NativeClient.post`: a
    request holds it all the while it waits, and this is a third of a partial's size.
    """

    __slots__ = ("_body", "_client", "_headers", "_params", "_url")

    def __init__(
        self,
        client: NativeClient,
        url: str,
        body: Mapping[str, Any],
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self._client = client
        self._url = url
        self._body = body
        self._params = params
        self._headers = headers

    def __repr__(self) -> str:
        return f"PreparedPost({self._url!r})"

    def __call__(self) -> Coroutine[Any, Any, Answer[Any]]:
        """Send the request once (see :meth:`NativeClient.post`)."""
        return self._client.post(self._url, self._body, self._params, self._headers)


class NativeClient:
    """One aiohttp session that sends JSON requests and reads their answers.

    Args:
        options: ``auth``, ``headers``, ``timeout`` and ``max_in_flight`` (the pool size).
        base_url: the API root, to tell Azure URLs (``api-key`` header) from others.
        api_key: the key, sent with every request.
    """

    def __init__(self, options: ThrottleOptions, base_url: str | None, api_key: str | None):
        self._options = options
        self._base_url = base_url
        self._api_key = api_key
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "open" if self._session is not None and not self._session.closed else "idle"
        return f"NativeClient({self._base_url!r}, {'closed' if self._closed else state})"

    def prepare(
        self,
        url: str,
        body: Mapping[str, Any],
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None = None,
    ) -> PreparedPost:
        """Return the request, to be sent by calling it (once per attempt)."""
        return PreparedPost(self, url, body, params, headers)

    async def post(
        self,
        url: str,
        body: Mapping[str, Any],
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer[Any]:
        """Send one JSON request and read its answer.

        Args:
            url: where to send it.
            body: the JSON body.
            params: query parameters.
            headers: this request's headers, over the session's.

        Raises:
            ClosedError: the client was closed before or while the request was sent.
            TransportError: no answer arrived, or a success that is not a JSON object.
        """
        session = self._http()
        try:
            async with session.post(url, json=body, params=params, headers=headers) as response:
                raw = await response.read()
        except AIOHTTP_FAILURES as failure:
            cut = transport_error(failure, f"POST {url}")
            if self._closed:  # close() cut its connection: not a failure to retry
                raise ClosedError(
                    "the Throttle was closed while this request was in flight; the server "
                    "may have received it"
                ) from cut
            raise cut from failure
        return read_answer(response.status, response.headers, raw, require_json=True)

    async def close(self) -> None:
        """Close the session; requests in flight fail, later ones raise :class:`ClosedError`."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClosedError("this Throttle is closed; no request is sent")
        if self._session is None or self._session.closed:
            options = self._options
            self._session = aiohttp.ClientSession(
                headers={**options.headers, **self._auth_headers()},
                timeout=aiohttp.ClientTimeout(total=options.timeout),
                connector=aiohttp.TCPConnector(limit=options.max_in_flight),
            )
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        return auth_headers(self._api_key, self._base_url or "", self._options.auth)
