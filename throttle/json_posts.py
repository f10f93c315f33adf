""":meth:`Throttle.post`'s side of a request: its URL, checks, estimate, id and native client.

It imports no HTTP library: the native aiohttp client is loaded on the first post, so users
of the openai SDK or httpx adapters never load aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from throttle.errors import ConfigurationError, InvalidRequestError
from throttle.estimate import estimate_tokens
from throttle.keys import BucketKey, azure_deployment
from throttle.options import ThrottleOptions
from throttle.request_identity import identify
from throttle.scheduled import ScheduledRequest

if TYPE_CHECKING:
    from throttle.native_client import NativeClient

_MAX_CACHED_URLS = 1024  # paths are few; a caller building one per request stays bounded


class JsonPosts:
    """Turns :meth:`Throttle.post`'s arguments into requests the scheduler can send.

    Args:
        options: the Throttle's options.
        base_url: the API root, or ``None`` (then posting is a configuration error).
        api_key: the key the native client sends.
        key_for: the bucket key of a model's requests.
    """

    def __init__(
        self,
        options: ThrottleOptions,
        base_url: str | None,
        api_key: str | None,
        key_for: Callable[[str], BucketKey],
    ) -> None:
        self._options = options
        self._base_url = base_url
        self._api_key = api_key
        self._key_for = key_for
        self._urls: dict[str, str] = {}  # path -> URL
        self._native: NativeClient | None = None

    def __repr__(self) -> str:
        return f"JsonPosts({self._base_url!r}, {self._native!r})"

    def prepare(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        model: str | None,
        priority: int,
        deadline: float | None,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> ScheduledRequest[Any]:
        """Check, estimate and identify one request (see :meth:`Throttle.post`).

        Raises:
            ConfigurationError: there is no ``base_url``.
            InvalidRequestError: the body cannot be estimated or asks for streaming, or its
                ``X-Client-Request-Id`` breaks the rules.
        """
        url = self._url(path)
        if isinstance(body, Mapping) and body.get("stream"):
            raise InvalidRequestError("post() returns one JSON answer; 'stream' must be false")
        sent_headers = dict(headers or {})
        client_request_id = identify(sent_headers)
        model = model or _model_of(body) or azure_deployment(url)
        estimate = estimate_tokens(
            url, body, model=model, default_output_tokens=self._options.default_output_tokens
        )
        assert model is not None  # noqa: S101 - estimate_tokens raised if there was none
        return ScheduledRequest(
            self._key_for(model),
            estimate,
            self._native_client().prepare(url, body, params, sent_headers),
            priority,
            deadline,
            client_request_id,
        )

    async def close(self) -> None:
        """Close the native client, if one was opened: its requests in flight are cut off."""
        if self._native is not None:
            await self._native.close()

    def _url(self, path: str) -> str:
        """One string per path, shared by its requests (they may wait long)."""
        url = self._urls.get(path)
        if url is None:
            if self._base_url is None:
                raise ConfigurationError("post() needs a base_url; this Throttle has none")
            url = f"{self._base_url}/{path.lstrip('/')}" if path else self._base_url
            if len(self._urls) < _MAX_CACHED_URLS:
                self._urls[path] = url
        return url

    def _native_client(self) -> NativeClient:
        """The aiohttp client, loaded and built on first use."""
        if self._native is None:
            from throttle.native_client import NativeClient  # noqa: PLC0415 - aiohttp on demand

            self._native = NativeClient(self._options, self._base_url, self._api_key)
        return self._native


def _model_of(body: object) -> str | None:
    model = body.get("model") if isinstance(body, Mapping) else None
    return model if isinstance(model, str) and model else None
