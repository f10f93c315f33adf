"""One X-Client-Request-Id per logical request, the same on every attempt, seen server-side."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import httpx2
import openai
import pytest
from aiohttp import web

import throttle
from throttle import APIStatusError, InvalidRequestError, RetryPolicy, Throttle
from throttle.adapters.aiohttp_middleware import throttle_middleware, throttled_session
from throttle.adapters.httpx2_transport import ThrottleHttpx2Transport
from throttle.errors import ConfigurationError
from throttle.request_identity import check_client_request_id, new_client_request_id
from throttle.run_options import RunOptions
from throttle.runner import EXIT_FAILED, JobRunner

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
SERVER_ERROR = (
    500,
    {
        "error": {
            "message": "The server had an error processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
)
BAD_REQUEST = (
    400,
    {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}},
)
COMPLETION = (
    200,
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok"},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    },
)
BAD_IDS = {
    "513 characters": "x" * 513,
    "not ASCII": "café-1",
    "a control character": "line\tbreak",
    "empty": "",
}


class Recorder:
    """A server on 127.0.0.1 that answers POSTs from a script and keeps each one's id.

    Args:
        answers: the n-th POST gets ``answers[n]``; the last one repeats.
    """

    def __init__(self, *answers: tuple[int, dict[str, Any]]) -> None:
        self.answers = answers or (COMPLETION,)
        self.ids: list[str | None] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        status, body = self.answers[min(len(self.ids), len(self.answers) - 1)]
        self.ids.append(request.headers.get("X-Client-Request-Id"))
        return web.json_response(body, status=status)


def chat(**extra: Any) -> dict[str, Any]:
    """A small chat body."""
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra}


def finished_ids(events: list[throttle.Event]) -> list[str | None]:
    """The client_request_id of each RequestFinished event."""
    return [e.client_request_id for e in events if isinstance(e, throttle.RequestFinished)]


async def test_every_attempt_of_a_retried_request_sends_one_id() -> None:
    """500, 500, 200: three attempts, one id, and RequestFinished records it."""
    events: list[throttle.Event] = []
    async with (
        Recorder(SERVER_ERROR, SERVER_ERROR, COMPLETION) as server,
        Throttle(server.base_url, "sk-id", retry=FAST, on_event=events.append) as client,
    ):
        await client.post("chat/completions", chat())
    assert len(server.ids) == 3
    assert len(set(server.ids)) == 1
    sent = server.ids[0]
    assert sent is not None
    assert len(sent) == 32
    assert finished_ids(events) == [sent]


async def test_different_requests_get_different_ids() -> None:
    """Five requests, five ids."""
    async with Recorder() as server, Throttle(server.base_url, "sk-id") as client:
        await asyncio.gather(*(client.post("chat/completions", chat()) for _ in range(5)))
    assert len(set(server.ids)) == 5


def test_a_fresh_id_is_the_hex_of_a_random_version_4_uuid() -> None:
    """32 hex digits that read back as a version 4, RFC 4122 UUID; no two alike."""
    made = [new_client_request_id() for _ in range(1_000)]
    for made_id in made:
        read = uuid.UUID(hex=made_id)
        assert (read.hex, read.version, read.variant) == (made_id, 4, uuid.RFC_4122)
    assert len(set(made)) == len(made)


async def test_a_callers_id_is_sent_unchanged_on_every_attempt() -> None:
    """post(headers=...) in any letter case: that id, as it is, on the 500 and on the retry."""
    events: list[throttle.Event] = []
    async with (
        Recorder(SERVER_ERROR, COMPLETION) as server,
        Throttle(server.base_url, "sk-id", retry=FAST, on_event=events.append) as client,
    ):
        await client.post("chat/completions", chat(), headers={"x-client-request-id": "Trace 42/a"})
    assert server.ids == ["Trace 42/a", "Trace 42/a"]
    assert finished_ids(events) == ["Trace 42/a"]


async def test_the_error_raised_names_the_id_the_server_saw() -> None:
    """A request that fails carries its id, to look up in the provider's logs."""
    async with Recorder(BAD_REQUEST) as server, Throttle(server.base_url, "sk-id") as client:
        with pytest.raises(APIStatusError) as caught:
            await client.post("chat/completions", chat())
    assert caught.value.client_request_id == server.ids[0]


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_a_bad_id_is_refused_before_anything_is_sent(bad: str) -> None:
    """Too long, not ASCII, a control character or empty: InvalidRequestError, nothing sent."""
    async with Recorder() as server, Throttle(server.base_url, "sk-id") as client:
        with pytest.raises(InvalidRequestError, match="X-Client-Request-Id"):
            await client.post("chat/completions", chat(), headers={"X-Client-Request-Id": bad})
    assert server.ids == []


