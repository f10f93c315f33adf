"""Prometheus metrics from throttle's events, and its queues read at each scrape.

``docs/metrics.md`` lists every metric (name, type, labels, meaning): that list is the public
contract, checked against this module by the tests. Attach an instance to a Throttle
(:meth:`PrometheusMetrics.attach`) and serve its registry with :func:`serve_metrics`.
Everything lives in the instance's own registry: no global state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from throttle.admission import KeyLoad
from throttle.classify import Verdict
from throttle.events import (
    AttemptFinished,
    BackendAvailabilityChanged,
    Event,
    EventHub,
    LimitsObserved,
    QuotaBreakerOpened,
    QuotaBreakerReset,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
    UsageReported,
)
from throttle.keys import BucketKey
from throttle.progress import Progress

DURATION_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0)
OTHER_MODELS = "other"
LoadSource = Callable[[], Mapping[BucketKey, KeyLoad]]


class Attachable(Protocol):
    """What :meth:`PrometheusMetrics.attach` needs of a :class:`throttle.Throttle`."""

    @property
    def events(self) -> EventHub:
        """Where its events are emitted."""
        ...

    def load(self) -> dict[BucketKey, KeyLoad]:
        """Its busy keys' attempts queued and in flight."""
        ...


class PrometheusMetrics:
    """Counters, gauges and histograms of everything the scheduler reports.

    Args:
        registry: where the metrics live (a fresh one by default, so two instances never
            collide).
        max_models: model (group) names that keep their own label value; later ones are
            counted under ``"other"``, so the label stays bounded.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, max_models: int = 20) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.max_models = max_models
        self._models: dict[str, str] = {}
        self._load_sources: list[LoadSource] = []
        self._job: Progress | None = None
        model = ["model"]
        self.requests = Counter(
            "throttle_requests", "Requests finished, by outcome", [*model, "outcome"], registry=r
        )
        self.attempts = Counter(
            "throttle_attempts",
            "Attempts answered (or not), by verdict",
            [*model, "verdict"],
            registry=r,
        )
        self.retries = Counter(
            "throttle_retries",
            "Retries scheduled, by the error's class",
            [*model, "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "throttle_rate_limited",
            "429 rate-limit answers, by limit",
            [*model, "limit"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "throttle_quota_breaker_open", "1 while out of quota", ["identity"], registry=r
        )
        self.estimated_tokens = Counter(
            "throttle_estimated_tokens", "Estimated tokens of admitted attempts", model, registry=r
        )
        self.inexact_estimates = Counter(
            "throttle_inexact_estimates",
            "Attempts estimated without tiktoken's BPE files",
            model,
            registry=r,
        )
        self.usage_tokens = Counter(
            "throttle_usage_tokens", "Tokens the server reported used", [*model, "kind"], registry=r
        )
        self.estimate_ratio = Histogram(
            "throttle_token_estimate_ratio",
            "Tokens reported used / tokens estimated, per request",
            model,
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.limit = Gauge(
            "throttle_learned_limit",
            "Limit per window from the headers",
            [*model, "resource"],
            registry=r,
        )
        self.remaining = Gauge(
            "throttle_remaining",
            "Remaining in the window, per the headers",
            [*model, "resource"],
            registry=r,
        )
        self.admission_wait = Histogram(
            "throttle_admission_wait_seconds",
            "Time an attempt waited for room in the buckets",
            model,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.attempt_duration = Histogram(
            "throttle_attempt_duration_seconds",
            "Time from sending an attempt to its answer",
            model,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "throttle_request_duration_seconds",
            "Time from submitting a request to its end",
            model,
            buckets=DURATION_BUCKETS,
            registry=r,
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
        r.register(_ScrapeTimeGauges(self))

    def __repr__(self) -> str:
        return f"PrometheusMetrics(models={sorted(self._models)}, registry={self.registry!r})"

    def model(self, group: str) -> str:
        """The ``model`` label of ``group``: itself, or ``"other"`` past ``max_models``."""
        label = self._models.get(group)
        if label is None:
            label = group if len(self._models) < self.max_models else OTHER_MODELS
            self._models[group] = label
        return label

    def attach(self, throttle: Attachable) -> Callable[[], None]:
        """Record ``throttle``'s events, and read its queues at each scrape.

        Returns:
            A function that stops recording its events.
        """
        self.watch_load(throttle.load)
        return throttle.events.subscribe(self)

    def watch_load(self, source: LoadSource) -> None:
        """Read ``throttle_queued`` and ``throttle_in_flight`` from ``source`` at each scrape."""
        self._load_sources.append(source)

    def watch_job(self, progress: Progress) -> None:
        """Export a ``throttle run`` job's lines and time left, read at each scrape."""
        self._job = progress

    def __call__(self, event: Event) -> None:
        """Record one event."""
        if isinstance(event, RequestAdmitted):
            model = self.model(event.key.group)
            self.estimated_tokens.labels(model).inc(event.estimate.total)
            self.admission_wait.labels(model).observe(event.waited_seconds)
            if not event.estimate.exact:
                self.inexact_estimates.labels(model).inc()
        elif isinstance(event, AttemptFinished):
            model = self.model(event.key.group)
            self.attempts.labels(model, event.verdict.value).inc()
            self.attempt_duration.labels(model).observe(event.latency_seconds)
            if event.verdict is Verdict.RATE_LIMITED:
                self.rate_limited.labels(model, event.limit or "unknown").inc()
        elif isinstance(event, RequestFinished):
            model = self.model(event.key.group)
            self.requests.labels(model, event.outcome.value).inc()
            self.request_duration.labels(model).observe(event.elapsed_seconds)
        elif isinstance(event, RetryScheduled):
            self.retries.labels(self.model(event.key.group), event.reason).inc()
        elif isinstance(event, UsageReported):
            self._usage(event)
        elif isinstance(event, LimitsObserved):
            model = self.model(event.key.group)
            for resource, reading in (
                ("requests", event.snapshot.requests),
                ("tokens", event.snapshot.tokens),
            ):
                if reading is not None:
                    self.limit.labels(model, resource).set(reading.limit)
                    self.remaining.labels(model, resource).set(reading.remaining)
        else:
            self._state(event)

    def _usage(self, event: UsageReported) -> None:
        model = self.model(event.key.group)
        self.usage_tokens.labels(model, "prompt").inc(event.prompt_tokens)
        self.usage_tokens.labels(model, "completion").inc(event.completion_tokens)
        if event.estimated_tokens:
            used = event.prompt_tokens + event.completion_tokens
            self.estimate_ratio.labels(model).observe(used / event.estimated_tokens)

    def _state(self, event: Event) -> None:
        """Record a change of state: a quota breaker, the shared backend."""
        if isinstance(event, QuotaBreakerOpened):
            self.breaker_open.labels(event.identity).set(1)
        elif isinstance(event, QuotaBreakerReset):
            self.breaker_open.labels(event.identity).set(0)
        elif isinstance(event, BackendAvailabilityChanged):
            if event.problem is not None:
                self.backend_outages.inc()
            self.backend_unavailable.set(0 if event.problem is None else 1)

    def scrape_time_metrics(self) -> Iterator[Metric]:
        """The gauges read when Prometheus scrapes: queues, and a job's progress.

        Called in the metrics server's thread: what it reads of the event loop's objects it
        copies in one step (``list(...)``), which the GIL makes atomic.
        """
        queued = GaugeMetricFamily(
            "throttle_queued", "Attempts waiting for admission", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            "throttle_in_flight", "Attempts admitted and not yet answered", labels=["model"]
        )
        totals = dict.fromkeys(list(self._models.values()), (0, 0))  # one step: thread-safe
        for source in self._load_sources:
            for key, load in source().items():
                model = self.model(key.group)
                waiting, sent = totals.get(model, (0, 0))
                totals[model] = (waiting + load.queued, sent + load.in_flight)
        for model, (waiting, sent) in sorted(totals.items()):
            queued.add_metric([model], waiting)
            in_flight.add_metric([model], sent)
        yield queued
        yield in_flight
        if self._job is not None:
            yield from _job_metrics(self._job)


def _job_metrics(progress: Progress) -> Iterator[Metric]:
    tally = progress.tally
    lines = GaugeMetricFamily("throttle_job_lines", "Input lines, by state", labels=["state"])
    for state, count in (
        ("total", tally.total),
        ("done", tally.finished),
        ("succeeded", tally.succeeded),
        ("failed", sum(list(tally.failed.values()))),
        ("skipped", tally.already_done),
    ):
        lines.add_metric([state], count)
    yield lines
    eta = progress.eta_seconds()
    if eta is not None:
        yield GaugeMetricFamily("throttle_job_eta_seconds", "Estimated seconds left", value=eta)


class _ScrapeTimeGauges(Collector):
    """Hands the registry :meth:`PrometheusMetrics.scrape_time_metrics` at each scrape."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """See :class:`prometheus_client.registry.Collector`."""
        return self._metrics.scrape_time_metrics()


def serve_metrics(metrics: PrometheusMetrics, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``metrics`` for Prometheus at ``http://host:port/metrics`` (a daemon thread)."""
    start_http_server(port, addr=host, registry=metrics.registry)
