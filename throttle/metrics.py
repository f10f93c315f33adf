"""Prometheus metrics from throttle's events, and its queues read at each scrape.

``docs/metrics.md`` lists every metric (name, type, labels, meaning): that list is the public
contract, checked against this module by the tests. Attach an instance to a Throttle
(:meth:`PrometheusMetrics.attach`) and serve its registry with :func:`serve_metrics`.
Everything lives in the instance's own registry: no global state. Events update plain numbers
(``metric_series``); the metric families are built when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
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
from throttle.metric_families import gauge, job_metrics, per_model
from throttle.metric_series import ModelSeries
from throttle.progress import Progress

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
        registry: where the metrics are registered (a fresh one by default, so two
            instances never collide).
        max_models: model (group) names that keep their own label value; later ones are
            counted under ``"other"``, so the label stays bounded.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, max_models: int = 20) -> None:
        self.registry = registry or CollectorRegistry()
        self.max_models = max_models
        self.models: dict[str, ModelSeries] = {}  # by label value
        self._labels: dict[str, str] = {}  # group -> label value
        self._series: dict[str, ModelSeries] = {}  # group -> its label value's numbers
        self.breakers: dict[str, float] = {}  # identity -> 1 open, 0 reset
        self.backend_unavailable = 0.0
        self.backend_outages = 0.0
        self._load_sources: list[LoadSource] = []
        self._job: Progress | None = None
        self._record: dict[type[Any], Callable[[Any], None]] = {
            RetryScheduled: self._retried,
            UsageReported: self._used,
            LimitsObserved: self._limits,
            QuotaBreakerOpened: self._breaker,
            QuotaBreakerReset: self._breaker,
            BackendAvailabilityChanged: self._backend,
        }
        self.registry.register(_Scrape(self))

    def __repr__(self) -> str:
        return f"PrometheusMetrics(models={sorted(self.models)}, registry={self.registry!r})"

    def label(self, group: str) -> str:
        """The ``model`` label of ``group``: itself, or ``"other"`` past ``max_models``."""
        label = self._labels.get(group)
        if label is None:
            label = group if len(self.models) < self.max_models else OTHER_MODELS
            self._labels[group] = label
            self._series[group] = self.models.setdefault(label, ModelSeries())
        return label

    def series(self, group: str) -> ModelSeries:
        """The numbers kept under ``group``'s label value."""
        return self._series.get(group) or self.models[self.label(group)]

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
        """Record one event.

        The three events of every request are recorded here, inline: this runs three times
        per request on the scheduler's hot path, and each call saved is measurable
        (``benchmarks/metrics_overhead.py``). Enum members are the counters' keys as they
        are (a ``StrEnum`` is its value).
        """
        if isinstance(event, RequestAdmitted):
            series = self._series.get(event.key.group) or self.series(event.key.group)
            series.estimated_tokens += event.estimate.total
            wait = series.admission_wait
            wait.counts[bisect_left(wait.bounds, event.waited_seconds)] += 1
            wait.total += event.waited_seconds
            if not event.estimate.exact:
                series.inexact_estimates += 1
        elif isinstance(event, AttemptFinished):
            series = self._series.get(event.key.group) or self.series(event.key.group)
            series.attempts[event.verdict] += 1
            took = series.attempt_duration
            took.counts[bisect_left(took.bounds, event.latency_seconds)] += 1
            took.total += event.latency_seconds
            if event.verdict is Verdict.RATE_LIMITED:
                limit = event.limit or "unknown"
                series.rate_limited[limit] = series.rate_limited.get(limit, 0.0) + 1
        elif isinstance(event, RequestFinished):
            series = self._series.get(event.key.group) or self.series(event.key.group)
            series.requests[event.outcome] += 1
            if event.key.identity not in self.breakers:  # closed, from its first request on
                self.breakers[event.key.identity] = 0.0
            took = series.request_duration
            took.counts[bisect_left(took.bounds, event.elapsed_seconds)] += 1
            took.total += event.elapsed_seconds
        else:
            self._record[type(event)](event)

    def _retried(self, event: RetryScheduled) -> None:
        retries = self.series(event.key.group).retries
        retries[event.reason] = retries.get(event.reason, 0.0) + 1

    def _used(self, event: UsageReported) -> None:
        series = self.series(event.key.group)
        series.usage_tokens["prompt"] += event.prompt_tokens
        series.usage_tokens["completion"] += event.completion_tokens
        if event.estimated_prompt_tokens:
            series.estimate_ratio.observe(event.prompt_tokens / event.estimated_prompt_tokens)

    def _limits(self, event: LimitsObserved) -> None:
        series = self.series(event.key.group)
        for resource, reading in (
            ("requests", event.snapshot.requests),
            ("tokens", event.snapshot.tokens),
        ):
            if reading is not None:
                series.limits[resource] = reading.limit
                series.remaining[resource] = reading.remaining

    def _breaker(self, event: QuotaBreakerOpened | QuotaBreakerReset) -> None:
        self.breakers[event.identity] = 1.0 if isinstance(event, QuotaBreakerOpened) else 0.0

    def _backend(self, event: BackendAvailabilityChanged) -> None:
        if event.problem is not None:
            self.backend_outages += 1
        self.backend_unavailable = 0.0 if event.problem is None else 1.0

    def loads(self) -> dict[str, KeyLoad]:
        """Attempts queued and in flight per ``model`` label value, now (0 for idle models)."""
        totals = {label: KeyLoad(0, 0) for label in list(self.models)}
        for source in self._load_sources:
            for key, load in source().items():
                label = self.label(key.group)
                before = totals.get(label, KeyLoad(0, 0))
                totals[label] = KeyLoad(
                    before.queued + load.queued, before.in_flight + load.in_flight
                )
        return totals

    def collect(self) -> Iterator[Metric]:
        """Every metric family, as Prometheus scrapes it (called in the server's thread).

        What it reads of objects the event loop updates it copies in one step
        (``list(...)``), which the GIL makes atomic.
        """
        yield from per_model(sorted(self.models.items()))
        breakers = sorted(self.breakers.items())
        yield gauge("throttle_quota_breaker_open", "1 while out of quota", "identity", breakers)
        loads = sorted(self.loads().items())
        queued = [(label, load.queued) for label, load in loads]
        in_flight = [(label, load.in_flight) for label, load in loads]
        yield gauge("throttle_queued", "Attempts waiting for admission", "model", queued)
        yield gauge(
            "throttle_in_flight", "Attempts admitted and not yet answered", "model", in_flight
        )
        yield GaugeMetricFamily(
            "throttle_backend_unavailable",
            "1 while the shared limit state (Redis) is unreachable",
            value=self.backend_unavailable,
        )
        yield CounterMetricFamily(
            "throttle_backend_outages",
            "Times the shared limit state became unreachable",
            value=self.backend_outages,
        )
        if self._job is not None:
            yield from job_metrics(self._job)


class _Scrape(Collector):
    """Hands the registry :meth:`PrometheusMetrics.collect` at each scrape."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """See :class:`prometheus_client.registry.Collector`."""
        return self._metrics.collect()


def serve_metrics(metrics: PrometheusMetrics, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``metrics`` for Prometheus at ``http://host:port/metrics`` (a daemon thread)."""
    start_http_server(port, addr=host, registry=metrics.registry)
