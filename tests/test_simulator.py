"""Tests that the simulated API behaves like the real one where throttle depends on it."""

import asyncio
import collections
import dataclasses
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from throttle import ConfigurationError, parse_duration, parse_rate_limit_headers
from throttle.testing import (
    Faults,
    LimitChange,
    ModelLimits,
    SimulatedAPI,
    SimulatorConfig,
)

AUTH = {"Authorization": "Bearer sk-sim"}


def chat(max_tokens: int = 10, **extra: Any) -> dict[str, Any]:
    """A chat body."""
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x" * 40}],
        "max_tokens": max_tokens,
        **extra,
    }


async def post(
    sim: SimulatedAPI, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST raw JSON and return status, headers and decoded body."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base_url}/{path}", json=body, headers=headers or AUTH) as response,
    ):
        text = await response.text()
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = text
        return response.status, {k.lower(): v for k, v in response.headers.items()}, decoded


async def test_success_carries_real_rate_limit_headers() -> None:
    """Limit, remaining and Go-style reset headers for requests and tokens."""
    config = SimulatorConfig(latency=0, default_limits=ModelLimits(rpm=100, tpm=10_000))
    async with SimulatedAPI(config) as sim:
        status, headers, body = await post(sim, "chat/completions", chat())
    assert status == 200
    snapshot = parse_rate_limit_headers(headers)
    assert snapshot is not None
    assert snapshot.requests is not None
    assert snapshot.tokens is not None
    assert (snapshot.requests.limit, snapshot.requests.remaining) == (100, 99)
    charged = body["usage"]["prompt_tokens"] + 10
    assert snapshot.tokens.remaining == 10_000 - charged
    assert parse_duration(headers["x-ratelimit-reset-tokens"]) == pytest.approx(
        charged / 10_000 * 60, abs=0.01
    )
    assert headers["x-request-id"].startswith("req_")


async def test_server_counts_tokens_by_characters_not_tiktoken() -> None:
    """40 characters are 10 prompt tokens plus 4 framing: the server's own arithmetic."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        _, _, body = await post(sim, "chat/completions", chat())
    assert body["usage"]["prompt_tokens"] == 14


async def test_drained_bucket_answers_429_with_the_real_body() -> None:
    """start_level 0: the first request meets an empty requests bucket."""
    config = SimulatorConfig(
        latency=0, start_level=0.0, default_limits=ModelLimits(rpm=60, tpm=10_000)
    )
    async with SimulatedAPI(config) as sim:
        status, headers, body = await post(sim, "chat/completions", chat())
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert "on requests per min (RPM): Limit 60, Used 60, Requested 1." in body["error"]["message"]
    assert "Please try again in 1s." in body["error"]["message"]
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert sim.stats.rate_limited["requests"] == 1


async def test_token_limit_429_names_tpm_and_counts_the_request() -> None:
    """Tokens short but requests available: a TPM 429 that still uses up a request."""
    config = SimulatorConfig(latency=0, default_limits=ModelLimits(rpm=60, tpm=100))
    async with SimulatedAPI(config) as sim:
        await post(sim, "chat/completions", chat(max_tokens=70))
        status, headers, body = await post(sim, "chat/completions", chat(max_tokens=70))
    assert status == 429
    assert "tokens per min (TPM)" in body["error"]["message"]
    assert headers["x-ratelimit-remaining-requests"] == "58"


async def test_request_too_large_and_daily_limit_bodies() -> None:
    """Oversized requests and exhausted daily limits get their own 429 messages."""
    config = SimulatorConfig(latency=0, default_limits=ModelLimits(rpm=60, tpm=100, rpd=1))
    async with SimulatedAPI(config) as sim:
        _, _, too_large = await post(sim, "chat/completions", chat(max_tokens=500))
        await post(sim, "chat/completions", chat())
        _, _, daily = await post(sim, "chat/completions", chat())
    assert too_large["error"]["message"].startswith("Request too large for gpt-4o-mini")
    assert "Limit 100, Requested 514" in too_large["error"]["message"]
    assert "requests per day (RPD)" in daily["error"]["message"]


async def test_quota_budget_turns_into_insufficient_quota() -> None:
    """Past the token budget every request gets the billing 429."""
    async with SimulatedAPI(SimulatorConfig(latency=0, quota_tokens=20)) as sim:
        first, _, _ = await post(sim, "chat/completions", chat())
        second, _, body = await post(sim, "chat/completions", chat())
        await post(sim, "chat/completions", chat())
    assert (first, second) == (200, 429)
    assert body["error"]["code"] == "insufficient_quota"
    assert sim.stats.received_after_quota == 1


async def test_azure_deployment_urls_use_api_key_and_azure_429s() -> None:
    """Azure paths take the model from the deployment and answer 429 Azure-style."""
    config = SimulatorConfig(latency=0, start_level=0.0)
    async with (
        SimulatedAPI(config) as sim,
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.azure_url('dep')}/chat/completions?api-version=1",
            json={"messages": []},
            headers={"api-key": "k"},
        ) as response,
    ):
        body = await response.json()
        headers = response.headers
    assert response.status == 429
    assert body["error"]["code"] == "429"
    assert "retry-after-ms" in headers


async def test_unknown_key_is_401_and_bad_json_is_400() -> None:
    """Authentication and parsing failures use the real error shapes."""
    config = SimulatorConfig(latency=0, organizations={"sk-good": "org-1"})
    async with SimulatedAPI(config) as sim:
        status, _, body = await post(
            sim, "chat/completions", chat(), {"Authorization": "Bearer sk-bad"}
        )
        no_model, _, _ = await post(
            sim, "chat/completions", {"messages": []}, {"Authorization": "Bearer sk-good"}
        )
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    assert no_model == 400


async def test_chat_stream_ends_with_done_and_optional_usage() -> None:
    """A streamed chat completion has a finish_reason, usage if asked, and [DONE]."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        _, headers, text = await post(
            sim, "chat/completions", chat(stream=True, stream_options={"include_usage": True})
        )
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 10
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "stop"
    assert headers["content-type"].startswith("text/event-stream")


