"""Tests for the job progress display and summary."""

import io
import logging
from collections import Counter

import pytest

from throttle.classify import Verdict
from throttle.estimate import TokenEstimate
from throttle.events import AttemptFinished, LimitsObserved, RequestAdmitted
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.keys import BucketKey
from throttle.progress import JobTally, Progress

KEY = BucketKey("key-x", "gpt-4o-mini")


def admitted(tokens: int) -> RequestAdmitted:
    """An admission event of `tokens` tokens."""
    return RequestAdmitted(KEY, 1, TokenEstimate(tokens, 0), 0.0)


def test_events_feed_the_tally() -> None:
    """Admissions add tokens, 429 answers count, learned limits show."""
    tally = JobTally(total=10)
    progress = Progress(tally, live=False)
    progress(admitted(100))
    progress(AttemptFinished(KEY, 1, Verdict.RATE_LIMITED, 429, 0.01))
    progress(LimitsObserved(KEY, RateLimitSnapshot(tokens=LimitReading(90_000, 1_000))))
    assert (tally.tokens, tally.server_429, tally.tpm_limit) == (100, 1, 90_000)
    assert "/90,000 TPM" in progress.line()
    assert "1 x 429" in progress.line()


def test_rate_window_stays_small_whatever_the_request_rate() -> None:
    """100,000 admissions within a second or two keep one entry per second, not per request."""
    progress = Progress(JobTally(total=1), live=False)
    for _ in range(100_000):
        progress(admitted(1))
    assert len(progress._recent) <= 2
    assert progress.tokens_per_minute() > 0


def test_line_counts_earlier_results_toward_done() -> None:
    """Lines finished before this run count as done; failures are summed."""
    tally = JobTally(total=10, already_done=4, succeeded=2, failed=Counter({"X": 1}))
    assert Progress(tally, live=False).line().startswith("7/10 done, 1 failed")


def test_live_bar_redraws_one_terminal_line() -> None:
    """On a terminal the bar rewrites itself with a carriage return."""
    stream = io.StringIO()
    progress = Progress(JobTally(total=4, succeeded=2), live=True, stream=stream)
    progress.show(every=0)
    assert stream.getvalue().startswith("\r[###############               ] 2/4 done")


def test_off_a_terminal_progress_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Without a terminal a log line is written instead."""
    with caplog.at_level(logging.INFO, logger="throttle.run"):
        Progress(JobTally(total=3, succeeded=1), live=False).show(every=0)
    assert "1/3 done" in caplog.text


def test_summary_names_failures_by_type_and_the_efficiency() -> None:
    """The summary lists failures by type and compares time with the learned limit."""
    tally = JobTally(
        total=5, succeeded=3, failed=Counter({"RateLimitError": 2}), tokens=60_000, tpm_limit=60_000
    )
    summary = Progress(tally, live=False).summary()
    assert "succeeded 3, failed 2 (2 RateLimitError)" in summary
    assert "theoretical minimum 60.0s" in summary