def test_the_rules_are_the_providers_ascii_up_to_512_characters() -> None:
    """512 printable ASCII characters pass; the message names what is wrong otherwise."""
    assert check_client_request_id("~" * 512) == "~" * 512
    with pytest.raises(InvalidRequestError, match="513 characters; the limit is 512"):
        check_client_request_id("a" * 513)
    with pytest.raises(InvalidRequestError, match="character 4, U\\+00E9, is not ASCII"):
        check_client_request_id("caf\u00e9")
    with pytest.raises(InvalidRequestError, match="character 2, U\\+000A, is a control"):
        check_client_request_id("a\nb")
    with pytest.raises(InvalidRequestError, match="begin or end with a space"):
        check_client_request_id(" a")


def test_one_id_for_every_request_of_a_throttle_is_refused() -> None:
    """An id among the Throttle's headers would name every request alike: refused."""
    with pytest.raises(ConfigurationError, match="per request"):
        Throttle(headers={"X-CLIENT-REQUEST-ID": "same-for-all"})


async def test_the_openai_sdk_sends_the_callers_id_on_every_attempt() -> None:
    """extra_headers' id goes unchanged through wrap_openai, on the 500 and on the retry."""
    events: list[throttle.Event] = []
    async with (
        Recorder(SERVER_ERROR, COMPLETION) as server,
        Throttle(retry=FAST, on_event=events.append) as t,
        throttle.wrap_openai(
            openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-id"), t
        ) as sdk,
    ):
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Client-Request-Id": "sdk-trace-7"},
        )
    assert server.ids == ["sdk-trace-7", "sdk-trace-7"]
    assert finished_ids(events) == ["sdk-trace-7"]


async def test_the_openai_sdk_gives_each_call_one_id_of_its_own() -> None:
    """Without extra_headers, each call gets one id, kept across its retry."""
    async with (
        Recorder(SERVER_ERROR, COMPLETION) as server,
        Throttle(retry=FAST) as t,
        throttle.wrap_openai(
            openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-id"), t
        ) as sdk,
    ):
        for _ in range(2):
            await sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    first, retried, second = server.ids
    assert first is not None
    assert first == retried
    assert second not in (None, first)


async def test_the_openai_sdk_refuses_a_bad_id_unsent() -> None:
    """A 513-character id raises throttle's InvalidRequestError through the SDK, unsent."""
    async with (
        Recorder() as server,
        Throttle() as t,
        throttle.wrap_openai(
            openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-id"), t
        ) as sdk,
    ):
        with pytest.raises(InvalidRequestError, match="513 characters"):
            await sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Client-Request-Id": "x" * 513},
            )
    assert server.ids == []