async def test_truncated_stream_lacks_its_final_event() -> None:
    """An injected truncation ends the stream without finish_reason or [DONE]."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        sim.inject("truncate")
        _, _, chat_text = await post(sim, "chat/completions", chat(stream=True))
        sim.inject("truncate")
        _, _, responses_text = await post(
            sim, "responses", {"model": "gpt-5", "input": "hi", "stream": True}
        )
    assert "[DONE]" not in chat_text
    assert '"finish_reason": "stop"' not in chat_text
    assert "response.completed" not in responses_text
    assert sim.stats.injected["truncate"] == 2


async def test_responses_stream_ends_with_response_completed() -> None:
    """The Responses API streams typed events ending in response.completed."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        _, _, text = await post(sim, "responses", {"model": "gpt-5", "input": "hi", "stream": True})
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"


async def test_injected_server_errors_and_random_faults() -> None:
    """Scripted 500/503 come first; seeded random faults are repeatable."""
    config = SimulatorConfig(latency=0, faults=Faults(server_error=0.5, seed=7))
    async with SimulatedAPI(config) as sim:
        sim.inject("overloaded")
        first, _, body = await post(sim, "chat/completions", chat())
        statuses = [(await post(sim, "chat/completions", chat()))[0] for _ in range(20)]
    assert first == 503
    assert "overloaded" in body["error"]["message"]
    assert 3 <= statuses.count(500) <= 17
    assert sim.stats.injected["server_error"] == statuses.count(500)
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject("meteor")


async def test_spike_answers_late_while_the_client_waits() -> None:
    """A latency spike shorter than the client's patience delays a normal success."""
    config = SimulatorConfig(latency=0, faults=Faults(spike_seconds=0.2))
    async with SimulatedAPI(config) as sim:
        sim.inject("spike")
        started = time.monotonic()
        status, _, _ = await post(sim, "chat/completions", chat())
        elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed >= 0.2
    assert (sim.stats.injected["spike"], sim.stats.succeeded, sim.stats.abandoned) == (1, 1, 0)


