"""Tests for the job progress display, its figures and the summary."""

import io
import json
import logging
import socket
from collections import Counter
from pathlib import Path

import pytest

from throttle.classify import Verdict
from throttle.estimate import TokenEstimate
from throttle.events import (
    AttemptFinished,
    LimitsObserved,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
    UsageReported,
)
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.job_figures import CompletionRate, efficiency, theoretical_minimum
from throttle.keys import BucketKey
from throttle.progress import JobTally, Progress
from throttle.run_options import RunOptions
from throttle.runner import JobRunner
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

KEY = BucketKey("key-x", "gpt-4o-mini")


class FakeTime:
    """A clock the test moves by hand, monotonic seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """The time now."""
        return self.now


def admitted(tokens: int) -> RequestAdmitted:
    """An admission event of `tokens` tokens."""
    return RequestAdmitted(KEY, 1, TokenEstimate(tokens, 0), 0.0)


def answered(verdict: Verdict = Verdict.SUCCESS, status: int | None = 200) -> AttemptFinished:
    """An attempt that got an answer (`status` None: none arrived)."""
    return AttemptFinished(KEY, 1, verdict, status, 0.01)


def limits(tpm: float | None, rpm: float | None = None) -> LimitsObserved:
    """Headers that name these limits."""
    tokens = LimitReading(tpm, tpm) if tpm else None
    requests = LimitReading(rpm, rpm) if rpm else None
    return LimitsObserved(KEY, RateLimitSnapshot(requests=requests, tokens=tokens))


def progress_at(clock: FakeTime, total: int = 10) -> Progress:
    """A log-line progress on `clock`, started now."""
    return Progress(JobTally(total=total, started=clock.now), live=False, now=clock)


def test_events_feed_the_tally() -> None:
    """Admissions, answers, usage, 429s and learned limits each land in their own count."""
    progress = Progress(JobTally(total=10), live=False)
    progress(admitted(100))
    progress(answered())
    progress(UsageReported(KEY, 70, 20))
    progress(admitted(100))
    progress(answered(Verdict.RATE_LIMITED, 429))
    progress(limits(90_000, 500))
    tally = progress.tally
    assert (tally.admitted, tally.answered, tally.accepted, tally.server_429) == (2, 2, 1, 1)
    assert (tally.tokens, tally.estimated_tokens) == (90, 200)
    assert tally.learned_limits == (90_000, 500)
    assert "1 x 429" in progress.line()


def test_events_the_tally_has_no_count_for_change_nothing() -> None:
    """Retries scheduled and requests finished are not counted: the tally stays as it was."""
    progress = Progress(JobTally(total=1), live=False)
    before = repr(progress.tally)
    progress(RetryScheduled(KEY, 1, 0.5, "rate_limited"))
    progress(RequestFinished(KEY, 1, None, 0.02))
    assert repr(progress.tally) == before


def test_a_success_without_usage_counts_at_the_mean_estimate() -> None:
    """An answer that reports no usage is charged what admitted attempts averaged."""
    progress = Progress(JobTally(total=2), live=False)
    progress(admitted(100))
    progress(admitted(300))
    progress(answered())
    assert progress.tally.tokens == 200


def test_tokens_charged_stay_zero_when_no_answer_arrived() -> None:
    """Admitted attempts that got no answer charge nothing and count as not answered."""
    progress = Progress(JobTally(total=1), live=False)
    progress(admitted(100))
    progress(answered(Verdict.TRANSPORT_ERROR, None))
    assert (progress.tally.answered, progress.tally.tokens) == (0, 0)


def test_rate_window_stays_small_whatever_the_request_rate() -> None:
    """100,000 answers within a second keep one entry per second, not per answer."""
    clock = FakeTime()
    progress = progress_at(clock)
    clock.now += 10
    for _ in range(100_000):
        progress(answered())
        progress(UsageReported(KEY, 1, 0))
    assert len(progress._charged) == 1
    assert progress.tokens_per_minute() == pytest.approx(100_000 * 60 / 10)


def test_no_tpm_figure_before_enough_time() -> None:
    """A burst in the first second is not extrapolated to a minute; after 5 s it is a rate."""
    clock = FakeTime()
    progress = progress_at(clock)
    progress(limits(100_000))
    clock.now += 0.5
    progress(answered())
    progress(UsageReported(KEY, 50_000, 0))
    assert progress.tokens_per_minute() is None
    assert "TPM after 5s" in progress.line()
    clock.now += 5.5
    assert progress.tokens_per_minute() == pytest.approx(50_000 * 60 / 6)
    assert "500,000/100,000 TPM (burst)" in progress.line()


def test_tpm_counts_only_the_last_minute() -> None:
    """Tokens answered more than 60 s ago leave the rate."""
    clock = FakeTime()
    progress = progress_at(clock)
    progress(answered())
    progress(UsageReported(KEY, 1_000, 0))
    clock.now += 70
    progress(answered())
    progress(UsageReported(KEY, 600, 0))
    assert progress.tokens_per_minute() == pytest.approx(600)


def test_minimum_takes_the_binding_limit() -> None:
    """The minimum is the larger of tokens / TPM and requests / RPM, named by its limit."""
    by_tokens = theoretical_minimum(60_000, 10, 60_000, 1_000)
    by_requests = theoretical_minimum(100, 120, 60_000, 60)
    assert by_tokens is not None
    assert (by_tokens.seconds, by_tokens.binding) == (60.0, "TPM")
    assert by_requests is not None
    assert (by_requests.seconds, by_requests.binding) == (120.0, "RPM")
    assert theoretical_minimum(100, 10, None, None) is None


def test_no_efficiency_over_100_percent() -> None:
    """A run faster than the minimum says the limit was not reached, never 4338%."""
    minimum = theoretical_minimum(98_150, 1, 100_000, None)
    assert efficiency(minimum, 1.4) is None
    clock = FakeTime()
    progress = progress_at(clock)
    progress(limits(100_000))
    progress(answered())
    progress(UsageReported(KEY, 98_150, 0))
    clock.now += 1.4
    summary = progress.summary()
    assert "theoretical minimum 58.9s, limit not reached" in summary
    assert "efficiency" not in summary


def test_summary_without_a_learned_limit_has_no_minimum() -> None:
    """Without rate-limit headers there is no minimum and no efficiency."""
    summary = Progress(JobTally(total=1), live=False).summary()
    assert "no learned limit: no theoretical minimum" in summary


def test_eta_of_a_steady_job_follows_the_recent_rate() -> None:
    """After a slow start, a steady 2 lines/s gives left / 2 seconds, not the run's average."""
    clock = FakeTime()
    progress = progress_at(clock, total=200)
    for _ in range(40):  # 20 s learning the limits: nothing finishes
        clock.now += 0.5
        progress.show(every=10)
    for _ in range(80):  # then one line every 0.5 s
        clock.now += 0.5
        progress.tally.succeeded += 1
        progress.show(every=10)
    eta = progress.eta_seconds()
    assert eta == pytest.approx(120 / 2, rel=0.05)  # the whole-run average says 120 s


