"""Prometheus metrics from throttle's events.

Subscribe an instance to a Throttle (``Throttle(on_event=metrics)`` or
``t.events.subscribe(metrics)``) and serve the registry with :func:`serve_metrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from throttle.events import (
    AttemptFinished,
    BackendAvailabilityChanged,
    Event,
    LimitsObserved,
    QuotaBreakerOpened,
    QuotaBreakerReset,
    RequestAdmitted,
    RequestFinished,
    UsageReported,
)


class PrometheusMetrics:
    """Counters, gauges and histograms of everything the scheduler reports.

    Args:
        registry: where the metrics live (a fresh one by default, so two instances never
            collide).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "throttle_requests", "Requests finished, by outcome", ["group", "outcome"], registry=r
        )
        self.attempts = Counter(
            "throttle_attempts", "Attempts answered, by verdict", ["group", "verdict"], registry=r
        )
        self.estimated_tokens = Counter(
            "throttle_estimated_tokens",
            "Estimated tokens of admitted attempts",
            ["group"],
            registry=r,
        )
        self.inexact_estimates = Counter(
            "throttle_inexact_estimates",
            "Attempts estimated without tiktoken's BPE files",
            ["group"],
            registry=r,
        )
        self.usage_tokens = Counter(
            "throttle_usage_tokens",
            "Tokens the server reported used",
            ["group", "kind"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "throttle_queue_wait_seconds", "Time queued for admission", ["group"], registry=r
        )
        self.latency = Histogram(
            "throttle_attempt_latency_seconds", "Time to an answer", ["group"], registry=r
        )
        self.limit = Gauge(
            "throttle_learned_limit",
            "Limit per window from the headers",
            ["group", "resource"],
            registry=r,
        )
        self.remaining = Gauge(
            "throttle_remaining",
            "Remaining in the window, per the headers",
            ["group", "resource"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "throttle_quota_breaker_open", "1 while out of quota", ["identity"], registry=r
        )
        self.backend_unavailable = Gauge(
            "throttle_backend_unavailable",
            "1 while the shared limit state (Redis) is unreachable",
            registry=r,
        )
        self.backend_outages = Counter(
            "throttle_backend_outages",
            "Times the shared limit state became unreachable",
            registry=r,
        )

    def __repr__(self) -> str:
        return f"PrometheusMetrics(registry={self.registry!r})"

    def __call__(self, event: Event) -> None:
        """Record one event."""
        if isinstance(event, RequestAdmitted):
            group = event.key.group
            self.estimated_tokens.labels(group).inc(event.estimate.total)
            self.queue_wait.labels(group).observe(event.waited_seconds)
            if not event.estimate.exact:
                self.inexact_estimates.labels(group).inc()
        elif isinstance(event, AttemptFinished):
            self.attempts.labels(event.key.group, event.verdict.value).inc()
            self.latency.labels(event.key.group).observe(event.latency_seconds)
        elif isinstance(event, RequestFinished):
            outcome = event.error_type or "success"
            self.requests.labels(event.key.group, outcome).inc()
        elif isinstance(event, UsageReported):
            self.usage_tokens.labels(event.key.group, "prompt").inc(event.prompt_tokens)
            self.usage_tokens.labels(event.key.group, "completion").inc(event.completion_tokens)
        elif isinstance(event, LimitsObserved):
            for resource, reading in (
                ("requests", event.snapshot.requests),
                ("tokens", event.snapshot.tokens),
            ):
                if reading is not None:
                    self.limit.labels(event.key.group, resource).set(reading.limit)
                    self.remaining.labels(event.key.group, resource).set(reading.remaining)
        elif isinstance(event, QuotaBreakerOpened):
            self.breaker_open.labels(event.identity).set(1)
        elif isinstance(event, QuotaBreakerReset):
            self.breaker_open.labels(event.identity).set(0)
        elif isinstance(event, BackendAvailabilityChanged):
            if event.problem is not None:
                self.backend_outages.inc()
            self.backend_unavailable.set(0 if event.problem is None else 1)


def serve_metrics(metrics: PrometheusMetrics, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``metrics`` for Prometheus at ``http://host:port/metrics`` (a daemon thread)."""
    start_http_server(port, addr=host, registry=metrics.registry)
