"""The Files and Batch API client: multipart uploads, retries with backoff, streamed downloads."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.scripted_server import app_served
from throttle.batch_client import BatchClient
from throttle.errors import APIStatusError, RetryExhaustedError, ServerError, TransportError
from throttle.retry import RetryPolicy

FILE = {"id": "file-1", "object": "file", "filename": "a.jsonl", "purpose": "batch"}
Scripted = tuple[int, dict[str, str], Any]


@dataclass
class Script:
    """What the server answers, in turn (the last answer repeats), and what it was sent."""

    answers: list[Scripted]
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer the next scripted answer; record the request (a form's fields, too)."""
        form = await request.post() if request.content_type.startswith("multipart/") else {}
        fields = {
            name: (value.filename, value.file.read()) if isinstance(value, web.FileField) else value
            for name, value in form.items()
        }
        self.seen.append({"path": request.path, "auth": request.headers.get("Authorization")})
        self.seen[-1]["form"] = fields
        status, headers, body = self.answers[min(len(self.seen), len(self.answers)) - 1]
        return web.json_response(body, status=status, headers=headers)


@asynccontextmanager
async def scripted(*answers: Scripted) -> AsyncIterator[tuple[str, Script]]:
    """A server on 127.0.0.1 that answers from ``answers``; yields its API root and script."""
    script = Script(list(answers))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    async with app_served(app) as root:
        yield root, script


def client(root: str, waits: list[float], attempts: int = 4) -> BatchClient:
    """A client whose waits are recorded instead of slept."""

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_attempts=attempts, initial_backoff=1.0, max_backoff=60.0)
    return BatchClient(root, "sk-x", retry=policy, sleep=sleep)


def server_error(status: int = 500) -> Scripted:
    """A 5xx answer in OpenAI's shape."""
    return status, {}, {"error": {"message": "boom", "type": "server_error", "code": None}}


async def test_an_upload_is_multipart_with_the_batch_purpose() -> None:
    """The file goes as a multipart form, ``purpose=batch``, with the key as a bearer token."""
    async with scripted((200, {}, FILE)) as (root, script):
        api = client(root, [])
        uploaded = await api.upload("a.jsonl", b'{"x": 1}\n')
        await api.aclose()
    assert uploaded == FILE
    assert [seen["path"] for seen in script.seen] == ["/v1/files"]
    assert script.seen[0]["auth"] == "Bearer sk-x"
    assert script.seen[0]["form"] == {"purpose": "batch", "file": ("a.jsonl", b'{"x": 1}\n')}


async def test_a_read_is_retried_after_5xx_with_jittered_backoff() -> None:
    """Two 5xx, then the batch: waits growing with jitter."""
    waits: list[float] = []
    answers: list[Scripted] = [server_error(), server_error(503), (200, {}, {"id": "batch_1"})]
    async with scripted(*answers) as (root, script):
        api = client(root, waits)
        batch = await api.retrieve_batch("batch_1")
        await api.aclose()
    assert batch == {"id": "batch_1"}
    assert len(script.seen) == 3
    assert len(waits) == 2
    assert 0 < waits[0] <= 2.0 <= waits[1] <= 3.0  # the policy's backoff, doubling, jittered


@pytest.mark.parametrize("status", [500, 502, 504, 408])
async def test_an_upload_or_create_answered_5xx_or_408_is_not_repeated(status: int) -> None:
    """The server may have acted before the gateway answered: raised at once, for a look-up."""
    async with scripted(server_error(status), (200, {}, FILE)) as (root, script):
        api = client(root, [])
        try:
            with pytest.raises(ServerError) as upload_failed:
                await api.upload("a.jsonl", b'{"x": 1}\n')
            script.seen.clear()  # the first answer again
            with pytest.raises(ServerError) as create_failed:
                await api.create_batch("file-1", "/v1/embeddings", {})
        finally:
            await api.aclose()
    assert (upload_failed.value.status, upload_failed.value.attempts) == (status, 1)
    assert (create_failed.value.status, create_failed.value.attempts) == (status, 1)
    assert len(script.seen) == 1


async def test_a_429_waits_as_long_as_retry_after_says() -> None:
    """The server's delay wins over our backoff."""
    waits: list[float] = []
    limited = (429, {"retry-after": "7"}, {"error": {"message": "slow", "code": "rate_limit"}})
    async with scripted(limited, (200, {}, {"id": "batch_1"})) as (root, _):
        api = client(root, waits)
        batch = await api.retrieve_batch("batch_1")
        await api.aclose()
    assert batch == {"id": "batch_1"}
    assert waits == [7.0]


