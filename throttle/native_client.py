"""The native client: JSON requests over one aiohttp session, for :meth:`Throttle.post`.

The only module of the native path that imports aiohttp, and the one place that names
aiohttp's failures (:data:`AIOHTTP_FAILURES`; the aiohttp middleware uses it too). Everything
about rate limits is the scheduler's; this module sends once and hands the raw answer to
:func:`throttle.answer.read_answer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from throttle.answer import Answer, read_answer
from throttle.errors import transport_failures
from throttle.keys import azure_deployment
from throttle.options import ThrottleOptions

AIOHTTP_FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
"""What aiohttp raises when no usable answer arrived (refused, reset, timed out, cut)."""


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

    def __repr__(self) -> str:
        state = "open" if self._session is not None and not self._session.closed else "idle"
        return f"NativeClient({self._base_url!r}, {state})"

    async def post(
        self, url: str, body: Mapping[str, Any], params: Mapping[str, str] | None
    ) -> Answer[Any]:
        """Send one JSON request and read its answer.

        Raises:
            TransportError: no answer arrived, or a success that is not a JSON object.
        """
        with transport_failures(AIOHTTP_FAILURES, f"POST {url}"):
            async with self._http().post(url, json=body, params=params) as response:
                raw = await response.read()
        return read_answer(response.status, response.headers, raw, require_json=True)

    async def close(self) -> None:
        """Close the session (a later request opens a new one)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            options = self._options
            self._session = aiohttp.ClientSession(
                headers={**options.headers, **self._auth_headers()},
                timeout=aiohttp.ClientTimeout(total=options.timeout),
                connector=aiohttp.TCPConnector(limit=options.max_in_flight),
            )
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        if not self._api_key:
            return {}
        url = self._base_url or ""
        azure = ".openai.azure.com" in url or azure_deployment(url) is not None
        auth = self._options.auth
        if auth == "api-key" or (auth == "auto" and azure):
            return {"api-key": self._api_key}
        return {"Authorization": f"Bearer {self._api_key}"}
