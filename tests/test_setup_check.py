"""A client whose URL cannot work stops with one clear error instead of failing each request."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web

from throttle import Limits, RetryPolicy, Throttle
from throttle.errors import APIStatusError, MisconfiguredError

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
INVALID_URL = {"message": "Invalid URL (POST /v1/chat)", "type": "invalid_request_error"}


async def serve(statuses: list[int]) -> tuple[web.AppRunner, str, list[int]]:
    """A server answering POSTs with `statuses` in turn (the last repeats); 404s say no URL."""
    answered: list[int] = []

    async def answer(_request: web.Request) -> web.Response:
        status = statuses[min(len(answered), len(statuses) - 1)]
        answered.append(status)
        if status == 200:
            return web.json_response({"choices": [], "usage": {"prompt_tokens": 1}})
        body = {"error": {**INVALID_URL, "param": None, "code": None}}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1", answered


async def test_a_404_before_any_success_fails_every_request_with_one_error() -> None:
    """The first 404 trips the check: queued and later requests fail unsent, alike."""
    server, url, answered = await serve([404])
    try:
        async with Throttle(url, "sk-x", limits=Limits(rpm=6, tpm=1e6)) as client:
            outcomes = await asyncio.gather(
                *(client.post("chat", BODY) for _ in range(20)), return_exceptions=True
            )
            with pytest.raises(MisconfiguredError, match="404"):
                await client.post("chat/completions", BODY)
    finally:
        await server.cleanup()
    assert all(isinstance(outcome, MisconfiguredError) for outcome in outcomes)
    assert len(answered) <= 2  # not 20: the queue was failed at once


async def test_no_server_at_the_url_is_one_clear_error_quickly() -> None:
    """Connection refused: one request's retries, then every request fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    started = time.monotonic()
    retry = RetryPolicy(max_attempts=2)
    async with Throttle(f"http://127.0.0.1:{closed}/v1", "sk-x", retry=retry) as client:
        outcomes = await asyncio.gather(
            *(client.post("chat/completions", BODY) for _ in range(50)), return_exceptions=True
        )
    assert all(isinstance(outcome, MisconfiguredError) for outcome in outcomes)
    assert "no answer from the server" in str(outcomes[0])
    assert time.monotonic() - started < 15


async def test_after_a_success_a_404_is_the_requests_own() -> None:
    """Once a request succeeded the URL works: a later 404 is that request's APIStatusError."""
    server, url, _answered = await serve([200, 404])
    try:
        async with Throttle(url, "sk-x") as client:
            await client.post("chat/completions", BODY)
            with pytest.raises(APIStatusError) as caught:
                await client.post("chat/completions", BODY)
    finally:
        await server.cleanup()
    assert not isinstance(caught.value, MisconfiguredError)
    assert caught.value.status == 404


async def test_an_unknown_host_is_one_clear_error() -> None:
    """A host that does not resolve (the reserved .invalid domain) trips the check too."""
    retry = RetryPolicy(max_attempts=2)
    async with Throttle("http://no-such-host.invalid/v1", "sk-x", retry=retry) as client:
        with pytest.raises(MisconfiguredError, match=r"no-such-host\.invalid"):
            await client.post("chat/completions", BODY)
