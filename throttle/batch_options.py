"""How a job runs through the Batch API: file sizes, the enqueued limit, retries, polling."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from throttle.batch_split import MAX_EMBEDDING_INPUTS, MAX_FILE_BYTES, MAX_REQUESTS, FileLimits
from throttle.errors import ConfigurationError

DEFAULT_MAX_LINES = 100_000


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How :class:`throttle.batch_executor.BatchExecutor` runs a job.

    Attributes:
        max_requests: requests per batch file (the API allows 50,000).
        max_embedding_inputs: embedding inputs per file (the API allows 50,000).
        max_bytes: bytes per file (the API allows 200 MB).
        enqueued_tokens: every model's enqueued-token limit, in estimated tokens, when known;
            ``None``: learned from the first batch the API fails over it.
        enqueued_by_model: the limits of named models, over ``enqueued_tokens``.
        max_lines: lines held at once, waiting for their batches (the executor's
            ``capacity``: ``throttle run`` reads no further ahead, which bounds memory).
        max_attempts: batches a line may go into: a line that expired, met a 5xx, or whose
            batch stopped before running it goes into a later batch until this many.
        poll_initial: seconds between the first polls of a batch, and after each change of
            its status.
        poll_max: the most seconds between two polls (the interval grows by ``poll_growth``
            while the status stays the same).
        poll_growth: how much the interval grows after each poll without news.
        gather_seconds: a partial file is sent once no new line arrived for this many
            seconds (full files go at once).
        metadata: labels for every batch created (up to 14 pairs; throttle adds its own two).
    """

    max_requests: int = MAX_REQUESTS
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS
    max_bytes: int = MAX_FILE_BYTES
    enqueued_tokens: int | None = None
    enqueued_by_model: Mapping[str, int] = field(default_factory=dict)
    max_lines: int = DEFAULT_MAX_LINES
    max_attempts: int = 3
    poll_initial: float = 5.0
    poll_max: float = 60.0
    poll_growth: float = 1.5
    gather_seconds: float = 0.5
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = (self.max_requests, self.max_embedding_inputs, self.max_bytes, self.max_lines)
        if min(counts) < 1 or self.max_attempts < 1:
            raise ConfigurationError(f"batch sizes and attempts must be at least 1: {self}")
        limits = (self.enqueued_tokens, *self.enqueued_by_model.values())
        if any(limit is not None and limit < 1 for limit in limits):
            raise ConfigurationError(f"enqueued-token limits must be at least 1: {self}")
        seconds = (self.poll_initial, self.poll_max, self.gather_seconds)
        if not all(0 <= s < math.inf for s in seconds) or self.poll_initial > self.poll_max:
            raise ConfigurationError(
                f"need 0 <= poll_initial <= poll_max and gather_seconds >= 0, finite: {self}"
            )
        if not 1 <= self.poll_growth < math.inf:
            raise ConfigurationError(f"poll_growth must be at least 1: {self}")
        if len(self.metadata) > 14:
            raise ConfigurationError("batch metadata holds 16 pairs; throttle uses 2 of them")

    @property
    def file_limits(self) -> FileLimits:
        """What one batch file may hold."""
        return FileLimits(self.max_requests, self.max_embedding_inputs, self.max_bytes)

    def next_poll(self, interval: float | None, changed: bool) -> float:
        """Return the seconds until a batch's next poll.

        Args:
            interval: the interval before the poll just made (``None``: none made yet).
            changed: whether that poll found a new status.
        """
        if interval is None or changed:
            return self.poll_initial
        return min(self.poll_max, max(interval, self.poll_initial) * self.poll_growth)
