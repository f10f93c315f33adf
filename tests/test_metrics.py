"""Tests for the Prometheus metrics fed by scheduler events."""

import socket
import urllib.request

from prometheus_client import generate_latest

from throttle import Throttle
from throttle.metrics import PrometheusMetrics, serve_metrics
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def test_a_request_shows_in_every_metric() -> None:
    """Outcome, attempt verdicts, tokens, usage and learned limits are all recorded."""
    metrics = PrometheusMetrics()
    config = SimulatorConfig(latency=0.0, default_limits=ModelLimits(rpm=100, tpm=10_000))
    async with SimulatedAPI(config) as sim, Throttle(sim.base_url, "sk-m", on_event=metrics) as t:
        sim.inject("server_error")
        await t.post("chat/completions", BODY)
    text = generate_latest(metrics.registry).decode()
    assert 'throttle_requests_total{group="gpt-4o-mini",outcome="success"} 1.0' in text
    assert 'throttle_attempts_total{group="gpt-4o-mini",verdict="server_error"} 1.0' in text
    assert 'throttle_attempts_total{group="gpt-4o-mini",verdict="success"} 1.0' in text
    assert 'throttle_learned_limit{group="gpt-4o-mini",resource="tokens"} 10000.0' in text
    assert 'throttle_usage_tokens_total{group="gpt-4o-mini",kind="completion"} 5.0' in text
    assert "throttle_queue_wait_seconds_count" in text


def test_metrics_are_served_over_http() -> None:
    """serve_metrics exposes the registry at /metrics on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = PrometheusMetrics()
    serve_metrics(metrics, port)
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert b"throttle_requests_total" in response.read()
