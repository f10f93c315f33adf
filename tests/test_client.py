"""End-to-end tests of `Throttle.post` against the simulated API on 127.0.0.1."""

import asyncio
import time
from typing import Any

import pytest

import throttle
from throttle import (
    APIStatusError,
    ClosedError,
    DeadlineExceededError,
    InvalidRequestError,
    Limits,
    RateLimitError,
    RequestTooLargeError,
    RetryExhaustedError,
    RetryPolicy,
    Throttle,
    TransportError,
)
from throttle.errors import ConfigurationError
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


def chat(max_tokens: int = 50, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A small chat body."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
    }


def config(**overrides: Any) -> SimulatorConfig:
    """A fast simulator with generous limits unless overridden."""
    values: dict[str, Any] = {
        "latency": 0.01,
        "default_limits": ModelLimits(rpm=60_000, tpm=10_000_000),
    }
    values.update(overrides)
    return SimulatorConfig(**values)


async def test_post_returns_the_decoded_answer() -> None:
    """A chat request comes back as the server's JSON, usage included."""
    async with SimulatedAPI(config()) as sim, Throttle(sim.base_url, "sk-a") as client:
        answer = await client.post("chat/completions", chat())
    assert answer["object"] == "chat.completion"
    assert answer["usage"]["prompt_tokens"] > 0


async def test_embeddings_and_responses_endpoints_work() -> None:
    """Embeddings and the Responses API go through the same scheduler."""
    async with SimulatedAPI(config()) as sim, Throttle(sim.base_url, "sk-a") as client:
        vectors = await client.post(
            "embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}
        )
        response = await client.post(
            "responses", {"model": "gpt-5", "input": "hi", "max_output_tokens": 20}
        )
    assert len(vectors["data"]) == 2
    assert response["status"] == "completed"


async def test_server_errors_are_retried_until_success() -> None:
    """Two injected 500s then success: the caller sees the success; the server saw 3 calls."""
    events: list[throttle.Event] = []
    async with (
        SimulatedAPI(config()) as sim,
        Throttle(sim.base_url, "sk-a", retry=FAST_RETRY, on_event=events.append) as client,
    ):
        sim.inject("server_error", 2)
        await client.post("chat/completions", chat())
    assert sim.stats.received == 3
    retries = [e for e in events if isinstance(e, throttle.RetryScheduled)]
    assert [r.reason for r in retries] == ["ServerError", "ServerError"]
    finished = [e for e in events if isinstance(e, throttle.RequestFinished)]
    assert finished[-1].attempts == 3
    assert finished[-1].error_type is None


async def test_dropped_connections_are_retried() -> None:
    """A connection closed without an answer is a transport error, retried."""
    async with (
        SimulatedAPI(config()) as sim,
        Throttle(sim.base_url, "sk-a", retry=FAST_RETRY) as client,
    ):
        sim.inject("drop", 1)
        answer = await client.post("chat/completions", chat())
    assert answer["object"] == "chat.completion"
    assert sim.stats.injected["drop"] == 1


async def test_retries_give_up_after_max_attempts_with_the_last_error() -> None:
    """Persistent 503s end in RetryExhaustedError carrying the server's message and id."""
    async with (
        SimulatedAPI(config()) as sim,
        Throttle(sim.base_url, "sk-a", retry=FAST_RETRY) as client,
    ):
        sim.inject("overloaded", 10)
        with pytest.raises(RetryExhaustedError) as caught:
            await client.post("chat/completions", chat())
    error = caught.value
    assert error.attempts == 4
    assert isinstance(error.last_error, APIStatusError)
    assert error.last_error.status == 503
    assert "overloaded" in str(error)
    assert error.last_error.request_id is not None
    assert error.last_error.request_id in str(error)


async def test_client_errors_are_not_retried() -> None:
    """A 401 fails on the first attempt with the server's message and request id."""
    limited = config(organizations={"sk-good": "org-1"})
    async with (
        SimulatedAPI(limited) as sim,
        Throttle(sim.base_url, "sk-bad", retry=FAST_RETRY) as client,
    ):
        with pytest.raises(APIStatusError) as caught:
            await client.post("chat/completions", chat())
    assert caught.value.status == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.attempts == 1
    assert sim.stats.received == 1


async def test_rate_limit_burst_is_absorbed() -> None:
    """Against a drained small bucket, a burst all succeeds with few 429s."""
    small = config(default_limits=ModelLimits(rpm=600, tpm=60_000), start_level=0.0)
    async with SimulatedAPI(small) as sim, Throttle(sim.base_url, "sk-a") as client:
        results = await asyncio.gather(
            *(client.post("chat/completions", chat(max_tokens=40)) for _ in range(40))
        )
    assert len(results) == 40
    assert sim.stats.succeeded == 40
    assert sim.stats.total_429 <= 2


