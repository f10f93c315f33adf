"""Real httpx, httpx2 and aiohttp clients, throttled, against the simulated API."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import aiohttp
import httpx
import httpx2
import pytest

import throttle
from throttle import (
    QuotaExhaustedError,
    RetryExhaustedError,
    RetryPolicy,
    StreamTruncatedError,
    Throttle,
    TransportError,
)
from throttle.adapters.aiohttp_middleware import throttle_middleware, throttled_session
from throttle.adapters.httpx2_transport import ThrottleHttpx2Transport
from throttle.adapters.httpx_transport import ThrottleHttpxTransport
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

AUTH = {"Authorization": "Bearer sk-http"}
FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
CLIENTS = ["httpx", "httpx2", "aiohttp"]


def chat(max_tokens: int = 10, **extra: Any) -> dict[str, Any]:
    """A chat body."""
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        **extra,
    }


class Driver(Protocol):
    """What a test does with a throttled client, whichever library it is."""

    async def post(self, url: str, body: Any) -> tuple[int, dict[str, str], Any]:
        """POST JSON; return status, lower-cased headers, decoded body."""
        ...

    async def stream(self, url: str, body: Any) -> list[bytes]:
        """POST JSON and read the streamed answer line by line."""
        ...

    async def get(self, url: str) -> int:
        """GET; return the status."""
        ...


class HttpxDriver:
    """httpx or httpx2 (one API)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def post(self, url: str, body: Any) -> tuple[int, dict[str, str], Any]:
        """See Driver."""
        response = await self.client.post(url, json=body, headers=AUTH)
        return response.status_code, dict(response.headers), response.json()

    async def stream(self, url: str, body: Any) -> list[bytes]:
        """See Driver."""
        async with self.client.stream("POST", url, json=body, headers=AUTH) as response:
            return [line.encode() async for line in response.aiter_lines() if line]

    async def get(self, url: str) -> int:
        """See Driver."""
        return int((await self.client.get(url, headers=AUTH)).status_code)


class AiohttpDriver:
    """An aiohttp session with throttle's middleware."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def post(self, url: str, body: Any) -> tuple[int, dict[str, str], Any]:
        """See Driver."""
        async with self.session.post(url, json=body, headers=AUTH) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, await response.json()

    async def stream(self, url: str, body: Any) -> list[bytes]:
        """See Driver."""
        async with self.session.post(url, json=body, headers=AUTH) as response:
            return [line.strip() async for line in response.content if line.strip()]

    async def get(self, url: str) -> int:
        """See Driver."""
        async with self.session.get(url, headers=AUTH) as response:
            return response.status


def driver(kind: str, t: Throttle) -> AbstractAsyncContextManager[Driver]:
    """A throttled client of the given library."""

    @asynccontextmanager
    async def open_driver() -> AsyncIterator[Driver]:
        if kind == "httpx":
            async with httpx.AsyncClient(transport=ThrottleHttpxTransport(t)) as client:
                yield HttpxDriver(client)
        elif kind == "httpx2":
            async with httpx2.AsyncClient(transport=ThrottleHttpx2Transport(t)) as client2:
                yield HttpxDriver(client2)
        else:
            async with throttled_session(t) as session:
                yield AiohttpDriver(session)

    return open_driver()


@pytest.mark.parametrize("kind", CLIENTS)
async def test_requests_are_admitted_and_answered(kind: str) -> None:
    """A chat request goes through the scheduler and comes back untouched."""
    events: list[throttle.Event] = []
    async with (
        SimulatedAPI(SimulatorConfig(latency=0.01)) as sim,
        Throttle(on_event=events.append) as t,
        driver(kind, t) as client,
    ):
        status, _, body = await client.post(f"{sim.base_url}/chat/completions", chat())
    assert status == 200
    assert body["object"] == "chat.completion"
    assert [type(e).__name__ for e in events if isinstance(e, throttle.RequestAdmitted)] == [
        "RequestAdmitted"
    ]


@pytest.mark.parametrize("kind", CLIENTS)
async def test_a_rate_limit_burst_is_absorbed(kind: str) -> None:
    """A drained small bucket: 20 concurrent requests all succeed with at most two 429s."""
    config = SimulatorConfig(
        latency=0.01, start_level=0.0, default_limits=ModelLimits(rpm=600, tpm=30_000)
    )
    async with SimulatedAPI(config) as sim, Throttle() as t, driver(kind, t) as client:
        results = await asyncio.gather(
            *(client.post(f"{sim.base_url}/chat/completions", chat(30)) for _ in range(20))
        )
    assert [status for status, _, _ in results] == [200] * 20
    assert sim.stats.total_429 <= 2


@pytest.mark.parametrize("kind", CLIENTS)
async def test_streams_pass_through_and_truncation_fails(kind: str) -> None:
    """A whole stream ends with [DONE]; a cut one raises StreamTruncatedError to the reader."""
    async with (
        SimulatedAPI(SimulatorConfig(latency=0.01)) as sim,
        Throttle() as t,
        driver(kind, t) as client,
    ):
        url = f"{sim.base_url}/chat/completions"
        lines = await client.stream(url, chat(5, stream=True))
        sim.inject("truncate")
        with pytest.raises(StreamTruncatedError):
            await client.stream(url, chat(5, stream=True))
    assert lines[-1] == b"data: [DONE]"


@pytest.mark.parametrize("kind", CLIENTS)
async def test_final_error_answers_reach_the_caller_after_throttles_retries(kind: str) -> None:
    """Persistent 503s: three attempts, then the server's own answer, marked not to retry."""
    async with (
        SimulatedAPI(SimulatorConfig(latency=0.0)) as sim,
        Throttle(retry=FAST) as t,
        driver(kind, t) as client,
    ):
        sim.inject("overloaded", 10)
        status, headers, body = await client.post(f"{sim.base_url}/chat/completions", chat())
    assert status == 503
    assert "overloaded" in body["error"]["message"]
    if kind != "aiohttp":  # for SDKs above httpx; aiohttp answers are handed on untouched
        assert headers["x-should-retry"] == "false"
    assert sim.stats.received == 3


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("stream", [False, True])
async def test_attempts_slower_than_timeout_are_retried_transport_failures(
    kind: str, stream: bool
) -> None:
    """An answer (or a stream's first byte) slower than `timeout` fails the attempt; retried."""
    config = SimulatorConfig(latency=1.0)
    async with (
        SimulatedAPI(config) as sim,
        Throttle(retry=RetryPolicy(max_attempts=2, initial_backoff=0.01), timeout=0.2) as t,
        driver(kind, t) as client,
    ):
        send = client.stream if stream else client.post
        with pytest.raises(RetryExhaustedError) as caught:
            await send(f"{sim.base_url}/chat/completions", chat(stream=stream))
    assert isinstance(caught.value.last_error, TransportError)
    assert "TimeoutError" in str(caught.value.last_error)
    assert caught.value.attempts == 2
    assert sim.stats.received == 2


