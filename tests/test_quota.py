"""Tests for the quota breaker: insufficient_quota stops a credential at once."""

import asyncio
import time

import pytest

import throttle
from throttle import QuotaExhaustedError, Throttle
from throttle.testing import InFlightWatch, ModelLimits, SimulatedAPI, SimulatorConfig

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi " * 50}],
    "max_tokens": 300,
}


async def test_quota_exhausted_mid_job_fails_the_rest_at_once() -> None:
    """After insufficient_quota the rest fail within 1 s; only in-flight ones reach the server."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=60_000, tpm=5_000_000), latency=0.2, quota_tokens=60_000
    )
    watch = InFlightWatch()
    failed_at: list[float] = []
    async with (
        SimulatedAPI(config) as sim,
        Throttle(sim.base_url, "sk-q", on_event=watch, max_in_flight=64) as client,
    ):

        async def one() -> str:
            try:
                await client.post("chat/completions", BODY)
            except QuotaExhaustedError:
                failed_at.append(time.monotonic())
                return "quota"
            return "ok"

        outcomes = await asyncio.gather(*(one() for _ in range(1000)))
    assert watch.opened_at is not None
    assert watch.in_flight_when_opened is not None
    assert outcomes.count("ok") + outcomes.count("quota") == 1000
    assert outcomes.count("quota") > 500
    assert max(failed_at) - watch.opened_at < 1.0
    assert sim.stats.received_after_quota <= watch.in_flight_when_opened


async def test_open_breaker_refuses_new_requests_without_sending() -> None:
    """Once open, later requests fail before reaching the server, until reset."""
    config = SimulatorConfig(latency=0.0, quota_tokens=1)
    async with SimulatedAPI(config) as sim, Throttle(sim.base_url, "sk-q") as client:
        await client.post("chat/completions", BODY)  # charges past the 1-token budget
        with pytest.raises(QuotaExhaustedError) as first:
            await client.post("chat/completions", BODY)
        assert first.value.attempts == 1
        with pytest.raises(QuotaExhaustedError, match="exceeded your current quota") as later:
            await client.post("chat/completions", BODY)
        assert later.value.attempts == 0
        assert sim.stats.received == 2
        await client.reset_quota_breaker()
        with pytest.raises(QuotaExhaustedError):
            await client.post("chat/completions", BODY)
        assert sim.stats.received == 3


async def test_breaker_is_per_credential() -> None:
    """One key out of quota does not stop another key on the same Throttle's server."""
    config = SimulatorConfig(latency=0.0, quota_tokens=1)
    async with SimulatedAPI(config) as sim:
        async with Throttle(sim.base_url, "sk-broke") as broke:
            await broke.post("chat/completions", BODY)
            with pytest.raises(QuotaExhaustedError):
                await broke.post("chat/completions", BODY)
        async with Throttle(sim.base_url, "sk-fine") as fine:
            assert (await fine.post("chat/completions", BODY))["object"] == "chat.completion"


async def test_backoff_sleep_is_cut_short_when_the_breaker_opens() -> None:
    """A request sleeping between retries fails at once when its credential runs dry."""
    config = SimulatorConfig(latency=0.05, quota_tokens=1)
    slow_retry = throttle.RetryPolicy(initial_backoff=30, max_backoff=30)
    async with (
        SimulatedAPI(config) as sim,
        Throttle(sim.base_url, "sk-q", retry=slow_retry) as client,
    ):
        await client.post("chat/completions", BODY)
        sim.inject("server_error", 1)
        started = time.monotonic()
        sleeper = asyncio.create_task(client.post("chat/completions", BODY))
        await asyncio.sleep(0.3)  # the sleeper got its 500 and now backs off for 30 s
        with pytest.raises(QuotaExhaustedError):
            await client.post("chat/completions", BODY)
        with pytest.raises(QuotaExhaustedError):
            await sleeper
        assert time.monotonic() - started < 2
