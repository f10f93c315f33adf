"""Tests for the Prometheus metrics fed by scheduler events and read at each scrape."""

import asyncio
import socket
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest

from throttle import BucketKey, ErrorDetails, Throttle
from throttle.admission import KeyLoad
from throttle.classify import Verdict
from throttle.errors import (
    APIStatusError,
    ClosedError,
    DeadlineExceededError,
    QuotaExhaustedError,
    RateLimitError,
    RetryExhaustedError,
    ServerError,
    StreamTruncatedError,
)
from throttle.events import AttemptFinished, RequestFinished, UsageReported
from throttle.metric_series import Distribution
from throttle.metrics import PrometheusMetrics, serve_metrics
from throttle.outcomes import RequestOutcome, outcome_of, rate_limit_kind
from throttle.progress import JobTally, Progress
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
KEY = BucketKey("key-hash", "gpt-4o")


def exported(metrics: PrometheusMetrics) -> str:
    """The text Prometheus would scrape."""
    return generate_latest(metrics.registry).decode()


async def test_a_request_shows_in_every_metric() -> None:
    """Outcome, verdicts, retries, tokens, usage, ratio, limits and durations are recorded."""
    metrics = PrometheusMetrics()
    config = SimulatorConfig(latency=0.0, default_limits=ModelLimits(rpm=100, tpm=10_000))
    async with SimulatedAPI(config) as sim, Throttle(sim.base_url, "sk-m") as t:
        metrics.attach(t)
        sim.inject("server_error")
        await t.post("chat/completions", BODY)
    text = exported(metrics)
    assert 'throttle_requests_total{model="gpt-4o-mini",outcome="success"} 1.0' in text
    assert 'throttle_attempts_total{model="gpt-4o-mini",verdict="server_error"} 1.0' in text
    assert 'throttle_attempts_total{model="gpt-4o-mini",verdict="success"} 1.0' in text
    assert 'throttle_retries_total{model="gpt-4o-mini",reason="ServerError"} 1.0' in text
    assert 'throttle_learned_limit{model="gpt-4o-mini",resource="tokens"} 10000.0' in text
    assert 'throttle_usage_tokens_total{kind="completion",model="gpt-4o-mini"} 5.0' in text
    assert 'throttle_token_estimate_ratio_count{model="gpt-4o-mini"} 1.0' in text
    assert 'throttle_admission_wait_seconds_bucket{le="0.001",model="gpt-4o-mini"}' in text
    assert 'throttle_request_duration_seconds_bucket{le="600.0",model="gpt-4o-mini"}' in text
    assert 'throttle_queued{model="gpt-4o-mini"} 0.0' in text


def test_every_error_ends_in_one_bounded_outcome() -> None:
    """Each error class maps to the outcome a dashboard shows; unknown ones to other_error."""
    details = ErrorDetails(429, "rate_limit_exceeded", "requests", "slow")
    cases = {
        None: RequestOutcome.SUCCESS,
        RateLimitError(details): RequestOutcome.RATE_LIMITED,
        QuotaExhaustedError(details): RequestOutcome.QUOTA_EXHAUSTED,
        ServerError(ErrorDetails(500, None, None, "boom")): RequestOutcome.SERVER_ERROR,
        APIStatusError(ErrorDetails(400, None, None, "bad")): RequestOutcome.CLIENT_ERROR,
        StreamTruncatedError("cut"): RequestOutcome.TRANSPORT_ERROR,
        RetryExhaustedError(
            ServerError(ErrorDetails(500, None, None, "")), 3
        ): RequestOutcome.GAVE_UP,
        DeadlineExceededError(1.0, 2, None): RequestOutcome.GAVE_UP,
        ClosedError("closed"): RequestOutcome.CANCELLED,
        asyncio.CancelledError(): RequestOutcome.CANCELLED,
        KeyError("the caller's own bug"): RequestOutcome.OTHER_ERROR,
    }
    assert {repr(e): outcome_of(e) for e in cases} == {repr(e): o for e, o in cases.items()}


def test_a_429_names_the_limit_it_hit() -> None:
    """requests, tokens, daily, slow_down, or unknown when the server did not say."""

    def kind(code: str, limit_type: str | None) -> str:
        details = ErrorDetails(429, code, "requests", "")
        return rate_limit_kind(RateLimitError(details, limit_type=limit_type))

    assert kind("rate_limit_exceeded", "tokens") == "tokens"
    assert kind("rate_limit_exceeded", "requests") == "requests"
    assert kind("rate_limit_exceeded", "requests_per_day") == "daily"
    assert kind("slow_down", None) == "slow_down"
    assert kind("rate_limit_exceeded", None) == "unknown"