async def test_spike_beyond_the_client_timeout_is_abandoned_not_answered() -> None:
    """A client that times out during a spike leaves; the server counts no success for it."""
    config = SimulatorConfig(latency=0, faults=Faults(spike_seconds=30.0))
    started = time.monotonic()
    async with SimulatedAPI(config) as sim:
        sim.inject("spike")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
            with pytest.raises(TimeoutError):
                await session.post(
                    f"{sim.base_url}/chat/completions", json=chat(user="u"), headers=AUTH
                )
        for _ in range(50):  # the server notices the closed connection within a poll
            if sim.stats.abandoned:
                break
            await asyncio.sleep(0.02)
    assert time.monotonic() - started < 5
    assert (sim.stats.injected["spike"], sim.stats.abandoned, sim.stats.succeeded) == (1, 1, 0)
    assert sim.stats.answered_by_user == {}


async def test_stopping_the_server_ends_an_answer_held_by_a_spike() -> None:
    """A spike still holding an answer does not keep the server from stopping."""
    config = SimulatorConfig(latency=0, faults=Faults(spike_seconds=30.0))
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with SimulatedAPI(config) as sim:
            sim.inject("spike")
            waiting = asyncio.ensure_future(
                session.post(f"{sim.base_url}/chat/completions", json=chat(), headers=AUTH)
            )
            await asyncio.sleep(0.1)
        with pytest.raises(aiohttp.ClientError):
            await waiting
    assert time.monotonic() - started < 5


async def outcomes_of(faults: Faults, requests: int) -> list[str]:
    """What each of ``requests`` streamed chat requests, sent one by one, met."""
    seen = []
    async with SimulatedAPI(SimulatorConfig(latency=0, faults=faults)) as sim:
        for _ in range(requests):
            try:
                status, _, text = await post(sim, "chat/completions", chat(stream=True))
            except aiohttp.ClientError:
                seen.append("drop")
                continue
            if status != 200:
                seen.append(str(status))
            else:
                seen.append("ok" if "[DONE]" in text else "truncate")
    return seen


async def test_random_faults_are_drawn_per_attempt_and_repeat_with_their_seed() -> None:
    """Each request draws afresh at the configured rates; the same seed, the same sequence."""
    faults = Faults(
        server_error=0.2, overloaded=0.2, drop=0.1, truncate=0.2, spike=0.1, spike_seconds=0.001
    )
    first = await outcomes_of(faults, 200)
    again = await outcomes_of(faults, 200)
    other = await outcomes_of(dataclasses.replace(faults, seed=1), 200)
    assert first == again
    assert first != other
    counts = collections.Counter(first)
    assert set(counts) == {"ok", "500", "503", "drop", "truncate"}
    assert 20 <= counts["500"] <= 60  # 40 expected
    assert 20 <= counts["truncate"] <= 60


@pytest.mark.parametrize(
    "faults",
    [
        {"server_error": 1.5},
        {"drop": -0.1},
        {"server_error": 0.6, "truncate": 0.6},
        {"spike": float("nan")},
        {"spike_seconds": -1.0},
        {"spike_seconds": float("inf")},
    ],
)
def test_fault_rates_must_be_probabilities_that_add_up_to_one_at_most(
    faults: dict[str, float],
) -> None:
    """Rates outside [0, 1], summing past 1, or a negative or endless spike are refused."""
    with pytest.raises(ConfigurationError):
        Faults(**faults)  # type: ignore[arg-type]


async def test_successes_are_recorded_by_the_bodys_user() -> None:
    """answered_by_user lists the request ids of successes only, per ``user`` marker."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        sim.inject("server_error")
        failed, _, _ = await post(sim, "chat/completions", chat(user="alice"))
        status, headers, _ = await post(sim, "chat/completions", chat(user="alice"))
        await post(sim, "chat/completions", chat())
    assert (failed, status) == (500, 200)
    assert sim.stats.answered_by_user == {"alice": [headers["x-request-id"]]}


async def test_dropped_connection_gives_the_client_no_answer() -> None:
    """A drop fault closes the connection; the client sees a connection error."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        sim.inject("drop")
        with pytest.raises(aiohttp.ClientError):
            await post(sim, "chat/completions", chat())


