"""What the ``throttle`` logger says while a job runs: limits, 429s, retries, the breaker."""

from __future__ import annotations

import logging

import pytest

from throttle import QuotaExhaustedError, Throttle
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

KEY = "sk-diagnostics-0123456789abcdef"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def spend_the_quota(client: Throttle) -> None:
    """Send until the simulated organization's quota runs out (it raises)."""
    for _ in range(20):
        await client.post("chat/completions", BODY)


async def test_limits_429s_retries_and_the_breaker_are_logged_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each shows once, naming the key by its hash; DEBUG adds each retry with its wait."""
    caplog.set_level(logging.DEBUG, logger="throttle")
    config = SimulatorConfig(
        latency=0.0,
        start_level=0.0,
        default_limits=ModelLimits(rpm=600, tpm=100_000),
        quota_tokens=200,
    )
    async with SimulatedAPI(config) as sim, Throttle(sim.base_url, KEY) as client:
        sim.inject("server_error")
        for _ in range(3):
            await client.post("chat/completions", BODY)
        with pytest.raises(QuotaExhaustedError):
            await spend_the_quota(client)
    said = caplog.text
    assert "429 on " in said
    assert "limit): admitting nothing on it for" in said
    assert said.count("limits on ") == 1  # the same limits again are not repeated
    assert "600 requests, 100,000 tokens per window" in said
    assert "failed (ServerError): retrying in" in said
    assert "is out of quota" in said
    assert KEY[:12] not in said