def test_429s_are_counted_by_limit() -> None:
    """A rate-limited attempt adds to throttle_rate_limited_total with its limit."""
    metrics = PrometheusMetrics()
    metrics(AttemptFinished(KEY, 1, Verdict.RATE_LIMITED, 429, 0.1, None, "tokens"))
    metrics(AttemptFinished(KEY, 2, Verdict.RATE_LIMITED, 429, 0.1))
    text = exported(metrics)
    assert 'throttle_rate_limited_total{limit="tokens",model="gpt-4o"} 1.0' in text
    assert 'throttle_rate_limited_total{limit="unknown",model="gpt-4o"} 1.0' in text


def test_models_past_the_limit_fold_into_other() -> None:
    """With max_models=2 the third model's requests count under model="other"."""
    metrics = PrometheusMetrics(max_models=2)
    for group in ("gpt-4o", "gpt-4o-mini", "ft:gpt-4o:acme:1", "ft:gpt-4o:acme:2"):
        metrics(RequestFinished(BucketKey("k", group), 1, None, 0.1))
    text = exported(metrics)
    assert 'throttle_requests_total{model="other",outcome="success"} 2.0' in text
    assert "ft:gpt-4o" not in text


def test_queues_are_read_at_each_scrape_and_summed_per_model() -> None:
    """Two sources (two Throttles) with the same model add up; an idle model shows 0."""
    metrics = PrometheusMetrics()
    metrics(RequestFinished(BucketKey("k", "idle-model"), 1, None, 0.1))
    metrics.watch_load(lambda: {KEY: KeyLoad(queued=5, in_flight=2)})
    metrics.watch_load(lambda: {BucketKey("other-key", "gpt-4o"): KeyLoad(1, 1)})
    text = exported(metrics)
    assert 'throttle_queued{model="gpt-4o"} 6.0' in text
    assert 'throttle_in_flight{model="gpt-4o"} 3.0' in text
    assert 'throttle_queued{model="idle-model"} 0.0' in text


def test_a_job_exports_its_lines_and_time_left() -> None:
    """Throttle run's tally becomes throttle_job_lines by state and throttle_job_eta_seconds."""
    metrics = PrometheusMetrics()
    tally = JobTally(total=100, already_done=40, succeeded=10)
    tally.failed["ServerError"] = 5
    clock = [0.0]
    progress = Progress(tally, live=False, now=lambda: clock[0])
    progress.eta_seconds()  # a first sample: the ETA needs a rate over a few seconds
    tally.succeeded, clock[0] = 20, 5.0
    metrics.watch_job(progress)
    text = exported(metrics)
    for state, count in (("total", 100), ("done", 65), ("succeeded", 20), ("failed", 5)):
        assert f'throttle_job_lines{{state="{state}"}} {count:.1f}' in text
    assert 'throttle_job_lines{state="skipped"} 40.0' in text
    assert "throttle_job_eta_seconds " in text


def test_the_estimate_ratio_is_prompt_tokens_counted_over_estimated() -> None:
    """A prompt counted 50 where 100 were estimated lands in the 0.5 bucket (output aside)."""
    metrics = PrometheusMetrics()
    metrics(UsageReported(KEY, 50, 400, 100))
    metrics(UsageReported(KEY, 30, 20))  # no estimate known: no ratio
    text = exported(metrics)
    assert 'throttle_token_estimate_ratio_bucket{le="0.5",model="gpt-4o"} 1.0' in text
    assert 'throttle_token_estimate_ratio_count{model="gpt-4o"} 1.0' in text


def test_two_instances_on_their_own_registries_do_not_collide() -> None:
    """No global state: two PrometheusMetrics, or one on a registry passed in, coexist."""
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    PrometheusMetrics()
    assert "throttle_queued" in generate_latest(registry).decode()


def test_metrics_are_served_over_http() -> None:
    """serve_metrics exposes the registry at /metrics on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = PrometheusMetrics()
    serve_metrics(metrics, port)
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert b"throttle_queued" in response.read()


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    """Prometheus buckets are "less than or equal": 0.5 is in le=0.5, 0.51 is not."""
    distribution = Distribution((0.5, 1.0))
    for value in (0.5, 0.51, 7.0):
        distribution.observe(value)
    buckets, total = distribution.cumulative()
    assert buckets == [("0.5", 1.0), ("1.0", 2.0), ("+Inf", 3.0)]
    assert total == 8.01


def test_a_models_counters_start_at_zero_for_every_known_label_value() -> None:
    """So rate() sees a model's first 429 or first failure: it needs a sample before it."""
    metrics = PrometheusMetrics()
    metrics(RequestFinished(KEY, 1, None, 0.1))
    text = exported(metrics)
    assert 'throttle_rate_limited_total{limit="slow_down",model="gpt-4o"} 0.0' in text
    assert 'throttle_requests_total{model="gpt-4o",outcome="quota_exhausted"} 0.0' in text
    assert 'throttle_attempts_total{model="gpt-4o",verdict="server_error"} 0.0' in text
    assert 'throttle_quota_breaker_open{identity="key-hash"} 0.0' in text