@pytest.mark.parametrize("kind", CLIENTS)
async def test_an_attempt_within_timeout_succeeds(kind: str) -> None:
    """Answers that arrive within `timeout`, jitter included, are untouched by it."""
    config = SimulatorConfig(latency=0.05, latency_jitter=0.05)
    async with (
        SimulatedAPI(config) as sim,
        Throttle(retry=FAST, timeout=1.0) as t,
        driver(kind, t) as client,
    ):
        status, _, _ = await client.post(f"{sim.base_url}/chat/completions", chat())
    assert status == 200
    assert sim.stats.received == 1


@pytest.mark.parametrize("kind", CLIENTS)
async def test_quota_refusals_raise_without_reaching_the_server(kind: str) -> None:
    """After insufficient_quota, the next request raises QuotaExhaustedError, unsent."""
    async with (
        SimulatedAPI(SimulatorConfig(latency=0.0, quota_tokens=1)) as sim,
        Throttle() as t,
        driver(kind, t) as client,
    ):
        url = f"{sim.base_url}/chat/completions"
        await client.post(url, chat())
        status, _, body = await client.post(url, chat())
        with pytest.raises(QuotaExhaustedError):
            await client.post(url, chat())
    assert (status, body["error"]["code"]) == (429, "insufficient_quota")
    assert sim.stats.received == 2


@pytest.mark.parametrize("kind", CLIENTS)
async def test_get_requests_pass_through(kind: str) -> None:
    """GET is not rate-limited per model: straight through, no admission."""
    events: list[throttle.Event] = []
    async with (
        SimulatedAPI(SimulatorConfig(latency=0.0)) as sim,
        Throttle(on_event=events.append) as t,
        driver(kind, t) as client,
    ):
        assert await client.get(f"{sim.base_url}/models") == 200
    assert not events


async def test_aiohttp_middleware_works_per_request() -> None:
    """The middleware can be given to one request of an ordinary session."""
    async with (
        SimulatedAPI(SimulatorConfig(latency=0.0)) as sim,
        Throttle() as t,
        aiohttp.ClientSession() as session,
    ):
        middlewares = (throttle_middleware(t),)
        url = f"{sim.base_url}/chat/completions"
        response = await session.post(url, json=chat(), headers=AUTH, middlewares=middlewares)
        assert response.status == 200
        response.release()
    assert sim.stats.succeeded == 1


async def test_aiohttp_stream_read_in_chunks_is_watched_too() -> None:
    """Reading the stream with iter_any still detects truncation."""
    async with (
        SimulatedAPI(SimulatorConfig(latency=0.0)) as sim,
        Throttle() as t,
        throttled_session(t) as session,
    ):
        sim.inject("truncate")
        async with session.post(
            f"{sim.base_url}/chat/completions", json=chat(8, stream=True), headers=AUTH
        ) as response:
            with pytest.raises(StreamTruncatedError):
                async for _ in response.content.iter_any():
                    pass