async def test_a_400_ends_the_call_at_once_with_the_servers_words() -> None:
    """A refusal is not retried; its status, code and message are kept."""
    waits: list[float] = []
    refusal = {"error": {"message": "bad endpoint", "type": "invalid_request_error", "code": "x"}}
    async with scripted((400, {}, refusal)) as (root, script):
        api = client(root, waits)
        with pytest.raises(APIStatusError) as raised:
            await api.create_batch("file-1", "/v1/nope", {})
        await api.aclose()
    assert (raised.value.status, raised.value.code, raised.value.attempts) == (400, "x", 1)
    assert "bad endpoint" in str(raised.value)
    assert (len(script.seen), waits) == (1, [])


async def test_a_409_cancel_is_not_retried() -> None:
    """Cancelling a batch that already stopped says so at once."""
    conflict: Scripted = (
        409,
        {},
        {"error": {"message": "Cannot cancel a batch with status 'completed'."}},
    )
    async with scripted(conflict) as (root, script):
        api = client(root, [])
        with pytest.raises(APIStatusError) as raised:
            await api.cancel_batch("batch_1")
        await api.aclose()
    assert raised.value.status == 409
    assert len(script.seen) == 1


async def test_attempts_run_out_on_a_server_that_keeps_failing() -> None:
    """Every attempt a 500: RetryExhaustedError after the policy's attempts."""
    waits: list[float] = []
    async with scripted(server_error()) as (root, script):
        api = client(root, waits, attempts=3)
        api.proven = True  # the set-up worked before: a failure is the server's, not the URL's
        with pytest.raises(RetryExhaustedError) as raised:
            await api.retrieve_batch("batch_1")
        await api.aclose()
    assert raised.value.attempts == 3
    assert len(script.seen) == 3
    assert len(waits) == 2


async def test_no_server_at_the_url_fails_at_once_before_any_success() -> None:
    """Connection refused before any call succeeded: the set-up is wrong; no retries."""
    async with scripted(server_error()) as (root, _):
        pass  # the port is free again
    waits: list[float] = []
    api = client(root, waits)
    with pytest.raises(TransportError):
        await api.retrieve_batch("batch_1")
    await api.aclose()
    assert waits == []


async def test_a_download_cut_midway_starts_again_without_repeating_a_record() -> None:
    """The first read breaks off after two records; the second yields the rest, once each."""
    records = [{"custom_id": f"t-{i}", "pad": "x" * (200_000 if i == 2 else 10)} for i in range(5)]
    content = "".join(json.dumps(r) + "\n" for r in records).encode()
    reads: list[int] = []

    async def download(request: web.Request) -> web.StreamResponse:
        reads.append(1)
        response = web.StreamResponse(headers={"Content-Length": str(len(content))})
        await response.prepare(request)
        if len(reads) == 1:
            await response.write(content[: content.index(b"\n", 100) + 1])
            assert request.transport is not None
            request.transport.close()  # cut: fewer bytes than promised
            return response
        await response.write(content)
        return response

    app = web.Application()
    app.router.add_get("/v1/files/{id}/content", download)
    waits: list[float] = []
    async with app_served(app) as root:
        api = client(root, waits)
        try:
            async with contextlib.aclosing(api.file_records("file-9")) as stream:
                got = [record async for record in stream]
        finally:
            await api.aclose()
    assert got == records
    assert len(reads) == 2
    assert len(waits) == 1


async def test_a_download_slower_than_the_timeout_ends_while_bytes_keep_coming() -> None:
    """The timeout bounds each wait for bytes, not the whole file: a slow link finishes it."""
    records = [{"custom_id": f"t-{i}"} for i in range(8)]

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for record in records:  # 0.8 s in all, four times the timeout
            await response.write(json.dumps(record).encode() + b"\n")
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.router.add_get("/v1/files/{id}/content", download)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.0, max_backoff=0.0)
    async with app_served(app) as root:
        api = BatchClient(root, "sk-x", retry=policy, timeout=0.2)
        try:
            async with contextlib.aclosing(api.file_records("file-9")) as stream:
                got = [record async for record in stream]
        finally:
            await api.aclose()
    assert got == records
    assert api.calls == 1