async def test_httpx2_and_aiohttp_adapters_send_one_id_per_request() -> None:
    """A retried request through each adapter sends one id; a caller's id is kept."""
    auth = {"Authorization": "Bearer sk-id"}
    async with Recorder(SERVER_ERROR, COMPLETION) as server, Throttle(retry=FAST) as t:
        url = f"{server.base_url}/chat/completions"
        async with httpx2.AsyncClient(transport=ThrottleHttpx2Transport(t)) as client:
            await client.post(url, json=chat(), headers=auth)
            await client.post(url, json=chat(), headers={**auth, "X-Client-Request-Id": "hx"})
        async with (
            throttled_session(t, headers=auth) as session,
            session.post(url, json=chat(), headers={"X-Client-Request-Id": "aio"}) as answer,
        ):
            await answer.read()
        async with (
            aiohttp.ClientSession(headers=auth) as session,
            session.post(url, json=chat(), middlewares=(throttle_middleware(t),)) as answer,
        ):
            await answer.read()
    retried, hx, aio, generated = server.ids[0], server.ids[2], server.ids[3], server.ids[4]
    assert server.ids[:4] == [retried, retried, "hx", "aio"]
    assert retried is not None
    assert generated not in (None, retried, hx, aio)


def lines(path: Path, bodies: list[dict[str, Any]]) -> Path:
    """Write a JSONL input file."""
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    return path


def records(path: Path) -> dict[int, dict[str, Any]]:
    """The results file's records by index."""
    return {r["index"]: r for r in map(json.loads, path.read_text().splitlines())}


async def test_throttle_run_sends_and_records_one_id_per_line(tmp_path: Path) -> None:
    """A line's own id is sent unchanged; others get one; results and events record each."""
    requests = lines(
        tmp_path / "requests.jsonl",
        [
            chat(client_request_id="line-zero"),
            chat(),
            chat(client_request_id="x" * 513),
            chat(metadata={"row": 3}),
        ],
    )
    events: list[throttle.Event] = []
    async with Recorder(SERVER_ERROR, COMPLETION) as server:
        output = tmp_path / "results.jsonl"
        options = RunOptions(
            requests, output, f"{server.base_url}/chat/completions", "sk-id", max_concurrency=1
        )
        runner = JobRunner(options, show_progress=False, on_event=events.append)
        status = await runner.run()
    by_index = records(output)
    assert status == EXIT_FAILED  # line 2 only
    assert server.ids[:2] == ["line-zero", "line-zero"]  # the 500, then its retry
    assert by_index[0]["client_request_id"] == "line-zero"
    assert "client_request_id" not in by_index[0]["request"]
    assert by_index[2]["error"]["code"] == "invalid_client_request_id"
    assert by_index[2]["client_request_id"] is None
    sent = [by_index[i]["client_request_id"] for i in (0, 1, 3)]
    assert server.ids == ["line-zero", *sent]
    assert sent[1].endswith("-1")
    assert sent[2].endswith("-3")
    assert set(finished_ids(events)) == set(sent)


async def test_the_throttle_run_command_records_the_id_the_server_saw(tmp_path: Path) -> None:
    """`throttle run`, a real process: each result names the id its request carried."""
    no_model = {"messages": [{"role": "user", "content": "hi"}]}
    requests = lines(
        tmp_path / "requests.jsonl", [chat(client_request_id="cli-0"), chat(), no_model]
    )
    output = tmp_path / "results.jsonl"
    async with Recorder() as server:
        command = [sys.executable, "-m", "throttle", "run", str(requests), "-o", str(output)]
        command += ["--url", f"{server.base_url}/chat/completions", "--no-progress"]
        env = {**os.environ, "OPENAI_API_KEY": "sk-id"}
        done = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
        )
    by_index = records(output)
    assert done.returncode == EXIT_FAILED, done.stderr  # line 2 has no model
    assert by_index[0]["client_request_id"] == "cli-0"
    assert set(server.ids) == {by_index[0]["client_request_id"], by_index[1]["client_request_id"]}
    assert len(server.ids) == 2
    assert by_index[2]["error"]["type"] == "InvalidRequestError"
    assert by_index[2]["client_request_id"] is not None  # given an id, refused unsent