def test_eta_is_unknown_until_lines_finish_and_zero_at_the_end() -> None:
    """No rate before lines finish; nothing left is 0 s."""
    rate = CompletionRate()
    rate.observe(0.0, 0)
    rate.observe(10.0, 0)
    assert rate.eta_seconds(10.0, 5) is None
    assert rate.eta_seconds(10.0, 0) == 0.0


def test_line_counts_earlier_results_toward_done() -> None:
    """Lines finished before this run count as done; failures are summed."""
    tally = JobTally(total=10, already_done=4, succeeded=2, failed=Counter({"X": 1}))
    assert Progress(tally, live=False).line().startswith("7/10 done, 1 failed")


def test_live_bar_is_drawn_on_a_terminal() -> None:
    """On a terminal a bar shows the line; the summary leaves it on screen."""
    stream = io.StringIO()
    progress = Progress(JobTally(total=4, succeeded=2), live=True, stream=stream)
    progress.show(every=0)
    progress.summary()
    assert "2/4 done" in stream.getvalue()


def test_off_a_terminal_progress_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Without a terminal a log line is written instead."""
    with caplog.at_level(logging.INFO, logger="throttle.run"):
        Progress(JobTally(total=3, succeeded=1), live=False).show(every=0)
    assert "1/3 done" in caplog.text


def test_summary_names_failures_by_type() -> None:
    """The summary lists failures by type."""
    tally = JobTally(total=5, succeeded=3, failed=Counter({"RateLimitError": 2}))
    assert "succeeded 3, failed 2 (2 RateLimitError)" in Progress(tally, live=False).summary()


def write_job(tmp_path: Path, count: int) -> RunOptions:
    """A job of `count` chat lines in tmp_path; the URL is filled in by the test."""
    requests = tmp_path / "requests.jsonl"
    with requests.open("w") as handle:
        for i in range(count):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"line {i} " + "word " * (i % 7)}],
                "max_tokens": 20 + i % 5,
            }
            handle.write(json.dumps(body) + "\n")
    return RunOptions(requests, tmp_path / "results.jsonl", "", "sk-test", max_attempts=6)


async def test_summary_figures_equal_the_simulators_counts(tmp_path: Path) -> None:
    """Requests, tokens charged and 429s of the summary are the simulator's own counts."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=10_000, tpm=600_000),
        start_level=0.0,
        latency=0.01,
        completion_tokens=1_000,  # answers use all of max_tokens: usage is the charge
    )
    job = write_job(tmp_path, 30)
    async with SimulatedAPI(config) as sim:
        options = RunOptions(
            job.input, job.output, f"{sim.base_url}/chat/completions", "sk-test", max_attempts=6
        )
        runner = JobRunner(options, show_progress=False)
        await runner.run()
        stats = sim.stats
    tally = runner.tally
    assert stats.total_429 > 0  # the drained bucket makes the check meaningful
    assert (tally.answered, tally.accepted, tally.server_429, tally.tokens) == (
        stats.received,
        stats.succeeded,
        stats.total_429,
        stats.charged_tokens,
    )
    summary = runner.progress.summary()
    assert f"answered {stats.received} ({stats.total_429} x 429)" in summary
    assert f"tokens charged {stats.charged_tokens:,}" in summary


async def test_tokens_charged_are_zero_when_the_key_is_rejected(tmp_path: Path) -> None:
    """401 answers reached a server but charged nothing."""
    job = write_job(tmp_path, 10)
    async with SimulatedAPI(SimulatorConfig(organizations={"sk-good": "org-1"})) as sim:
        options = RunOptions(job.input, job.output, f"{sim.base_url}/chat/completions", "sk-bad")
        runner = JobRunner(options, show_progress=False)
        await runner.run()
    assert runner.tally.tokens == 0
    assert "tokens charged 0," in runner.progress.summary()


async def test_tokens_charged_are_zero_when_no_server_answers(tmp_path: Path) -> None:
    """Connection refused: attempts were admitted, none answered, nothing charged."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    job = write_job(tmp_path, 10)
    url = f"http://127.0.0.1:{closed_port}/v1/chat/completions"
    runner = JobRunner(
        RunOptions(job.input, job.output, url, "sk-test", max_attempts=2), show_progress=False
    )
    await runner.run()
    assert runner.tally.admitted > 0
    assert (runner.tally.answered, runner.tally.tokens) == (0, 0)
    assert "answered 0 (0 x 429), tokens charged 0," in runner.progress.summary()
