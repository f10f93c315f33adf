"""What the metrics count, as plain numbers: updated per event, read at each scrape.

prometheus-client's own Counter and Histogram take a lock and look up a label tuple on every
update; at tens of thousands of events per second that cost a third of the scheduler's
throughput. Events all arrive on the event loop's thread, so plain ``+=`` on these objects
is enough (on plain dicts, which CPython's specialised opcodes handle fastest), and
``throttle.metrics`` turns them into metric families only when Prometheus
scrapes (copying each dict in one step, which the GIL makes atomic).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from throttle.classify import Verdict
from throttle.outcomes import RequestOutcome

DURATION_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0)
# Label values every model shows from its first event, at 0: a counter's first increase is
# then seen by rate() and increase(), which need a sample before it.
OUTCOMES = tuple(RequestOutcome)
VERDICTS = tuple(Verdict)
LIMITS = ("requests", "tokens", "daily", "slow_down", "unknown")
USAGE = ("prompt", "completion")


class Distribution:
    """A histogram's counts: one per bucket (upper bounds inclusive) and one past the last.

    Args:
        bounds: the buckets' upper bounds, ascending.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def __repr__(self) -> str:
        return f"Distribution(count={sum(self.counts)}, sum={self.total:g})"

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """Prometheus's view: ``(le, count up to le)`` pairs ending with ``+Inf``, and the sum."""
        counts, total = list(self.counts), self.total
        running, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets, total


@dataclass(slots=True)
class ModelSeries:
    """Every number kept per ``model`` label value.

    Attributes:
        requests: requests finished, by outcome.
        attempts: attempts answered (or not), by verdict.
        retries: retries scheduled, by the error's class name.
        rate_limited: 429 rate-limit answers, by the limit named.
        estimated_tokens: estimated tokens of admitted attempts.
        inexact_estimates: attempts estimated by characters.
        usage_tokens: tokens the server reported, by kind (prompt, completion).
        limits: the learned limit, by resource; ``remaining`` likewise.
        estimate_ratio, admission_wait, attempt_duration, request_duration: distributions.
    """

    requests: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0.0))
    attempts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0.0))
    retries: dict[str, float] = field(default_factory=dict)
    rate_limited: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LIMITS, 0.0))
    estimated_tokens: float = 0.0
    inexact_estimates: float = 0.0
    usage_tokens: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE, 0.0))
    limits: dict[str, float] = field(default_factory=dict)
    remaining: dict[str, float] = field(default_factory=dict)
    estimate_ratio: Distribution = field(default_factory=lambda: Distribution(RATIO_BUCKETS))
    admission_wait: Distribution = field(default_factory=lambda: Distribution(DURATION_BUCKETS))
    attempt_duration: Distribution = field(default_factory=lambda: Distribution(DURATION_BUCKETS))
    request_duration: Distribution = field(default_factory=lambda: Distribution(DURATION_BUCKETS))
