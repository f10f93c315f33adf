"""What the simulated API saw: counts that tests and benchmarks check throttle against."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any


@dataclasses.dataclass(slots=True)
class BatchStats:
    """What the simulated Files and Batch APIs saw.

    Attributes:
        requests: requests to each Files or Batch API endpoint, e.g. ``"POST /v1/files"`` or
            ``"GET /v1/batches/{id}"``, refused ones included.
        refused: those answered 4xx.
        files_uploaded: batch input files accepted.
        bytes_uploaded: their bytes.
        lines_uploaded: their requests.
        batches_created: batches created.
    """

    requests: Counter[str] = dataclasses.field(default_factory=Counter)
    refused: int = 0
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    lines_uploaded: int = 0
    batches_created: int = 0

    @property
    def total_requests(self) -> int:
        """Every request to the Files and Batch APIs."""
        return sum(self.requests.values())

    def as_dict(self) -> dict[str, Any]:
        """Return the stats as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["requests"] = dict(self.requests)
        data["total_requests"] = self.total_requests
        return data


@dataclasses.dataclass(slots=True)
class SimulatorStats:
    """What the simulated server saw. Times are ``time.monotonic()`` seconds.

    Requests to the Files and Batch APIs are counted apart, in ``batch``: the counts above it
    are those of calls to a model (online), which batches never touch.

    Attributes:
        received: requests that reached the server.
        succeeded: requests answered with a success.
        rate_limited: 429 rate_limit_exceeded answers, by limit type.
        too_large: 429 "Request too large" answers.
        quota_errors: 429 insufficient_quota answers.
        injected: injected faults, by kind (a truncation or a spike counts once applied: to
            a stream, to a request the buckets admitted).
        abandoned: requests whose client closed the connection before their answer was
            ready (it gave up waiting during a latency spike); never counted as successes.
        answered_by_user: for requests whose body names a ``user`` (an end-user id the real
            API accepts on chat, responses and embeddings), the ``x-request-id`` of each
            successful answer, by that ``user``: tests tie attempts to logical requests with
            it. Empty when no body names one.
        rejected: 400/401 answers.
        charged_tokens: tokens charged against TPM by successful admissions.
        first_request_at: when the first request arrived.
        last_success_at: when the last success was answered.
        first_quota_error_at: when the first insufficient_quota answer was sent.
        received_after_quota: requests that arrived after that.
        batch: what the Files and Batch APIs saw.
    """

    received: int = 0
    succeeded: int = 0
    rate_limited: Counter[str] = dataclasses.field(default_factory=Counter)
    too_large: int = 0
    quota_errors: int = 0
    injected: Counter[str] = dataclasses.field(default_factory=Counter)
    abandoned: int = 0
    answered_by_user: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    rejected: int = 0
    charged_tokens: int = 0
    first_request_at: float | None = None
    last_success_at: float | None = None
    first_quota_error_at: float | None = None
    received_after_quota: int = 0
    batch: BatchStats = dataclasses.field(default_factory=BatchStats)

    @property
    def total_429(self) -> int:
        """Every 429 rate_limit_exceeded answer (request-too-large and quota excluded)."""
        return sum(self.rate_limited.values())

    def as_dict(self) -> dict[str, Any]:
        """Return the stats as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["rate_limited"] = dict(self.rate_limited)
        data["injected"] = dict(self.injected)
        data["total_429"] = self.total_429
        data["batch"] = self.batch.as_dict()
        return data
