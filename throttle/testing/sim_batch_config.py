"""What the simulated Batch API is told to do: its speed, its limits, its lost lines.

The real Batch API takes minutes to hours; a test cannot. The simulator therefore runs batches
on a simulated clock, ``time_scale`` simulated seconds to each second of the server's clock,
and every duration here is in simulated seconds. The timestamps a batch reports (created_at,
completed_at, ...) are simulated Unix seconds, so a client's view of a batch's age is the
real API's, only faster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from throttle.errors import ConfigurationError

COMPLETION_WINDOW_SECONDS = 24 * 3600.0  # "24h", the only window the real API offers


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """The simulated Batch API's speed, limits and share of lost lines.

    Attributes:
        time_scale: simulated seconds per second of the server's clock (1,000: a simulated
            quarter hour per wall second).
        validating_seconds: how long a batch stays ``validating``, in simulated seconds.
        lines_per_second: requests a batch answers per simulated second, one after another;
            the lines not answered within the 24 h completion window expire.
        finalizing_seconds: how long a batch stays ``finalizing`` (and ``cancelling``), in
            simulated seconds.
        enqueued_tokens: the enqueued-token limit of every model not in ``enqueued_by_model``,
            per organization; ``None``: unlimited.
        enqueued_by_model: the enqueued-token limit of named models.
        expired_share: the share of lines that expire (``batch_expired`` in the error file);
            a batch with an expired line ends ``expired``.
        failed_share: the share of lines answered 500 ``server_error`` (in the error file).
        seed: seeds the order of each output file and which lines expire or fail.
        max_requests: requests per input file at most.
        max_embedding_inputs: embedding inputs per input file at most.
        max_file_bytes: bytes per uploaded file at most.
    """

    time_scale: float = 1000.0
    validating_seconds: float = 60.0
    lines_per_second: float = 50.0
    finalizing_seconds: float = 60.0
    enqueued_tokens: int | None = None
    enqueued_by_model: Mapping[str, int] = field(default_factory=dict)
    expired_share: float = 0.0
    failed_share: float = 0.0
    seed: int = 0
    max_requests: int = 50_000
    max_embedding_inputs: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024

    def __post_init__(self) -> None:
        durations = (self.validating_seconds, self.finalizing_seconds)
        if not all(0 <= d < math.inf for d in durations):
            raise ConfigurationError(f"batch durations must be finite and non-negative: {self}")
        if not (0 < self.time_scale < math.inf and 0 < self.lines_per_second < math.inf):
            raise ConfigurationError(f"batch time_scale and lines_per_second must be > 0: {self}")
        shares = (self.expired_share, self.failed_share)
        if not all(0 <= s <= 1 for s in shares) or sum(shares) > 1:
            raise ConfigurationError(
                f"expired_share and failed_share must be in [0, 1] and add up to 1 at most: {self}"
            )
        limits = [1 if self.enqueued_tokens is None else self.enqueued_tokens]
        limits += self.enqueued_by_model.values()
        sizes = (self.max_requests, self.max_embedding_inputs, self.max_file_bytes)
        if min(*limits, *sizes) < 1:
            raise ConfigurationError(f"batch limits must be positive: {self}")

    def enqueued_limit(self, model: str) -> int | None:
        """Return the enqueued-token limit of ``model`` (``None``: unlimited)."""
        return self.enqueued_by_model.get(model, self.enqueued_tokens)

    def describe(self) -> str:
        """Return the batch settings on one line, e.g. ``batches: 1000x time, 50 lines/s, ...``."""
        parts = [
            f"{self.time_scale:g}x time",
            f"{self.lines_per_second:g} lines/s",
            f"validating {self.validating_seconds:g} s, finalizing {self.finalizing_seconds:g} s",
        ]
        if self.enqueued_tokens is not None:
            parts.append(f"enqueued limit {self.enqueued_tokens:,} tokens")
        parts += [f"{name} {limit:,} tokens" for name, limit in self.enqueued_by_model.items()]
        for name, share in (("expired", self.expired_share), ("failed", self.failed_share)):
            if share:
                parts.append(f"{share * 100:.3g}% {name}")
        return "batches: " + ", ".join(parts) + " (simulated seconds)"
