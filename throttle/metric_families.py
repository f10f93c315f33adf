"""Metric families built at scrape time from the numbers ``metric_series`` keeps.

Names, types and labels follow ``docs/metrics.md`` (the public contract).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from throttle.metric_series import Distribution, ModelSeries
from throttle.progress import Progress


def gauge(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]
) -> GaugeMetricFamily:
    """A gauge with one label, one sample per ``(label value, value)``."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for label_value, value in values:
        family.add_metric([label_value], value)
    return family


def _by_kind(
    name: str,
    documentation: str,
    kind: str,
    models: list[tuple[str, ModelSeries]],
    counts: Callable[[ModelSeries], Mapping[str, float]],
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["model", kind])
    for label, series in models:
        for value_of_kind, count in sorted(counts(series).items()):
            family.add_metric([label, value_of_kind], count)
    return family


def _histogram(
    name: str,
    documentation: str,
    models: list[tuple[str, ModelSeries]],
    distribution: Callable[[ModelSeries], Distribution],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["model"])
    for label, series in models:
        buckets, total = distribution(series).cumulative()
        family.add_metric([label], buckets, total)
    return family


def per_model(models: list[tuple[str, ModelSeries]]) -> Iterator[Metric]:
    """The families with a ``model`` label."""
    yield _by_kind(
        "throttle_requests",
        "Requests finished, by outcome",
        "outcome",
        models,
        lambda s: s.requests,
    )
    yield _by_kind(
        "throttle_attempts",
        "Attempts answered (or not), by verdict",
        "verdict",
        models,
        lambda s: s.attempts,
    )
    yield _by_kind(
        "throttle_retries",
        "Retries scheduled, by the error's class",
        "reason",
        models,
        lambda s: s.retries,
    )
    yield _by_kind(
        "throttle_rate_limited",
        "429 rate-limit answers, by limit",
        "limit",
        models,
        lambda s: s.rate_limited,
    )
    yield _by_kind(
        "throttle_usage_tokens",
        "Tokens the server reported used",
        "kind",
        models,
        lambda s: s.usage_tokens,
    )
    estimated = CounterMetricFamily(
        "throttle_estimated_tokens", "Estimated tokens of admitted attempts", labels=["model"]
    )
    inexact = CounterMetricFamily(
        "throttle_inexact_estimates",
        "Attempts estimated without tiktoken's BPE files",
        labels=["model"],
    )
    limit = GaugeMetricFamily(
        "throttle_learned_limit", "Limit per window from the headers", labels=["model", "resource"]
    )
    remaining = GaugeMetricFamily(
        "throttle_remaining",
        "Remaining in the window, per the headers",
        labels=["model", "resource"],
    )
    for label, series in models:
        estimated.add_metric([label], series.estimated_tokens)
        inexact.add_metric([label], series.inexact_estimates)
        for resource, value in sorted(series.limits.items()):
            limit.add_metric([label, resource], value)
        for resource, value in sorted(series.remaining.items()):
            remaining.add_metric([label, resource], value)
    yield from (estimated, inexact, limit, remaining)
    yield _histogram(
        "throttle_token_estimate_ratio",
        "Tokens reported used / tokens estimated, per request",
        models,
        lambda s: s.estimate_ratio,
    )
    yield _histogram(
        "throttle_admission_wait_seconds",
        "Time an attempt waited for room in the buckets",
        models,
        lambda s: s.admission_wait,
    )
    yield _histogram(
        "throttle_attempt_duration_seconds",
        "Time from sending an attempt to its answer",
        models,
        lambda s: s.attempt_duration,
    )
    yield _histogram(
        "throttle_request_duration_seconds",
        "Time from submitting a request to its end",
        models,
        lambda s: s.request_duration,
    )


def job_metrics(progress: Progress) -> Iterator[Metric]:
    """A ``throttle run`` job's lines by state, and its time left once known."""
    tally = progress.tally
    lines = [
        ("total", tally.total),
        ("done", tally.finished),
        ("succeeded", tally.succeeded),
        ("failed", sum(list(tally.failed.values()))),
        ("skipped", tally.already_done),
    ]
    yield gauge("throttle_job_lines", "Input lines, by state", "state", lines)
    eta = progress.eta_seconds()
    if eta is not None:
        yield GaugeMetricFamily("throttle_job_eta_seconds", "Estimated seconds left", value=eta)
