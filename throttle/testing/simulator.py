"""A simulated OpenAI API on 127.0.0.1 that rate-limits, fails and bills like the real one.

Per organization and model (or shared group) it keeps requests and tokens buckets, answers
with the real header formats and the real 429 bodies (requests, tokens, daily limits, request
too large, insufficient_quota), and injects 500/503, dropped connections, truncated streams
and latency on demand. It counts tokens its own way (characters / 4), as the real server does
not use the client's tokenizer either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import math
import random
import time
from collections import Counter
from typing import Any, Self

from aiohttp import web

from throttle.durations import format_duration
from throttle.estimate import endpoint_kind
from throttle.testing import sim_bodies as bodies
from throttle.testing.sim_accounting import Pool, ServerBucket, output_cap, prompt_tokens
from throttle.testing.sim_config import ModelLimits, SimulatorConfig
from throttle.testing.sim_stats import SimulatorStats

FAULTS = ("server_error", "overloaded", "drop", "truncate")
DAY_SECONDS = 86_400.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """One request being served: what it asked, for whom, and the headers of its answer."""

    request: web.Request
    payload: dict[str, Any]
    model: str
    org: str
    azure: bool
    headers: dict[str, str]


class SimulatedAPI:
    """The simulated API server (an async context manager).

    Args:
        config: limits, faults, latency and quota.
        host: address to listen on (loopback only).
        port: 0 for any free port.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._pools: dict[tuple[str, str], Pool] = {}
        self._limit_overrides: dict[str, ModelLimits] = {}
        self._charged_by_org: Counter[str] = Counter()
        self._scripted: list[str] = []
        self._random = random.Random(self.config.faults.seed)  # noqa: S311 - fault injection
        self._ids = itertools.count(1)
        self._started_at = time.monotonic()
        self._pending_changes = sorted(self.config.changes, key=lambda c: c.at_seconds)

    def __repr__(self) -> str:
        return f"SimulatedAPI(url={self.base_url if self._runner else None!r}, {self.stats!r})"

    @property
    def base_url(self) -> str:
        """The OpenAI-style root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self._host}:{self._port}/v1"

    def azure_url(self, deployment: str) -> str:
        """The Azure-style root of a deployment on this server."""
        return f"http://{self._host}:{self._port}/openai/deployments/{deployment}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> str:
        """Start listening; return :attr:`base_url`."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)  # noqa: S101
        self._port = server.sockets[0].getsockname()[1]
        self._started_at = time.monotonic()
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def inject(self, fault: str, count: int = 1) -> None:
        """Make the next ``count`` requests fail with ``fault`` (one of :data:`FAULTS`)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {FAULTS}")
        self._scripted.extend([fault] * count)

    def set_limits(self, model: str, *, rpm: int | None = None, tpm: int | None = None) -> None:
        """Change a model's limits now, for every organization."""
        now = time.monotonic()
        current = self._limit_overrides.get(model, self.config.limits_of(model))
        changed = dataclasses.replace(current, rpm=rpm or current.rpm, tpm=tpm or current.tpm)
        self._limit_overrides[model] = changed
        group = changed.group or model
        for (_org, pool_group), pool in self._pools.items():
            if pool_group == group:
                pool.requests.set_capacity(changed.rpm, now)
                pool.tokens.set_capacity(changed.tpm, now)

    def _limits(self, model: str) -> ModelLimits:
        return self._limit_overrides.get(model, self.config.limits_of(model))

    def _pool(self, org: str, model: str, now: float) -> Pool:
        limits = self._limits(model)
        key = (org, limits.group or model)
        pool = self._pools.get(key)
        if pool is None:
            start = self.config.start_level
            day = (
                ServerBucket(limits.rpd, limits.rpd * start, now, DAY_SECONDS)
                if limits.rpd
                else None
            )
            pool = self._pools[key] = Pool(
                ServerBucket(limits.rpm, limits.rpm * start, now),
                ServerBucket(limits.tpm, limits.tpm * start, now),
                day,
            )
        return pool

    def _apply_due_changes(self, now: float) -> None:
        while self._pending_changes and (
            self._pending_changes[0].at_seconds <= now - self._started_at
        ):
            change = self._pending_changes.pop(0)
            self.set_limits(change.model, rpm=change.rpm, tpm=change.tpm)

    def _organization(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else request.headers.get("api-key", "")
        if not key:
            return None
        if self.config.organizations:
            return self.config.organizations.get(key)
        return "org-" + hashlib.sha256(key.encode()).hexdigest()[:8]

    def _next_fault(self) -> str | None:
        if self._scripted:
            return self._scripted.pop(0)
        faults = self.config.faults
        roll = self._random.random()
        for name, chance in (
            ("server_error", faults.server_error),
            ("overloaded", faults.overloaded),
            ("drop", faults.drop),
            ("truncate", faults.truncate),
        ):
            if roll < chance:
                return name
            roll -= chance
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
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
            self.stats.rejected += 1
            body = bodies.error_body(
                "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
            return web.json_response(body, status=401, headers=headers)
        deployment = request.match_info["tail"].split("/")
        azure = len(deployment) > 2 and deployment[:2] == ["openai", "deployments"]
        if request.method == "GET" and request.path.endswith("/models"):
            models = [{"id": name, "object": "model"} for name in self.config.models]
            return web.json_response({"object": "list", "data": models}, headers=headers)
        if request.content_type.startswith("multipart/"):
            return await self._serve_upload(request, org, headers)
        try:
            payload = await request.json()
        except (ValueError, UnicodeDecodeError):
            payload = None
        model = deployment[2] if azure else (payload or {}).get("model")
        if not isinstance(payload, dict) or not isinstance(model, str):
            self.stats.rejected += 1
            body = bodies.error_body(
                "We could not parse the JSON body of your request, or it names no model.",
                "invalid_request_error",
                None,
            )
            return web.json_response(body, status=400, headers=headers)
        return await self._serve(_Call(request, payload, model, org, azure, headers))

    async def _serve_upload(
        self, request: web.Request, org: str, headers: dict[str, str]
    ) -> web.Response:
        """Audio transcriptions and other uploads: one request, no tokens, a text answer."""
        form = await request.post()
        model = form.get("model")
        upload = form.get("file")
        if not isinstance(model, str) or not isinstance(upload, web.FileField):
            self.stats.rejected += 1
            body = bodies.error_body(
                "An upload needs a 'model' field and a 'file'.", "invalid_request_error", None
            )
            return web.json_response(body, status=400, headers=headers)
        size = len(upload.file.read())
        call = _Call(request, {"model": model}, model, org, azure=False, headers=headers)
        refusal = self._charge(call, 0, time.monotonic())
        if refusal is not None:
            return refusal
        await asyncio.sleep(self.config.latency)
        self._succeeded()
        return web.json_response(
            {"text": f"transcribed {size} bytes of {upload.filename}"}, headers=headers
        )

    async def _serve(self, call: _Call) -> web.StreamResponse:
        now = time.monotonic()
        fault = self._next_fault()
        if fault is not None and fault != "truncate":
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
        self._apply_due_changes(now)
        kind = endpoint_kind(call.request.path)
        prompt = prompt_tokens(call.payload)
        cost = prompt if kind == "embeddings" else prompt + output_cap(call.payload)
        refusal = self._charge(call, cost, now)
        if refusal is not None:
            return refusal
        jitter = self._random.uniform(0, self.config.latency_jitter)
        await asyncio.sleep(self.config.latency + jitter)
        cap = output_cap(call.payload)
        completion = min(cap or self.config.completion_tokens, self.config.completion_tokens)
        if call.payload.get("stream"):
            return await self._stream(call, kind, prompt, completion, fault == "truncate")
        self._succeeded()
        return web.json_response(self._answer(call, kind, prompt, completion), headers=call.headers)

    def _answer(self, call: _Call, kind: str, prompt: int, completion: int) -> dict[str, Any]:
        rid = call.headers["x-request-id"]
        if kind == "responses":
            return bodies.response_object(call.model, prompt, completion, rid)
        if kind == "embeddings":
            raw = call.payload.get("input")
            many = isinstance(raw, list) and bool(raw) and not isinstance(raw[0], int)
            inputs = raw if many and isinstance(raw, list) else [raw]
            dimensions = int(call.payload.get("dimensions", 8))
            return bodies.embeddings(call.model, inputs, prompt, dimensions)
        return bodies.chat_completion(call.model, prompt, completion, rid)

    def _succeeded(self) -> None:
        self.stats.succeeded += 1
        self.stats.last_success_at = time.monotonic()

    def _refusal(self, pool: Pool, cost: int, now: float) -> tuple[str, float, float, float] | None:
        """Return (limit type, limit, used, seconds to wait) when a bucket is short, else None."""
        checks = (
            ("requests_per_day", pool.day, 1),
            ("requests", pool.requests, 1),
            ("tokens", pool.tokens, cost),
        )
        for limit_type, bucket, needed in checks:
            if bucket is not None and bucket.level_at(now) < needed:
                used = bucket.capacity - bucket.level
                return limit_type, bucket.capacity, used, bucket.seconds_until(needed, now)
        return None

    def _charge(self, call: _Call, cost: int, now: float) -> web.Response | None:
        """Charge the request, or return the 429 that refuses it. Fills in rate headers."""
        quota = self.config.quota_tokens
        if quota is not None and self._charged_by_org[call.org] >= quota:
            self.stats.quota_errors += 1
            self.stats.first_quota_error_at = self.stats.first_quota_error_at or now
            return web.json_response(bodies.QUOTA_BODY, status=429, headers=call.headers)
        pool = self._pool(call.org, call.model, now)
        if pool.tokens.capacity < cost:
            self.stats.too_large += 1
            self._rate_headers(pool, now, call.headers)
            body = bodies.too_large_body(
                model=call.model, org=call.org, limit=pool.tokens.capacity, requested=cost
            )
            return web.json_response(body, status=429, headers=call.headers)
        refusal = self._refusal(pool, cost, now)
        if refusal is None or refusal[0] == "tokens":
            pool.requests.level -= 1  # a refused request still counts against RPM
        if refusal is None:
            pool.tokens.level -= cost
            if pool.day is not None:
                pool.day.level -= 1
            self._charged_by_org[call.org] += cost
            self.stats.charged_tokens += cost
        self._rate_headers(pool, now, call.headers)
        if refusal is None:
            return None
        limit_type, limit, used, wait = refusal
        self.stats.rate_limited[limit_type] += 1
        if call.azure:
            body = bodies.azure_rate_limit_body(wait)
        else:
            requested = cost if limit_type == "tokens" else 1
            body = bodies.rate_limit_body(
                model=call.model,
                org=call.org,
                limit_type=limit_type,
                limit=limit,
                used=used,
                requested=requested,
                wait=wait,
            )
        if self.config.retry_after_header or call.azure:
            call.headers["retry-after-ms"] = f"{wait * 1000:.0f}"
            call.headers["retry-after"] = str(max(1, math.ceil(wait)))
        return web.json_response(body, status=429, headers=call.headers)

    def _rate_headers(self, pool: Pool, now: float, headers: dict[str, str]) -> None:
        if not self.config.rate_limit_headers:
            return
        for kind, bucket in (("requests", pool.requests), ("tokens", pool.tokens)):
            remaining = max(0, math.floor(bucket.level_at(now)))
            headers[f"x-ratelimit-limit-{kind}"] = f"{bucket.capacity:.0f}"
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.seconds_to_full(now))

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
        for line in lines:
            await response.write(line.encode())
        await response.write_eof()
        if not truncate:
            self._succeeded()
        return response
