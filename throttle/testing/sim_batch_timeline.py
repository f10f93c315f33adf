"""When a simulated batch is in which status: pure arithmetic on simulated time.

A batch validates for a fixed time, then answers its lines one after another at a fixed rate
until they are all answered or its 24 h completion window closes, then finalizes for a fixed
time. Every question (status, lines answered, timestamps) is answered from ``now`` alone, so
a batch advances without any task running: reading it is what moves it on. The one outside
fact is whether validation accepted it (the enqueued-token limit depends on the other
batches), which the owner settles before asking about any later moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A millionth of a line of slack, so that a line due exactly ``now`` counts as answered
# despite the rounding of Unix seconds in floating point.
_SLACK = 1e-6


@dataclass(slots=True)
class BatchTimeline:
    """The moments of one batch, in simulated Unix seconds.

    Attributes:
        created_at: when the batch was created.
        validated_at: when validation ends.
        lines: how many lines the batch holds.
        lines_per_second: how fast it answers them.
        finalizing_seconds: how long finalizing (and cancelling) lasts.
        window_seconds: the completion window (24 h).
        drawn_expired: whether a line was drawn to expire (the batch then ends ``expired``).
        accepted: whether validation accepted the batch; ``None`` until it is settled.
        cancel_requested_at: when a cancel arrived, if one did.
    """

    created_at: float
    validated_at: float
    lines: int
    lines_per_second: float
    finalizing_seconds: float
    window_seconds: float
    drawn_expired: bool = False
    accepted: bool | None = None
    cancel_requested_at: float | None = None

    @property
    def expires_at(self) -> float:
        """When the completion window closes."""
        return self.created_at + self.window_seconds

    @property
    def answering_ends_at(self) -> float:
        """When the last line is answered, or the window closes, whichever comes first."""
        return min(self.validated_at + self.lines / self.lines_per_second, self.expires_at)

    @property
    def reachable(self) -> int:
        """How many lines are answered before the window closes (all, unless it is too short).

        Worked out from durations, not from Unix seconds, whose floating-point rounding could
        lose the last line.
        """
        budget = self.window_seconds - (self.validated_at - self.created_at)
        return max(0, min(self.lines, math.floor(budget * self.lines_per_second + _SLACK)))

    @property
    def expires(self) -> bool:
        """Whether the batch ends ``expired``: a line was drawn to expire or was not reached."""
        return self.drawn_expired or self.reachable < self.lines

    @property
    def finished_at(self) -> float:
        """When the batch stops (completed, expired, cancelled or failed)."""
        if self.cancel_requested_at is not None:
            return self.cancel_requested_at + self.finalizing_seconds
        if not self.accepted:
            return self.validated_at
        return self.answering_ends_at + self.finalizing_seconds

    def answered(self, now: float) -> int:
        """Return how many lines were answered by ``now`` (the rest never will be if cut)."""
        if not self.accepted or now < self.validated_at:
            return 0
        cut = now if self.cancel_requested_at is None else min(now, self.cancel_requested_at)
        if cut >= self.answering_ends_at:
            return self.reachable
        due = math.floor((cut - self.validated_at) * self.lines_per_second + _SLACK)
        return max(0, min(self.reachable, due))

    def status(self, now: float) -> str:
        """Return the batch's status at ``now``.

        Raises:
            ValueError: validation's outcome is asked for before it was settled.
        """
        cancel = self.cancel_requested_at
        if cancel is not None and now >= cancel:
            return "cancelled" if now >= self.finished_at else "cancelling"
        if now < self.validated_at:
            return "validating"
        if self.accepted is None:
            raise ValueError("the batch's validation was not settled")
        if not self.accepted:
            return "failed"
        if now < self.answering_ends_at:
            return "in_progress"
        if now < self.finished_at:
            return "finalizing"
        return "expired" if self.expires else "completed"

    def timestamps(self, now: float) -> dict[str, int | None]:
        """Return the real API's ``*_at`` fields as known at ``now`` (whole seconds)."""
        status = self.status(now)
        moments: dict[str, float | None] = dict.fromkeys(
            (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        )
        moments["created_at"] = self.created_at
        moments["expires_at"] = self.expires_at
        cancel = math.inf if self.cancel_requested_at is None else self.cancel_requested_at
        if self.accepted and now >= self.validated_at and cancel > self.validated_at:
            moments["in_progress_at"] = self.validated_at
        ends = self.answering_ends_at
        if self.accepted and now >= ends and cancel >= ends:
            moments["finalizing_at"] = ends
        if status in ("cancelling", "cancelled"):
            moments["cancelling_at"] = cancel
        if status in ("cancelled", "completed", "expired"):
            moments[f"{status}_at"] = self.finished_at
        if status == "failed":
            moments["failed_at"] = self.validated_at
        return {name: None if at is None else int(at) for name, at in moments.items()}