async def test_limit_changes_apply_at_their_time() -> None:
    """A scheduled change lowers the limit reported in later headers."""
    config = SimulatorConfig(latency=0, changes=[LimitChange(0.2, "gpt-4o-mini", tpm=5_000)])
    async with SimulatedAPI(config) as sim:
        _, before, _ = await post(sim, "chat/completions", chat())
        await asyncio.sleep(0.25)
        _, after, _ = await post(sim, "chat/completions", chat())
    assert before["x-ratelimit-limit-tokens"] == "1000000"
    assert after["x-ratelimit-limit-tokens"] == "5000"


async def test_shared_group_models_share_one_pool() -> None:
    """Two models in one group see one remaining-requests counter."""
    config = SimulatorConfig(
        latency=0,
        models={
            "a": ModelLimits(rpm=100, tpm=100_000, group="g"),
            "b": ModelLimits(rpm=100, tpm=100_000, group="g"),
        },
    )
    async with SimulatedAPI(config) as sim:
        await post(sim, "chat/completions", {**chat(), "model": "a"})
        _, headers, _ = await post(sim, "chat/completions", {**chat(), "model": "b"})
    assert headers["x-ratelimit-remaining-requests"] == "98"


async def test_embeddings_answer_one_vector_per_input() -> None:
    """Embeddings return deterministic vectors of the asked dimension."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        _, _, body = await post(
            sim,
            "embeddings",
            {"model": "text-embedding-3-small", "input": ["a", "b", "c"], "dimensions": 4},
        )
    assert [len(item["embedding"]) for item in body["data"]] == [4, 4, 4]


async def test_stats_endpoint_reports_counts() -> None:
    """GET /_stats gives the counters as JSON, for pipelines in other processes."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim, aiohttp.ClientSession() as s:
        await post(sim, "chat/completions", chat())
        async with s.get(sim.base_url.replace("/v1", "/_stats")) as response:
            stats = await response.json()
    assert stats["received"] == 1
    assert stats["succeeded"] == 1
    assert stats["batch"]["total_requests"] == 0  # the Files and Batch APIs count apart


async def test_unknown_path_answers_404_invalid_url_in_the_real_shape() -> None:
    """A typo, a missing endpoint or a wrong method gets OpenAI's 404, not a completion."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        typo = await post(sim, "chat/completion", chat())
        bare, _, _ = await post(sim, "", chat())
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sim.base_url}/chat/completions", headers=AUTH) as response,
        ):
            wrong_method = response.status
    status, headers, body = typo
    assert status == 404
    assert body == {
        "error": {
            "message": "Invalid URL (POST /v1/chat/completion)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert headers["x-request-id"].startswith("req_")
    assert (bare, wrong_method) == (404, 404)
    assert sim.stats.succeeded == 0
    assert sim.stats.rejected == 3


async def test_azure_unknown_operation_answers_azure_404() -> None:
    """Under a deployment only real operations answer; others get Azure's 404 body."""
    async with (
        SimulatedAPI(SimulatorConfig(latency=0)) as sim,
        aiohttp.ClientSession() as session,
    ):
        key = {"api-key": "k"}
        url = f"{sim.azure_url('dep')}/chat/completion?api-version=1"
        async with session.post(url, json={"messages": []}, headers=key) as response:
            typo = response.status, await response.json()
        url = f"{sim.azure_url('dep')}/embeddings?api-version=1"
        async with session.post(url, json={"input": "hi"}, headers=key) as response:
            embedded = response.status, await response.json()
    assert typo == (404, {"error": {"code": "404", "message": "Resource not found"}})
    assert embedded[0] == 200
    assert embedded[1]["model"] == "dep"


