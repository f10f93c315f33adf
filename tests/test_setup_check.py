"""A client whose URL cannot work stops with one clear error instead of failing each request."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.scripted_server import COMPLETION, NOT_FOUND, serve
from throttle import Limits, RetryPolicy, Throttle
from throttle.errors import APIStatusError, MisconfiguredError
from throttle.testing.ports import free_port

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def test_a_404_before_any_success_fails_every_request_with_one_error() -> None:
    """The first 404 trips the check: queued and later requests fail unsent, alike."""
    server, url, answered = await serve([NOT_FOUND])
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
    closed = free_port()  # nothing listens there
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
    server, url, _answered = await serve([COMPLETION, NOT_FOUND])
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
