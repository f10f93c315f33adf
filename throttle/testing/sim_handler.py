"""How the simulated server answers one HTTP request, faults included.

Files and Batch API requests go to :mod:`throttle.testing.sim_batch_api`
(:meth:`RequestHandler.handle_batch`). For the rest, it names the caller's organization from
its API key, answers 404 to paths the real API does not serve and 400 to bodies it would
refuse (both before any rate limit is charged; see :mod:`throttle.testing.sim_routes`),
serves ``/models``, audio uploads and JSON calls, injects 500/503, dropped connections,
truncated streams and latency spikes (scripted or at random, one draw per attempt), has the
rate limiter charge or refuse the request, and answers in the real JSON or server-sent-events
shapes. An answer whose client already left (it timed out during a spike) is counted as
abandoned, never as a success.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import random
import time
from typing import Any

from aiohttp import web

from throttle.testing import sim_bodies as bodies
from throttle.testing.sim_accounting import output_cap, prompt_tokens
from throttle.testing.sim_batch_api import BatchAPI
from throttle.testing.sim_config import SimulatorConfig
from throttle.testing.sim_limiter import RateLimiter
from throttle.testing.sim_routes import Route, body_problem, resolve_batch_route, resolve_route
from throttle.testing.sim_stats import SimulatorStats

FAULTS = ("server_error", "overloaded", "drop", "truncate", "spike")
_POLL_SECONDS = 0.02  # how often a spiked answer checks whether its client is still waiting


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """One request being served: what it asked, for whom, and the headers of its answer."""

    request: web.Request
    payload: dict[str, Any]
    route: Route
    model: str
    org: str
    headers: dict[str, str]


class RequestHandler:
    """Serves every request of the simulated API (:meth:`handle` is the aiohttp handler).

    Args:
        config: models, organizations, faults and latency.
        stats: where requests and their outcomes are counted.
        limiter: charges each request, or refuses it with a 429.
        batches: serves the Files and Batch APIs (counted apart, never rate-limited).
    """

    def __init__(
        self,
        config: SimulatorConfig,
        stats: SimulatorStats,
        limiter: RateLimiter,
        batches: BatchAPI,
    ) -> None:
        self.config = config
        self.stats = stats
        self._limiter = limiter
        self._batches = batches
        self._scripted: list[str] = []
        # Two generators, so that latency jitter does not shift which request meets a fault.
        self._faults = random.Random(self.config.faults.seed)  # noqa: S311 - fault injection
        self._jitter = random.Random(f"jitter {self.config.faults.seed}")  # noqa: S311
        self._ids = itertools.count(1)
        self._lingering: set[asyncio.Task[Any]] = set()

    def inject(self, fault: str, count: int = 1) -> None:
        """Make the next ``count`` requests meet ``fault`` (one of :data:`FAULTS`).

        A ``"spike"`` lasts ``config.faults.spike_seconds``.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {FAULTS}")
        self._scripted.extend([fault] * count)

    def _organization(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else request.headers.get("api-key", "")
        if not key:
            return None
        if self.config.organizations:
            return self.config.organizations.get(key)
        return "org-" + hashlib.sha256(key.encode()).hexdigest()[:8]

    def close(self) -> None:
        """Stop waiting out latency spikes (the server is stopping): cancel those answers."""
        for task in self._lingering:
            task.cancel()

    def _next_fault(self) -> str | None:
        """One draw per attempt: a scripted fault first, else at random (or none)."""
        if self._scripted:
            return self._scripted.pop(0)
        roll = self._faults.random()
        for name, chance in self.config.faults.rates().items():
            if roll < chance:
                return name
            roll -= chance
        return None

    async def handle_batch(self, request: web.Request) -> web.StreamResponse:
        """Answer a request under ``/v1/files`` or ``/v1/batches`` (the Files and Batch APIs).

        Args:
            request: the incoming request; one no such endpoint serves goes to :meth:`handle`.

        Returns:
            The Files or Batch API's answer, or :meth:`handle`'s.
        """
        route = resolve_batch_route(request.method, request.path)
        if route is None:
            return await self.handle(request)
        request_id = f"req_{next(self._ids):08d}"
        return await self._batches.serve(request, route, self._organization(request), request_id)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request: stats, models, uploads, or a JSON call to a model.

        Args:
            request: the incoming request, on any path.

        Returns:
            The answer: a success, a 4xx/5xx error, or a stream.
        """
        now = time.monotonic()
        if request.method == "GET" and request.path == "/_stats":
            return web.json_response(self.stats.as_dict())
        self.stats.received += 1
        self.stats.first_request_at = self.stats.first_request_at or now
        if self.stats.first_quota_error_at is not None:
            self.stats.received_after_quota += 1
        request_id = f"req_{next(self._ids):08d}"
        headers = {"x-request-id": request_id}
        org = self._organization(request)
        if org is None:
            body = bodies.error_body(
                "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
            return self._refuse(body, headers, status=401)
        route = resolve_route(request.method, request.path)
        if route is None:
            body = (
                bodies.AZURE_NOT_FOUND_BODY
                if request.path.startswith("/openai/")
                else bodies.invalid_url_body(request.method, request.path)
            )
            return self._refuse(body, headers, status=404)
        if route.kind == "models":
            models = [{"id": name, "object": "model"} for name in self.config.models]
            return web.json_response({"object": "list", "data": models}, headers=headers)
        if route.kind == "audio":
            return await self._serve_upload(request, route, org, headers)
        return await self._serve_json(request, route, org, headers)

    async def _serve_json(
        self, request: web.Request, route: Route, org: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        """A JSON call to a model, once its body has what the endpoint needs."""
        try:
            payload = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._refuse(bodies.NOT_JSON_BODY, headers)
        problem = body_problem(route, payload)
        if problem is not None:
            message, param, code = problem
            return self._refuse(
                bodies.error_body(message, "invalid_request_error", code, param), headers
            )
        model = route.deployment or payload["model"]
        return await self._serve(_Call(request, payload, route, model, org, headers))

    def _refuse(
        self, body: dict[str, Any], headers: dict[str, str], status: int = 400
    ) -> web.Response:
        """An error the real server gives before any rate limit is charged."""
        self.stats.rejected += 1
        return web.json_response(body, status=status, headers=headers)

    async def _serve_upload(
        self, request: web.Request, route: Route, org: str, headers: dict[str, str]
    ) -> web.Response:
        """Audio transcriptions and translations: one request, no tokens, a text answer."""
        form = await request.post()
        model = route.deployment or form.get("model")
        upload = form.get("file")
        for name, present in (("model", isinstance(model, str)), ("file", upload is not None)):
            if not present:
                message = f"Missing required parameter: '{name}'."
                body = bodies.error_body(
                    message, "invalid_request_error", "missing_required_parameter", name
                )
                return self._refuse(body, headers)
        if not isinstance(upload, web.FileField) or not isinstance(model, str):
            message = "Invalid type for 'file': expected a file upload."
            body = bodies.error_body(message, "invalid_request_error", "invalid_type", "file")
            return self._refuse(body, headers)
        size = len(upload.file.read())
        call = _Call(request, {"model": model}, route, model, org, headers)
        refusal = self._charge(call, 0, time.monotonic())
        if refusal is not None:
            return refusal
        await asyncio.sleep(self.config.latency)
        self._succeeded(call)
        return web.json_response(
            {"text": f"transcribed {size} bytes of {upload.filename}"}, headers=headers
        )

    async def _serve(self, call: _Call) -> web.StreamResponse:
        now = time.monotonic()
        fault = self._next_fault()
        if fault in ("server_error", "overloaded", "drop"):
            self.stats.injected[fault] += 1
            if fault == "drop":
                assert call.request.transport is not None  # noqa: S101 - a live request has one
                call.request.transport.abort()
                return web.Response(status=500)
            status, body = (
                (500, bodies.SERVER_ERROR_BODY)
                if fault == "server_error"
                else (503, bodies.OVERLOADED_BODY)
            )
            return web.json_response(body, status=status, headers=call.headers)
        self._limiter.apply_due_changes(now)
        kind = call.route.kind
        prompt = prompt_tokens(call.payload)
        cost = prompt if kind == "embeddings" else prompt + output_cap(call.payload)
        refusal = self._charge(call, cost, now)
        if refusal is not None:
            return refusal
        jitter = self._jitter.uniform(0, self.config.latency_jitter)
        await asyncio.sleep(self.config.latency + jitter)
        if fault == "spike":
            self.stats.injected["spike"] += 1
            await self._linger(call.request, self.config.faults.spike_seconds)
        if call.request.transport is None:
            # The client gave up waiting (its timeout): nobody will read this answer.
            self.stats.abandoned += 1
            return web.Response(status=408, headers=call.headers)
        cap = output_cap(call.payload)
        completion = min(cap or self.config.completion_tokens, self.config.completion_tokens)
        if call.payload.get("stream"):
            return await self._stream(call, kind, prompt, completion, fault == "truncate")
        self._succeeded(call)
        rid = call.headers["x-request-id"]
        answer = bodies.answer(
            kind, call.model, call.payload, prompt=prompt, completion=completion, request_id=rid
        )
        return web.json_response(answer, headers=call.headers)

    async def _linger(self, request: web.Request, seconds: float) -> None:
        """Wait ``seconds`` (a latency spike), or until the client closes the connection."""
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - aiohttp runs every handler in a task
        self._lingering.add(task)
        try:
            until = time.monotonic() + seconds
            # aiohttp signals a client's leaving by no event, only by dropping the transport.
            while request.transport is not None and time.monotonic() < until:  # noqa: ASYNC110
                await asyncio.sleep(min(until - time.monotonic(), _POLL_SECONDS))
        finally:
            self._lingering.discard(task)

    def _charge(self, call: _Call, cost: int, now: float) -> web.Response | None:
        return self._limiter.charge(
            call.org, call.model, cost, now, call.headers, azure=call.route.azure
        )

    def _succeeded(self, call: _Call) -> None:
        self.stats.succeeded += 1
        self.stats.last_success_at = time.monotonic()
        user = call.payload.get("user")
        if isinstance(user, str):
            answers = self.stats.answered_by_user.setdefault(user, [])
            answers.append(call.headers["x-request-id"])

    async def _stream(
        self, call: _Call, kind: str, prompt: int, completion: int, truncate: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**call.headers, "Content-Type": "text/event-stream"})
        await response.prepare(call.request)
        rid = call.headers["x-request-id"]
        if kind == "responses":
            events = bodies.responses_stream_events(call.model, prompt, completion, rid)
            lines = [f"event: {name}\ndata: {data}\n\n" for name, data in events]
        else:
            options = call.payload.get("stream_options")
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            chunks = bodies.chat_stream_events(call.model, prompt, completion, rid, usage)
            lines = [f"data: {data}\n\n" for data in chunks]
        if truncate:
            self.stats.injected["truncate"] += 1
            lines = lines[: max(1, len(lines) // 2)]
        try:
            for line in lines:
                await response.write(line.encode())
            await response.write_eof()
        except ConnectionError:
            self.stats.abandoned += 1  # the client left mid-stream
            return response
        if not truncate:
            self._succeeded(call)
        return response