async def test_request_too_large_for_the_server_fails_without_retry() -> None:
    """The server's "Request too large" 429 ends the request at once."""
    small = config(default_limits=ModelLimits(rpm=600, tpm=1000))
    async with SimulatedAPI(small) as sim, Throttle(sim.base_url, "sk-a") as client:
        with pytest.raises(RequestTooLargeError) as caught:
            await client.post("chat/completions", chat(max_tokens=5000))
    assert caught.value.limit == 1000
    assert sim.stats.received == 1


async def test_request_too_large_for_a_learned_bucket_is_never_sent() -> None:
    """Once the limit is known, an oversized request fails before reaching the server."""
    small = config(default_limits=ModelLimits(rpm=600, tpm=1000))
    async with SimulatedAPI(small) as sim, Throttle(sim.base_url, "sk-a") as client:
        await client.post("chat/completions", chat(max_tokens=10))
        with pytest.raises(RequestTooLargeError, match="can never be sent"):
            await client.post("chat/completions", chat(max_tokens=5000))
    assert sim.stats.received == 1


async def test_daily_limit_beyond_the_wait_budget_fails_with_rate_limit_error() -> None:
    """An RPD 429 asking for minutes of waiting fails instead of holding the job."""
    daily = config(default_limits=ModelLimits(rpm=600, tpm=100_000, rpd=1))
    policy = RetryPolicy(max_server_wait=5)
    async with SimulatedAPI(daily) as sim, Throttle(sim.base_url, "sk-a", retry=policy) as client:
        await client.post("chat/completions", chat())
        with pytest.raises(RateLimitError) as caught:
            await client.post("chat/completions", chat())
    assert caught.value.limit_type == "requests_per_day"
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 5


async def test_deadline_ends_a_request_that_cannot_be_sent_in_time() -> None:
    """A request queued behind a slow bucket fails with DeadlineExceededError on time."""
    slow = config(default_limits=ModelLimits(rpm=6, tpm=100_000), start_level=0.0)
    async with SimulatedAPI(slow) as sim, Throttle(sim.base_url, "sk-a") as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"deadline of 0\.5s"):
            await client.post("chat/completions", chat(), deadline=0.5)
        assert time.monotonic() - started < 2


async def test_azure_urls_send_the_api_key_header_and_learn_limits() -> None:
    """An Azure deployment URL authenticates with `api-key` and handles Azure's 429 body."""
    azure = config(default_limits=ModelLimits(rpm=600, tpm=30_000), start_level=0.0)
    async with SimulatedAPI(azure) as sim, Throttle(sim.azure_url("my-4o"), "azure-key") as client:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        results = await asyncio.gather(
            *(
                client.post("chat/completions", body, params={"api-version": "2024-10-21"})
                for _ in range(5)
            )
        )
    assert all(r["model"] == "my-4o" for r in results)
    assert sim.stats.rate_limited["requests"] + sim.stats.rate_limited["tokens"] <= 1


async def test_lowered_limit_is_obeyed_from_the_next_answer() -> None:
    """When the server lowers TPM mid-run, throttle paces by the new limit without 429 storms."""
    changing = config(default_limits=ModelLimits(rpm=6000, tpm=600_000))
    seen: list[float] = []

    def record(event: throttle.Event) -> None:
        if isinstance(event, throttle.LimitsObserved) and event.snapshot.tokens:
            seen.append(event.snapshot.tokens.limit)

    async with (
        SimulatedAPI(changing) as sim,
        Throttle(sim.base_url, "sk-a", on_event=record) as client,
    ):
        await client.post("chat/completions", chat())
        sim.set_limits("gpt-4o-mini", tpm=12_000)
        await asyncio.gather(
            *(client.post("chat/completions", chat(max_tokens=100)) for _ in range(10))
        )
    assert seen[0] == 600_000
    assert seen[-1] == 12_000
    assert sim.stats.total_429 <= 2


async def test_server_without_headers_runs_on_configured_limits() -> None:
    """With no rate-limit headers, the configured RPM paces requests: no 429s."""
    blind = config(
        rate_limit_headers=False,
        default_limits=ModelLimits(rpm=120, tpm=1_000_000),
        start_level=0.0,
    )
    async with (
        SimulatedAPI(blind) as sim,
        Throttle(sim.base_url, "sk-a", limits=Limits(rpm=120)) as client,
    ):
        sim_started = time.monotonic()
        await asyncio.gather(*(client.post("chat/completions", chat()) for _ in range(4)))
        elapsed = time.monotonic() - sim_started
    assert sim.stats.succeeded == 4
    assert elapsed >= 1.0  # 4 requests at 2 per second, starting empty


