"""The metrics exported are exactly those docs/metrics.md documents: names, types, labels."""

from __future__ import annotations

from prometheus_client import generate_latest

from tests.metric_names import documented_metrics
from throttle import BucketKey, TokenEstimate
from throttle.admission import KeyLoad
from throttle.classify import Verdict
from throttle.events import (
    AttemptFinished,
    BackendAvailabilityChanged,
    LimitsObserved,
    QuotaBreakerOpened,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
    UsageReported,
)
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.keys import credential_identity
from throttle.metrics import PrometheusMetrics
from throttle.progress import JobTally, Progress

CANARY = "sk-canary-not-a-real-key-0123"


def busy_metrics() -> PrometheusMetrics:
    """Metrics that saw every kind of event, a job and a queue: every series exists."""
    metrics = PrometheusMetrics()
    key = BucketKey(credential_identity(CANARY), "gpt-4o")
    snapshot = RateLimitSnapshot(LimitReading(100, 50), LimitReading(1000, 500))
    for event in (
        RequestAdmitted(key, 1, TokenEstimate(prompt=10, completion=5, exact=False), 0.1),
        AttemptFinished(key, 1, Verdict.RATE_LIMITED, 429, 0.2, "req_1", "tokens"),
        RetryScheduled(key, 1, 0.5, "RateLimitError"),
        UsageReported(key, 10, 5, 15),
        LimitsObserved(key, snapshot),
        RequestFinished(key, 2, None, 1.0),
        QuotaBreakerOpened(key.identity, "You exceeded your current quota"),
        BackendAvailabilityChanged("Redis at redis://127.0.0.1:1 is unreachable"),
    ):
        metrics(event)
    metrics.watch_load(lambda: {key: KeyLoad(3, 2)})
    tally, clock = JobTally(total=10, succeeded=2), [0.0]
    progress = Progress(tally, live=False, now=lambda: clock[0])
    progress.eta_seconds()  # a first sample: the ETA needs a rate over a few seconds
    tally.succeeded, clock[0] = 4, 5.0
    metrics.watch_job(progress)
    return metrics


def test_every_exported_metric_is_documented_with_its_type_and_labels() -> None:
    """Names, types and label names match docs/metrics.md's table, both ways."""
    exported: dict[str, tuple[str, frozenset[str]]] = {}
    for family in busy_metrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {label for s in family.samples for label in s.labels if label != "le"}
        exported[name] = (family.type, frozenset(labels))
    assert exported == {
        metric.name: (metric.kind, metric.labels) for metric in documented_metrics().values()
    }


def test_no_api_key_reaches_a_label_or_the_metric_text() -> None:
    """The credential shows as its hash: no part of the canary key is in the scrape."""
    text = generate_latest(busy_metrics().registry).decode()
    assert CANARY[:12] not in text
    assert f'identity="{credential_identity(CANARY)}"' in text
