"""What a running job shows: a live bar on a terminal, periodic log lines elsewhere, a summary."""

from __future__ import annotations

import collections
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from throttle.classify import Verdict
from throttle.events import AttemptFinished, Event, LimitsObserved, RequestAdmitted

logger = logging.getLogger("throttle.run")
RATE_WINDOW_SECONDS = 60.0


@dataclass(slots=True)
class JobTally:
    """Counts of one run of a job.

    Attributes:
        total: non-blank input lines.
        already_done: lines that had a result before this run.
        succeeded: successes in this run.
        failed: errors in this run, by error type.
        server_429: 429 rate-limit answers seen.
        tokens: estimated tokens of the requests sent.
        tpm_limit: the tokens-per-minute limit learned from headers.
        started: when the run started (monotonic seconds).
    """

    total: int
    already_done: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    server_429: int = 0
    tokens: int = 0
    tpm_limit: float | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Lines with a result, this run or before."""
        return self.already_done + self.succeeded + sum(self.failed.values())


class Progress:
    """Listens to scheduler events and shows how the job goes.

    Args:
        tally: the counts it reads and updates.
        live: draw a live bar (a terminal) instead of periodic log lines.
        stream: where the bar goes.
    """

    def __init__(self, tally: JobTally, *, live: bool, stream: TextIO = sys.stderr) -> None:
        self.tally = tally
        self.live = live
        self._stream = stream
        # Tokens sent per whole second: at most 61 entries, whatever the request rate.
        self._recent: collections.deque[list[int]] = collections.deque()
        self._shown_at = 0.0

    def __repr__(self) -> str:
        return f"Progress({self.tally!r}, live={self.live})"

    def __call__(self, event: Event) -> None:
        """Take one scheduler event."""
        if isinstance(event, RequestAdmitted):
            second = int(time.monotonic())
            if self._recent and self._recent[-1][0] == second:
                self._recent[-1][1] += event.estimate.total
            else:
                self._recent.append([second, event.estimate.total])
            self.tally.tokens += event.estimate.total
        elif isinstance(event, AttemptFinished) and event.verdict is Verdict.RATE_LIMITED:
            self.tally.server_429 += 1
        elif isinstance(event, LimitsObserved) and event.snapshot.tokens is not None:
            self.tally.tpm_limit = event.snapshot.tokens.limit

    def tokens_per_minute(self) -> float:
        """Tokens sent over the last minute (or since the start, when shorter), per minute."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_SECONDS:
            self._recent.popleft()
        span = min(RATE_WINDOW_SECONDS, max(now - self.tally.started, 1e-3))
        return sum(tokens for _, tokens in self._recent) * 60 / span

    def line(self) -> str:
        """One line: done/failed/total, tokens per minute against the limit, 429s, ETA."""
        tally = self.tally
        failed = sum(tally.failed.values())
        rate = self.tokens_per_minute()
        limit = f"/{tally.tpm_limit:,.0f}" if tally.tpm_limit else ""
        return (
            f"{tally.finished:,}/{tally.total:,} done, {failed:,} failed, "
            f"{rate:,.0f}{limit} TPM, {tally.server_429} x 429, ETA {self._eta()}"
        )

    def eta_seconds(self) -> float | None:
        """Seconds left at this run's pace so far; ``None`` before a line of this run ended."""
        tally = self.tally
        this_run = tally.succeeded + sum(list(tally.failed.values()))
        left = tally.total - tally.finished
        if left <= 0:
            return 0.0
        if this_run == 0:
            return None
        return (time.monotonic() - tally.started) / this_run * left

    def _eta(self) -> str:
        seconds = self.eta_seconds()
        if seconds is None:
            return "?"
        return f"{seconds / 60:.0f}m{seconds % 60:02.0f}s" if seconds >= 60 else f"{seconds:.0f}s"

    def show(self, *, every: float) -> None:
        """Draw the bar (live) or log a line, at most once per ``every`` seconds."""
        now = time.monotonic()
        if now - self._shown_at < every:
            return
        self._shown_at = now
        if self.live:
            done = self.tally.finished / max(self.tally.total, 1)
            bar = "#" * int(done * 30)
            self._stream.write(f"\r[{bar:<30}] {self.line()}\x1b[K")
            self._stream.flush()
        else:
            logger.info("%s", self.line())

    def summary(self) -> str:
        """The final report: outcomes, 429s, tokens, time, efficiency against the limit."""
        tally = self.tally
        elapsed = time.monotonic() - tally.started
        failures = ", ".join(f"{count} {kind}" for kind, count in tally.failed.most_common())
        lines = [
            f"succeeded {tally.succeeded:,}, failed {sum(tally.failed.values()):,}"
            + (f" ({failures})" if failures else "")
            + (f", {tally.already_done:,} done before" if tally.already_done else ""),
            f"429s {tally.server_429}, tokens sent {tally.tokens:,}, elapsed {elapsed:.1f}s",
        ]
        if tally.tpm_limit:
            minimum = tally.tokens / tally.tpm_limit * 60
            lines.append(
                f"learned limit {tally.tpm_limit:,.0f} TPM: theoretical minimum "
                f"{minimum:.1f}s, efficiency {minimum / max(elapsed, 1e-9):.0%}"
            )
        if self.live:
            self._stream.write("\n")
        return "\n".join(lines)
