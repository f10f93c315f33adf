"""The real openai SDK (3.x, async) driven through throttle against the simulated API."""

import asyncio
from typing import Any

import openai
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
from throttle.testing import InFlightWatch, ModelLimits, SimulatedAPI, SimulatorConfig

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)


def sdk(sim: SimulatedAPI, t: Throttle, key: str = "sk-sdk") -> openai.AsyncOpenAI:
    """An AsyncOpenAI pointed at the simulator, wrapped by `t`, SDK retries at their default."""
    return throttle.wrap_openai(openai.AsyncOpenAI(base_url=sim.base_url, api_key=key), t)


async def drain(stream: Any, into: list[object]) -> None:
    """Read a stream to its end, keeping what arrived."""
    async for event in stream:
        into.append(event)


def fast(**overrides: Any) -> SimulatorConfig:
    """A quick simulator."""
    values: dict[str, Any] = {"latency": 0.01}
    values.update(overrides)
    return SimulatorConfig(**values)


async def test_chat_responses_and_embeddings_go_through_the_scheduler() -> None:
    """Every endpoint is admitted by throttle and reports its usage."""
    events: list[throttle.Event] = []
    async with (
        SimulatedAPI(fast()) as sim,
        Throttle(on_event=events.append) as t,
        sdk(sim, t) as client,
    ):
        chat = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )
        response = await client.responses.create(model="gpt-5", input="hi", max_output_tokens=5)
        vectors = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert chat.choices[0].message.content
    assert response.status == "completed"
    assert len(vectors.data) == 2
    admitted = [e.key.group for e in events if isinstance(e, throttle.RequestAdmitted)]
    assert admitted == ["gpt-4o-mini", "gpt-5", "text-embedding-3-small"]
    usage = [e for e in events if isinstance(e, throttle.UsageReported)]
    assert len(usage) == 3
    assert all(e.key.identity == throttle.keys.credential_identity("sk-sdk") for e in usage)


async def test_streaming_passes_chunks_through_and_records_usage() -> None:
    """A chat stream arrives chunk by chunk; the final usage chunk is reported."""
    events: list[throttle.Event] = []
    async with (
        SimulatedAPI(fast()) as sim,
        Throttle(on_event=events.append) as t,
        sdk(sim, t) as client,
    ):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(p or "" for p in pieces).split() == [f"word{i}" for i in range(5)]
    usage = [e for e in events if isinstance(e, throttle.UsageReported)]
    assert [(u.prompt_tokens, u.completion_tokens) for u in usage] == [(7, 5)]


async def test_responses_stream_completes() -> None:
    """A Responses API stream ends with response.completed, passed through."""
    async with SimulatedAPI(fast()) as sim, Throttle() as t, sdk(sim, t) as client:
        stream = await client.responses.create(
            model="gpt-5", input="hi", max_output_tokens=3, stream=True
        )
        kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_truncated_stream_is_a_failure_the_caller_sees(api: str) -> None:
    """A stream cut before its final event raises StreamTruncatedError after its chunks."""
    async with SimulatedAPI(fast()) as sim, Throttle() as t, sdk(sim, t) as client:
        sim.inject("truncate")
        stream: Any
        if api == "chat":
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=8, stream=True
            )
        else:
            stream = await client.responses.create(
                model="gpt-5", input="hi", max_output_tokens=8, stream=True
            )
        received: list[object] = []
        with pytest.raises(StreamTruncatedError, match="without its final event"):
            await drain(stream, received)
    assert received


async def test_stream_failing_before_its_first_byte_is_retried() -> None:
    """A connection dropped before the answer started is retried; the caller never knows."""
    async with SimulatedAPI(fast()) as sim, Throttle(retry=FAST) as t, sdk(sim, t) as client:
        sim.inject("drop")
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=3, stream=True
        )
        chunks = [c async for c in stream]
    assert chunks
    assert sim.stats.received == 2


async def test_upload_passes_through_counted_as_a_request() -> None:
    """A multipart audio upload reaches the server intact and is admitted for its model."""
    events: list[throttle.Event] = []
    async with (
        SimulatedAPI(fast()) as sim,
        Throttle(on_event=events.append) as t,
        sdk(sim, t) as client,
    ):
        result = await client.audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", b"RIFF" + b"\0" * 4096)
        )
    assert result.text == "transcribed 4100 bytes of speech.wav"
    admitted = [e for e in events if isinstance(e, throttle.RequestAdmitted)]
    assert [e.key.group for e in admitted] == ["whisper-1"]


