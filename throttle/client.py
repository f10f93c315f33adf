"""``Throttle``: the native aiohttp client, and the entry point for any coroutine.

HTTP lives here and only here: building the request, reading the answer, turning aiohttp's
exceptions into :class:`TransportError`. Everything about rate limits is the scheduler's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp

from throttle.backend import LimitBackend, MemoryBackend
from throttle.classify import (
    SUCCESS,
    Classification,
    classify_response,
    decode_body,
    verdict_for,
)
from throttle.clock import Clock, MonotonicClock
from throttle.errors import (
    ConfigurationError,
    InvalidRequestError,
    ThrottleError,
    TransportError,
)
from throttle.estimate import DEFAULT_OUTPUT_TOKENS, TokenEstimate, estimate_tokens
from throttle.events import EventHub, EventListener, usage_event
from throttle.headers import parse_rate_limit_headers
from throttle.keys import BucketKey, GroupMap, azure_deployment, credential_identity
from throttle.limits import AdmissionPolicy, Limits
from throttle.retry import RetryPolicy
from throttle.scheduler import Reply, ScheduledRequest, Scheduler

T = TypeVar("T")


class Throttle:
    """A rate-limit-aware client for an OpenAI-compatible API (an async context manager).

    Args:
        base_url: the API root (``https://api.openai.com/v1``, an Azure
            ``https://NAME.openai.azure.com/openai/deployments/DEPLOYMENT``, the simulator's
            URL). Optional when only :meth:`run` or an adapter is used.
        api_key: the secret key. Never logged; its identity is a hash.
        identity: whose limits these are, when several keys share one project's limits.
            Defaults to a hash of ``api_key``.
        auth: ``"bearer"`` (``Authorization``), ``"api-key"`` (Azure) or ``"auto"``
            (``api-key`` for Azure URLs).
        groups: model name or glob to shared-limit group (``{"gpt-4o*": "4o-pool"}``).
        limits: known limits as ceilings, for every group or per group name.
        retry: how transient failures are retried.
        admission: how cautiously to admit (reserve, probing).
        backend: where bucket state lives (in memory by default).
        default_output_tokens: output reserved when a body sets no ``max_*_tokens``.
        max_in_flight: requests sent and not yet answered, at most.
        timeout: seconds one attempt may take before it counts as a transport failure.
        headers: extra headers sent with every request.
        on_event: a listener for every scheduler event (see :mod:`throttle.events`).
        clock: time source (tests drive it by hand).

    Raises:
        ConfigurationError: an argument is invalid.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        identity: str | None = None,
        auth: str = "auto",
        groups: Mapping[str, str] | None = None,
        limits: Limits | Mapping[str, Limits] | None = None,
        retry: RetryPolicy | None = None,
        admission: AdmissionPolicy | None = None,
        backend: LimitBackend | None = None,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        max_in_flight: int = 256,
        timeout: float = 600.0,
        headers: Mapping[str, str] | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if auth not in ("auto", "bearer", "api-key"):
            raise ConfigurationError(f"auth must be 'auto', 'bearer' or 'api-key', not {auth!r}")
        if max_in_flight < 1 or timeout <= 0 or default_output_tokens < 0:
            raise ConfigurationError(
                "max_in_flight, timeout must be positive; default_output_tokens not negative"
            )
        self.base_url = base_url.rstrip("/") if base_url else None
        self.identity = identity or (credential_identity(api_key) if api_key else "default")
        self._chosen_identity = identity
        self._api_key = api_key
        self._auth = auth
        self._groups = GroupMap(groups)
        self._limits = limits
        self.default_output_tokens = default_output_tokens
        self._timeout = timeout
        self._extra_headers = dict(headers or {})
        self.events = EventHub()
        if on_event is not None:
            self.events.subscribe(on_event)
        self.scheduler = Scheduler(
            backend or MemoryBackend(self._limits_for, admission),
            clock=clock or MonotonicClock(),
            retry=retry or RetryPolicy(),
            events=self.events,
            max_in_flight=max_in_flight,
        )
        self._max_in_flight = max_in_flight
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return (
            f"Throttle(base_url={self.base_url!r}, identity={self.identity!r}, {self.scheduler!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Fail queued requests with :class:`ClosedError`, refuse new ones, close the session.

        Requests already sent finish or fail on their own.
        """
        await self.scheduler.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _limits_for(self, key: BucketKey) -> Limits:
        if isinstance(self._limits, Limits):
            return self._limits
        if self._limits is None:
            return Limits()
        return self._limits.get(key.group, Limits())

    def identity_for(self, credential: str | None) -> str:
        """Return whose limits a request with ``credential`` draws from.

        The identity given to this Throttle wins (one project, many keys); otherwise each key
        is its own identity (a hash, never the key); without a key, this Throttle's.
        """
        if self._chosen_identity is not None or not credential:
            return self.identity
        return credential_identity(credential)

    def key_for(self, model: str, identity: str | None = None) -> BucketKey:
        """Return the bucket key a model's requests draw from."""
        return BucketKey(identity or self.identity, self._groups.group_of(model))

    def reset_quota_breaker(self, identity: str | None = None) -> None:
        """Send again on a credential whose quota ran out, once billing is fixed."""
        self.scheduler.reset_quota_breaker(identity)

    async def post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        model: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one JSON request through the scheduler and return the decoded answer.

        Args:
            path: the endpoint below ``base_url`` (``"chat/completions"``, ``"embeddings"``);
                ``""`` when ``base_url`` is the full endpoint URL.
            body: the JSON request body.
            model: the model, when the body has none (Azure takes it from the URL).
            priority: smaller goes first; equal priorities are first come, first served.
            deadline: seconds after which the request fails with ``DeadlineExceededError``.
            params: query parameters (Azure's ``api-version``).

        Returns:
            The decoded JSON answer.

        Raises:
            InvalidRequestError: the body cannot be estimated or asks for streaming.
            ThrottleError: the subclass naming what ended the request.
        """
        if self.base_url is None:
            raise ConfigurationError("post() needs a base_url; this Throttle has none")
        url = f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url
        if isinstance(body, Mapping) and body.get("stream"):
            raise InvalidRequestError("post() returns one JSON answer; 'stream' must be false")
        model = model or _model_of(body) or azure_deployment(url)
        estimate = estimate_tokens(
            url, body, model=model, default_output_tokens=self.default_output_tokens
        )
        assert model is not None  # noqa: S101 - estimate_tokens raised if there was none
        key = self.key_for(model)
        request: ScheduledRequest[Any] = ScheduledRequest(
            key=key,
            estimate=estimate,
            send=lambda: self._send_json(key, url, body, params),
            priority=priority,
            deadline=deadline,
        )
        return await self.scheduler.submit(request)

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        model: str,
        tokens: int | TokenEstimate,
        priority: int = 0,
        deadline: float | None = None,
        identity: str | None = None,
        headers_of: Callable[[T], Mapping[str, str]] | None = None,
    ) -> T:
        """Run any coroutine function under the same buckets, retries and breaker.

        ``fn`` signals rate limits and server errors by raising throttle's errors
        (:class:`RateLimitError` ...); ``OSError`` and ``TimeoutError`` count as transport
        failures and are retried; any other exception propagates unretried.

        Args:
            fn: called once per attempt.
            model: the model (or group member) whose buckets it draws from.
            tokens: its estimated tokens.
            priority: smaller goes first.
            deadline: seconds after which it fails with ``DeadlineExceededError``.
            identity: the credential identity, if not this Throttle's.
            headers_of: returns the response headers from ``fn``'s result, to learn limits.

        Returns:
            ``fn``'s result.
        """
        estimate = tokens if isinstance(tokens, TokenEstimate) else TokenEstimate(int(tokens), 0)
        if estimate.total < 0:
            raise InvalidRequestError(f"tokens must not be negative: {estimate.total}")

        async def send() -> Reply[T]:
            try:
                value = await fn()
            except TransportError:
                raise
            except ThrottleError as error:
                return Reply(Classification(verdict_for(error), error))
            except (OSError, TimeoutError) as exc:
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            headers = headers_of(value) if headers_of is not None else {}
            return Reply(SUCCESS, parse_rate_limit_headers(headers), value)

        request = ScheduledRequest(
            self.key_for(model, identity), estimate, send, priority, deadline
        )
        return await self.scheduler.submit(request)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = dict(self._extra_headers)
            if self._api_key:
                azure = self.base_url is not None and (
                    ".openai.azure.com" in self.base_url
                    or azure_deployment(self.base_url) is not None
                )
                if self._auth == "api-key" or (self._auth == "auto" and azure):
                    headers["api-key"] = self._api_key
                else:
                    headers["Authorization"] = f"Bearer {self._api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._max_in_flight),
            )
        return self._session

    async def _send_json(
        self, key: BucketKey, url: str, body: Mapping[str, Any], params: Mapping[str, str] | None
    ) -> Reply[Any]:
        try:
            async with self._http().post(url, json=body, params=params) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
        decoded = decode_body(raw)
        if 200 <= status < 300 and not isinstance(decoded, dict):
            raise TransportError(f"POST {url}: status {status} with a body that is not JSON")
        classification = classify_response(status, headers, decoded)
        if classification.error is None and isinstance(decoded, dict):
            usage = usage_event(key, decoded.get("usage"))
            if usage is not None:
                self.events.emit(usage)
        return Reply(
            classification,
            parse_rate_limit_headers(headers),
            decoded,
            status,
            headers.get("x-request-id"),
        )


def _model_of(body: object) -> str | None:
    model = body.get("model") if isinstance(body, Mapping) else None
    return model if isinstance(model, str) and model else None