async def test_shared_group_models_draw_from_one_bucket() -> None:
    """Two models mapped to one group share its learned bucket."""
    shared = config(
        models={
            "a": ModelLimits(rpm=600, tpm=20_000, group="pool"),
            "b": ModelLimits(rpm=600, tpm=20_000, group="pool"),
        },
        start_level=0.0,
    )
    async with (
        SimulatedAPI(shared) as sim,
        Throttle(sim.base_url, "sk-a", groups={"a": "pool", "b": "pool"}) as client,
    ):
        await asyncio.gather(
            *(client.post("chat/completions", chat(model=m, max_tokens=60)) for m in ["a", "b"] * 6)
        )
    assert sim.stats.succeeded == 12
    assert sim.stats.total_429 <= 1
    assert client.key_for("a") == client.key_for("b")


async def test_bad_bodies_fail_alone_without_reaching_the_server() -> None:
    """A body without a model, or asking to stream, fails clearly; the others succeed."""
    async with SimulatedAPI(config()) as sim, Throttle(sim.base_url, "sk-a") as client:
        results = await asyncio.gather(
            client.post("chat/completions", {"messages": []}),
            client.post("chat/completions", {**chat(), "stream": True}),
            client.post("chat/completions", chat()),
            return_exceptions=True,
        )
    assert isinstance(results[0], InvalidRequestError)
    assert "no 'model'" in str(results[0])
    assert isinstance(results[1], InvalidRequestError)
    assert "stream" in str(results[1])
    assert isinstance(results[2], dict)
    assert sim.stats.received == 1


async def test_post_without_base_url_is_a_configuration_error() -> None:
    """A Throttle built only for `run` refuses `post` with a clear message."""
    async with Throttle() as client:
        with pytest.raises(ConfigurationError, match="base_url"):
            await client.post("chat/completions", chat())


def test_invalid_arguments_are_refused() -> None:
    """Unknown auth mode or non-positive concurrency are configuration errors."""
    with pytest.raises(ConfigurationError, match="auth"):
        Throttle(auth="basic")
    with pytest.raises(ConfigurationError):
        Throttle(max_in_flight=0)


def test_identity_is_a_hash_never_the_key() -> None:
    """The API key never appears in the identity or the repr."""
    client = Throttle("http://127.0.0.1:1/v1", "sk-secret-value")
    assert "secret" not in client.identity
    assert "secret" not in repr(client)
    assert Throttle(api_key="sk-x", identity="project-a").identity == "project-a"


def test_the_key_comes_from_the_environment_like_the_sdks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No key given: OPENAI_API_KEY (Azure: AZURE_OPENAI_API_KEY); none at all is named."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-from-env")
    openai_url = "https://api.openai.com/v1"
    azure_url = "https://acme.openai.azure.com/openai/deployments/gpt-4o"
    assert Throttle(openai_url).identity == Throttle(openai_url, "sk-from-env").identity
    assert Throttle(azure_url).identity == Throttle(azure_url, "azure-from-env").identity
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigurationError, match=r"pass api_key=\.\.\. or set OPENAI_API_KEY"):
        Throttle(openai_url)
    assert Throttle(openai_url, "").identity == "default"  # a local server without keys
    assert Throttle().identity == "default"  # run() and the adapters bring their own


async def test_closing_fails_queued_requests_and_refuses_new_ones() -> None:
    """Requests queued at close fail with ClosedError; later ones are refused unsent."""
    slow = config(default_limits=ModelLimits(rpm=6, tpm=100_000), start_level=0.0)
    async with SimulatedAPI(slow) as sim:
        client = Throttle(sim.base_url, "sk-a")
        queued = [asyncio.create_task(client.post("chat/completions", chat())) for _ in range(3)]
        await asyncio.sleep(0.3)
        await client.close()
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(r, ClosedError) for r in results), results
        received = sim.stats.received
        with pytest.raises(ClosedError, match="closed"):
            await client.post("chat/completions", chat())
        assert sim.stats.received == received


async def test_timeouts_are_transport_failures_retried_then_reported() -> None:
    """An answer slower than `timeout` is a TransportError, retried up to the attempt limit."""
    sluggish = config(latency=1.0)
    async with (
        SimulatedAPI(sluggish) as sim,
        Throttle(
            sim.base_url,
            "sk-a",
            retry=RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01),
            timeout=0.2,
        ) as client,
    ):
        with pytest.raises(RetryExhaustedError) as caught:
            await client.post("chat/completions", chat())
    assert isinstance(caught.value.last_error, TransportError)
    assert "TimeoutError" in str(caught.value.last_error)
    assert caught.value.attempts == 2