async def test_get_requests_pass_through_unmetered() -> None:
    """Listing models is not rate-limited per model: no admission, straight through."""
    events: list[throttle.Event] = []
    config = fast(models={"gpt-4o": ModelLimits(rpm=10, tpm=1000)})
    async with (
        SimulatedAPI(config) as sim,
        Throttle(on_event=events.append) as t,
        sdk(sim, t) as client,
    ):
        models = [m.id async for m in await client.models.list()]
    assert models == ["gpt-4o"]
    assert not any(isinstance(e, throttle.RequestAdmitted) for e in events)


async def test_rate_limit_burst_is_absorbed() -> None:
    """Against a drained bucket, 30 concurrent SDK calls all succeed with at most two 429s."""
    config = fast(default_limits=ModelLimits(rpm=600, tpm=40_000), start_level=0.0)
    async with SimulatedAPI(config) as sim, Throttle() as t, sdk(sim, t) as client:
        results = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=30
                )
                for _ in range(30)
            )
        )
    assert len(results) == 30
    assert sim.stats.total_429 <= 2
    assert sim.stats.received == 30 + sim.stats.total_429


async def test_sdk_retries_do_not_multiply_throttles() -> None:
    """Persistent 500s: the server sees throttle's 3 attempts, not 3 x the SDK's 3."""
    async with SimulatedAPI(fast()) as sim, Throttle(retry=FAST) as t, sdk(sim, t) as client:
        sim.inject("server_error", 20)
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
            )
    assert sim.stats.received == 3
    assert caught.value.response.headers["x-should-retry"] == "false"


async def test_quota_surfaces_after_one_server_call_per_in_flight_request() -> None:
    """Quota: in-flight calls get the SDK's RateLimitError, later ones QuotaExhaustedError."""
    config = fast(latency=0.1, quota_tokens=3000)
    watch = InFlightWatch()

    async with (
        SimulatedAPI(config) as sim,
        Throttle(on_event=watch, max_in_flight=10) as t,
        sdk(sim, t) as client,
    ):
        results = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=100
                )
                for _ in range(200)
            ),
            return_exceptions=True,
        )
    sdk_quota = [r for r in results if isinstance(r, openai.RateLimitError)]
    refused = [r for r in results if isinstance(r, QuotaExhaustedError)]
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    assert len(sdk_quota) + len(refused) + len(succeeded) == 200
    assert sdk_quota
    assert all(r.code == "insufficient_quota" for r in sdk_quota)
    assert refused
    assert sim.stats.quota_errors == len(sdk_quota)
    assert watch.in_flight_when_opened is not None
    assert sim.stats.received_after_quota <= watch.in_flight_when_opened


async def test_azure_client_is_throttled_per_deployment() -> None:
    """AsyncAzureOpenAI: the deployment is the bucket, the api-key the identity."""
    events: list[throttle.Event] = []
    async with SimulatedAPI(fast()) as sim, Throttle(on_event=events.append) as t:
        azure = openai.AsyncAzureOpenAI(
            azure_endpoint=sim.base_url.removesuffix("/v1"),
            api_key="azure-key",
            api_version="2024-10-21",
        )
        async with azure, throttle.wrap_openai(azure, t) as client:
            answer = await client.chat.completions.create(
                model="my-4o", messages=MESSAGES, max_tokens=5
            )
    assert answer.model == "my-4o"
    admitted = [e for e in events if isinstance(e, throttle.RequestAdmitted)]
    assert admitted[0].key.group == "my-4o"
    assert admitted[0].key.identity == throttle.keys.credential_identity("azure-key")


async def test_wrapping_leaves_the_original_client_alone() -> None:
    """wrap_openai returns a copy; the client it was given is unchanged."""
    original = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-o")
    async with Throttle() as t, original, throttle.wrap_openai(original, t) as wrapped:
        assert wrapped._client is not original._client
    assert wrapped is not original
    assert wrapped.api_key == original.api_key


async def test_calls_slower_than_timeout_are_retried_transport_failures() -> None:
    """`Throttle(timeout=)` limits each attempt of a wrapped SDK; the SDK adds no retries."""
    async with (
        SimulatedAPI(fast(latency=1.0)) as sim,
        Throttle(retry=RetryPolicy(max_attempts=2, initial_backoff=0.01), timeout=0.2) as t,
        sdk(sim, t) as client,
    ):
        with pytest.raises(RetryExhaustedError) as caught:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
            )
    assert isinstance(caught.value.last_error, TransportError)
    assert "TimeoutError" in str(caught.value.last_error)
    assert sim.stats.received == 2
