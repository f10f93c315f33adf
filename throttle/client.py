"""``Throttle``: the one object users hold, over the scheduler.

It turns a request into a :class:`ScheduledRequest` (estimate, bucket key) and hands it to the
scheduler; :meth:`Throttle.post`'s requests are prepared by ``json_posts``, the adapters'
come through :meth:`Throttle.submit`. It imports no HTTP library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from throttle.admission import KeyLoad
from throttle.answer import Answer, answer_of_call, answer_of_error
from throttle.client_defaults import api_key_for, backend_for
from throttle.errors import (
    ConfigurationError,
    InvalidRequestError,
    QueueFullError,
    QuotaExhaustedError,
    ThrottleError,
    TransportError,
)
from throttle.estimate import TokenEstimate
from throttle.events import EventHub, EventListener
from throttle.json_posts import JsonPosts
from throttle.keys import BucketKey, credential_identity
from throttle.options import ThrottleOptions, ThrottleSettings
from throttle.request_identity import refuse_shared_id
from throttle.scheduled import ScheduledRequest
from throttle.scheduler import Scheduler

T = TypeVar("T")


_MAX_CACHED_KEYS = 65_536  # (identity, model) pairs: few in practice, bounded all the same


class Throttle:
    """A rate-limit-aware client for an OpenAI-compatible API (an async context manager).

    Args:
        base_url: the API root (``https://api.openai.com/v1``, an Azure
            ``https://NAME.openai.azure.com/openai/deployments/DEPLOYMENT``, the simulator's
            URL). Optional when only :meth:`run` or an adapter is used.
        api_key: the secret key. Never logged; its identity is a hash. With a ``base_url``
            and no key, ``OPENAI_API_KEY`` is read (``AZURE_OPENAI_API_KEY`` for an Azure
            URL), as the openai SDK does; ``""`` sends no key (a local server).
        options: every other setting, as one :class:`ThrottleOptions`.
        on_event: a listener for every scheduler event (see :mod:`throttle.events`).
        **settings: the fields of :class:`ThrottleOptions`, as keywords, instead of
            ``options`` (``Throttle(url, key, max_in_flight=64)``).

    Raises:
        ConfigurationError: a setting is invalid, contradicts another, or was given both in
            ``options`` and as a keyword; a ``base_url`` came with no key anywhere; or
            ``headers`` set ``X-Client-Request-Id`` (each request gets its own).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        options: ThrottleOptions | None = None,
        on_event: EventListener | None = None,
        **settings: Unpack[ThrottleSettings],
    ) -> None:
        if options is not None and settings:
            names = ", ".join(sorted(settings))
            raise ConfigurationError(f"options and {names} were both given: put {names} in options")
        self.options = options if options is not None else ThrottleOptions(**settings)
        refuse_shared_id(self.options.headers)
        self.base_url = base_url.rstrip("/") if base_url else None
        api_key = api_key_for(self.base_url, api_key)
        self.identity = self.options.identity or (
            credential_identity(api_key) if api_key else "default"
        )
        self._api_key = api_key
        self.events = EventHub()
        if on_event is not None:
            self.events.subscribe(on_event)
        self._backend = backend_for(self.options)
        self._scheduler = Scheduler(
            self._backend,
            clock=self.options.clock,
            retry=self.options.retry,
            events=self.events,
            max_in_flight=self.options.max_in_flight,
        )
        self._posts = JsonPosts(self.options, self.base_url, self._api_key, self.key_for)
        self._keys: dict[tuple[str, str], BucketKey] = {}  # (identity, model) -> its key
        max_queued = self.options.max_queued
        self._room = None if max_queued is None else asyncio.Semaphore(max_queued)

    def __repr__(self) -> str:
        return (
            f"Throttle(base_url={self.base_url!r}, identity={self.identity!r}, {self._scheduler!r})"
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

    async def stop_sending(self) -> None:
        """Fail queued requests with :class:`ClosedError` and refuse new ones.

        Requests already sent finish: their answers still arrive.
        """
        await self._scheduler.close()

    async def close(self) -> None:
        """Stop sending (see :meth:`stop_sending`) and release what this Throttle opened.

        The native client's session, and the backend if this Throttle built it (one given in
        ``backend`` is its owner's to close). Requests of :meth:`post` still in flight are cut
        off and fail with :class:`ClosedError` (their answers may still be billed); every task
        the Throttle started has ended when this returns.
        """
        await self.stop_sending()
        await self._posts.close()
        if self.options.backend is None:
            await self._backend.close()

    def identity_for(self, credential: str | None) -> str:
        """Return whose limits a request with ``credential`` draws from.

        The identity given in the options wins (one project, many keys); otherwise each key
        is its own identity (a hash, never the key); without a key, this Throttle's.
        """
        if self.options.identity is not None or not credential:
            return self.identity
        return credential_identity(credential)

    def key_for(self, model: str, identity: str | None = None) -> BucketKey:
        """Return the bucket key a model's requests draw from."""
        wanted = (identity or self.identity, model)
        key = self._keys.get(wanted)
        if key is None:  # one key object per model: lookups find it by identity, no compare
            key = BucketKey(wanted[0], self.options.group_map.group_of(model))
            if len(self._keys) >= _MAX_CACHED_KEYS:  # a caller inventing models: start over
                self._keys.clear()
            self._keys[wanted] = key
        return key

    def quota_error(self, identity: str | None = None) -> QuotaExhaustedError | None:
        """Return the error requests get while ``identity``'s quota breaker is open, or ``None``.

        Args:
            identity: a credential identity; this Throttle's by default.
        """
        return self._scheduler.quota_error(identity or self.identity)

    async def reset_quota_breaker(self, identity: str | None = None) -> None:
        """Send again on ``identity`` (every one by default) once its billing is fixed.

        With a shared backend the reset reaches every process using it.
        """
        await self._scheduler.reset_quota_breaker(identity)

    def waiting(self) -> int:
        """Return how many requests wait for room in their buckets."""
        return self._scheduler.waiting()

    def load(self) -> dict[BucketKey, KeyLoad]:
        """Return, per busy key, the attempts waiting for room and those sent, unanswered."""
        return self._scheduler.load()

    async def submit(self, request: ScheduledRequest[T], *, wait_for_room: bool = True) -> T:
        """Send a prepared request through the scheduler (the seam the adapters use).

        With ``max_queued``, at most that many requests are held at once: the rest wait here
        for room (or, with ``wait_for_room=False``, raise :class:`QueueFullError`).

        Returns:
            The value of its successful answer.

        Raises:
            QueueFullError: the queue is full and ``wait_for_room`` is ``False``.
            ThrottleError: the subclass naming what ended the request, carrying the request's
                ``client_request_id``.
        """
        if self._room is None:
            return await self._scheduler.submit(request)
        if not wait_for_room and self._room.locked():
            raise QueueFullError(
                f"{self.options.max_queued} requests are already queued or in flight "
                "(max_queued); wait for room, or raise max_queued"
            )
        async with self._room:
            return await self._scheduler.submit(request)

    def record_usage(self, key: BucketKey, usage: object, estimated: int | None = None) -> None:
        """Report the ``usage`` object a stream carried at its end (and its prompt estimate)."""
        self._scheduler.record_usage(key, usage, estimated)

    async def post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        model: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        wait_for_room: bool = True,
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
            headers: headers of this request, over the Throttle's ``headers``. An
                ``X-Client-Request-Id`` among them is sent as it is; without one, a new id
                is. Either way every attempt sends the same one (see
                :mod:`throttle.request_identity`).
            wait_for_room: with ``max_queued`` requests already held, wait for one to end;
                ``False`` raises :class:`QueueFullError` instead.

        Returns:
            The decoded JSON answer.

        Raises:
            InvalidRequestError: the body cannot be estimated or asks for streaming, or the
                ``X-Client-Request-Id`` is not printable ASCII of 1 to 512 characters.
            QueueFullError: the queue is full and ``wait_for_room`` is ``False``.
            ThrottleError: the subclass naming what ended the request.
        """
        request = self._posts.prepare(
            path,
            body,
            model=model,
            priority=priority,
            deadline=deadline,
            params=params,
            headers=headers,
        )
        if self._room is None:  # no bound on the queue: one coroutine frame less per request
            return await self._scheduler.submit(request)
        return await self.submit(request, wait_for_room=wait_for_room)

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

        async def send() -> Answer[T]:
            try:
                value = await fn()
            except TransportError:
                raise
            except ThrottleError as error:
                return answer_of_error(error)
            except (OSError, TimeoutError) as exc:
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            return answer_of_call(value, headers_of(value) if headers_of is not None else {})

        request = ScheduledRequest(
            self.key_for(model, identity), estimate, send, priority, deadline
        )
        return await self.submit(request)