@pytest.mark.parametrize(
    ("path", "body", "message", "param"),
    [
        ("chat/completions", {"model": "m"}, "Missing required parameter: 'messages'.", "messages"),
        ("chat/completions", {"messages": []}, "you must provide a model parameter", None),
        ("embeddings", {"model": "m"}, "Missing required parameter: 'input'.", "input"),
        ("responses", {"model": "m"}, "Missing required parameter: 'input'.", "input"),
        ("completions", {"model": "m"}, "Missing required parameter: 'prompt'.", "prompt"),
        (
            "chat/completions",
            {"model": "m", "messages": "hi"},
            "Invalid type for 'messages': expected an array, but got a string instead.",
            "messages",
        ),
        ("chat/completions", [chat()], "The request body must be a JSON object.", None),
    ],
)
async def test_body_missing_a_required_field_answers_400_naming_it(
    path: str, body: Any, message: str, param: str | None
) -> None:
    """The 400 invalid_request_error names what the endpoint needed and did not get."""
    async with SimulatedAPI(SimulatorConfig(latency=0)) as sim:
        status, _, answer = await post(sim, path, body)
    assert status == 400
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["message"] == message
    assert answer["error"]["param"] == param


async def test_upload_without_a_file_answers_400_naming_it() -> None:
    """An audio transcription without its file is refused, naming 'file'."""
    form = aiohttp.FormData({"model": "whisper-1"})
    async with (
        SimulatedAPI(SimulatorConfig(latency=0)) as sim,
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base_url}/audio/transcriptions", data=form, headers=AUTH) as response,
    ):
        body = await response.json()
    assert response.status == 400
    assert body["error"]["param"] == "file"
    assert body["error"]["code"] == "missing_required_parameter"


async def test_refused_request_does_not_consume_rate_limit() -> None:
    """404s and 400s are answered before the buckets: the next good request sees them full."""
    config = SimulatorConfig(latency=0, default_limits=ModelLimits(rpm=2, tpm=1_000))
    async with SimulatedAPI(config) as sim:
        refused = [
            (await post(sim, "chat/completion", chat()))[0],
            (await post(sim, "chat/completions", {"model": "gpt-4o-mini"}))[0],
            (await post(sim, "embeddings", {"model": "gpt-4o-mini"}))[0],
        ]
        status, headers, _ = await post(sim, "chat/completions", chat())
    assert refused == [404, 400, 400]
    assert status == 200
    assert headers["x-ratelimit-remaining-requests"] == "1"
    assert sim.stats.total_429 == 0


def test_config_describes_the_limits_in_force() -> None:
    """One plain line: default and per-model limits, start level, headers, quota."""
    config = SimulatorConfig(
        models={"gpt-4o": ModelLimits(rpm=500, tpm=30_000, group="4o-pool")},
        start_level=0.0,
        rate_limit_headers=False,
        quota_tokens=1_000,
    )
    assert config.describe() == (
        "limits: default RPM 3,000, TPM 1,000,000; gpt-4o RPM 500, TPM 30,000 (group 4o-pool)"
        " | start level 0%, rate-limit headers off, retry-after off, quota 1,000 tokens per"
        " organization"
    )


def test_config_describes_its_faults_when_it_has_some() -> None:
    """The limits line ends with the fault rates, in percent, and the spike's length."""
    config = SimulatorConfig(faults=Faults(server_error=0.05, spike=0.01, spike_seconds=1.5))
    assert config.describe().endswith(
        "retry-after off, faults 5% server_error, 1% spike (1.5 s) (seed 0)"
    )


def test_simulate_prints_the_limits_in_force_at_start() -> None:
    """`throttle simulate` prints its URL, then the limits line, before serving."""
    command = [sys.executable, "-m", "throttle.cli", "simulate", "--port", "0"]
    command += ["--rpm", "100", "--model", "tiny:10:1000", "--start-level", "0.5"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            first, second = process.stdout.readline(), process.stdout.readline()
            process.terminate()
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
    assert "listening on http://127.0.0.1:" in first
    assert second.startswith("limits: default RPM 100, TPM 1,000,000; tiny RPM 10, TPM 1,000")
    assert "start level 50%, rate-limit headers on" in second
