"""What a running job shows: a live bar on a terminal, periodic log lines elsewhere, a summary.

Every figure comes from :mod:`throttle.job_figures`, where each is defined once. The live bar
is drawn by ``rich``, imported only when a bar is drawn so ``import throttle`` stays light.
"""

from __future__ import annotations

import collections
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from throttle.classify import Verdict
from throttle.events import (
    AttemptFinished,
    Event,
    LimitsObserved,
    RequestAdmitted,
    UsageReported,
)
from throttle.job_figures import (
    MIN_RATE_SECONDS,
    CompletionRate,
    Minimum,
    RateWindow,
    efficiency,
    theoretical_minimum,
)
from throttle.keys import BucketKey

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

logger = logging.getLogger("throttle.run")


@dataclass(slots=True)
class JobTally:
    """Counts of one run of a job.

    Attributes:
        total: non-blank input lines.
        already_done: lines that had a result before this run.
        succeeded: successes in this run.
        failed: errors in this run, by error type.
        admitted: attempts that left the queue (sent or about to be).
        answered: attempts that got an HTTP answer: they reached a server.
        accepted: answers that were successes: requests the server counted against RPM.
        server_429: 429 rate-limit answers seen.
        tokens: tokens charged: ``usage`` of answers, or the mean estimate for a success
            without ``usage`` (see :mod:`throttle.job_figures`).
        estimated_tokens: estimated tokens of the admitted attempts (not a server count).
        limits: per bucket, the learned ``(tpm, rpm)`` limits (``None`` where unknown).
        started: when the run started (monotonic seconds).
    """

    total: int
    already_done: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    admitted: int = 0
    answered: int = 0
    accepted: int = 0
    server_429: int = 0
    tokens: int = 0
    estimated_tokens: int = 0
    limits: dict[BucketKey, tuple[float | None, float | None]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Lines with a result, this run or before."""
        return self.already_done + self.succeeded + sum(self.failed.values())

    @property
    def learned_limits(self) -> tuple[float | None, float | None]:
        """The ``(tpm, rpm)`` limits learned, when the job used one bucket; else unknown.

        Several buckets (models, keys) have separate limits: no single minimum applies.
        """
        if len(self.limits) != 1:
            return None, None
        return next(iter(self.limits.values()))

    def minimum(self) -> Minimum | None:
        """The theoretical minimum of this run's accepted requests and tokens."""
        tpm, rpm = self.learned_limits
        return theoretical_minimum(self.tokens, self.accepted, tpm, rpm)


def _duration(seconds: float) -> str:
    return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s" if seconds >= 60 else f"{seconds:.0f}s"


class Progress:
    """Listens to scheduler events and shows how the job goes.

    Args:
        tally: the counts it reads and updates.
        live: draw a live bar (a terminal) instead of periodic log lines.
        stream: where the bar goes.
        now: the clock, monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        tally: JobTally,
        *,
        live: bool,
        stream: TextIO = sys.stderr,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tally = tally
        self.live = live
        self._stream = stream
        self._now = now
        self._charged = RateWindow()
        self._completions = CompletionRate()
        # Per bucket, what each success without usage yet was counted at.
        self._provisional: dict[BucketKey, collections.deque[int]] = {}
        self._shown_at: float | None = None
        self._bar: tuple[RichProgress, TaskID] | None = None

    def __repr__(self) -> str:
        return f"Progress({self.tally!r}, live={self.live})"

    def __call__(self, event: Event) -> None:
        """Take one scheduler event."""
        tally = self.tally
        if isinstance(event, RequestAdmitted):
            tally.admitted += 1
            tally.estimated_tokens += event.estimate.total
        elif isinstance(event, AttemptFinished) and event.status is not None:
            tally.answered += 1
            if event.verdict is Verdict.RATE_LIMITED:
                tally.server_429 += 1
            elif event.verdict is Verdict.SUCCESS:
                tally.accepted += 1
                # Counted at the mean estimate until its usage arrives (right after, or at
                # the end of a stream); a success without usage stays at the estimate.
                guess = tally.estimated_tokens // max(tally.admitted, 1)
                self._provisional.setdefault(event.key, collections.deque()).append(guess)
                self._charge(guess)
        elif isinstance(event, UsageReported):
            pending = self._provisional.get(event.key)
            guess = pending.popleft() if pending else 0
            self._charge(event.prompt_tokens + event.completion_tokens - guess)
        elif isinstance(event, LimitsObserved):
            snapshot = event.snapshot
            tpm, rpm = tally.limits.get(event.key, (None, None))
            tally.limits[event.key] = (
                snapshot.tokens.limit if snapshot.tokens is not None else tpm,
                snapshot.requests.limit if snapshot.requests is not None else rpm,
            )

    def _charge(self, tokens: int) -> None:
        self.tally.tokens += tokens
        self._charged.add(self._now(), tokens)

    def tokens_per_minute(self) -> float | None:
        """Tokens charged per minute over the last minute; ``None`` early in the run."""
        return self._charged.per_minute(self._now(), self.tally.started)

    def eta_seconds(self) -> float | None:
        """Seconds left at the recent completion rate; ``None`` until there is a rate."""
        now, tally = self._now(), self.tally
        self._completions.observe(now, tally.finished)
        return self._completions.eta_seconds(now, tally.total - tally.finished)

    def _rate(self) -> str:
        rate = self.tokens_per_minute()
        if rate is None:
            return f"TPM after {MIN_RATE_SECONDS:.0f}s"
        tpm, _ = self.tally.learned_limits
        if not tpm:
            return f"{rate:,.0f} TPM"
        over = " (burst)" if rate > tpm else ""
        return f"{rate:,.0f}/{tpm:,.0f} TPM{over}"

    def line(self) -> str:
        """One line: done/failed/total, tokens per minute against the limit, 429s, ETA."""
        tally = self.tally
        failed = sum(tally.failed.values())
        eta = self.eta_seconds()
        return (
            f"{tally.finished:,}/{tally.total:,} done, {failed:,} failed, {self._rate()}, "
            f"{tally.server_429} x 429, ETA {'?' if eta is None else _duration(eta)}"
        )

    def show(self, *, every: float) -> None:
        """Draw the bar (live) or log a line, at most once per ``every`` seconds."""
        now = self._now()
        self._completions.observe(now, self.tally.finished)
        if self._shown_at is not None and now - self._shown_at < every:
            return
        self._shown_at = now
        if self.live:
            self._draw()
        else:
            logger.info("%s", self.line())

    def _draw(self) -> None:
        if self._bar is None:
            # Imported here: only a terminal needs rich, and `import throttle` stays light.
            from rich.console import Console  # noqa: PLC0415
            from rich.progress import BarColumn, TextColumn  # noqa: PLC0415
            from rich.progress import Progress as RichProgress  # noqa: PLC0415

            console = Console(file=self._stream, force_terminal=True)
            bar = RichProgress(
                BarColumn(), TextColumn("{task.description}"), console=console, auto_refresh=False
            )
            bar.start()
            self._bar = (bar, bar.add_task("", total=max(self.tally.total, 1)))
        bar, task = self._bar
        bar.update(task, completed=self.tally.finished, description=self.line())
        bar.refresh()

    def close(self) -> None:
        """Stop the live bar, leaving its last state on screen."""
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self._now() - self.tally.started

    def summary(self) -> str:
        """The final report: outcomes, attempts, tokens charged, time, efficiency."""
        self.close()
        tally = self.tally
        elapsed = self.elapsed()
        failures = ", ".join(f"{count} {kind}" for kind, count in tally.failed.most_common())
        return "\n".join(
            [
                f"succeeded {tally.succeeded:,}, failed {sum(tally.failed.values()):,}"
                + (f" ({failures})" if failures else "")
                + (f", {tally.already_done:,} done before" if tally.already_done else ""),
                f"attempts {tally.admitted:,}, answered {tally.answered:,} "
                f"({tally.server_429} x 429), tokens charged {tally.tokens:,}, "
                f"elapsed {elapsed:.1f}s",
                limits_line(tally.minimum(), elapsed, "learned"),
            ]
        )


def limits_line(minimum: Minimum | None, elapsed: float, whose: str) -> str:
    """Describe the theoretical minimum and efficiency of a run, or why there is none.

    Args:
        minimum: from :func:`throttle.job_figures.theoretical_minimum`.
        elapsed: the run's duration, seconds.
        whose: which limits: ``"learned"`` (from headers) or ``"configured"``.

    Returns:
        One line of text.
    """
    if minimum is None:
        return f"no {whose} limit: no theoretical minimum"
    head = (
        f"{whose} limit {minimum.limit:,.0f} {minimum.binding}: "
        f"theoretical minimum {minimum.seconds:.1f}s"
    )
    share = efficiency(minimum, elapsed)
    if share is None:
        return f"{head}, limit not reached (faster than the minimum: burst allowance)"
    return f"{head}, efficiency {share:.0%}"
