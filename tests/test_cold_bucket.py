"""A scaled-down run of the cold-bucket benchmark: correctness, not speed (see benchmarks/)."""

from benchmarks.cold_bucket import run


async def test_cold_bucket_burst_all_succeed_with_few_429s() -> None:
    """200 requests at once into a drained bucket: all succeed, at most 6 answers of 429."""
    result = await run(200, rpm=3_000, tpm=3_000_000, latency=0.05, via="native")
    assert result.failed == 0
    assert result.succeeded == 200
    assert result.server_429 <= 6


async def test_cold_bucket_through_the_openai_sdk_all_succeed_with_few_429s() -> None:
    """The same burst through AsyncOpenAI and the throttle transport."""
    result = await run(200, rpm=3_000, tpm=3_000_000, latency=0.05, via="openai")
    assert result.failed == 0
    assert result.server_429 <= 6


async def test_cold_bucket_through_the_job_runner_all_succeed_once_each() -> None:
    """The same burst as a JSONL file through `throttle run`'s engine: one result per line."""
    result = await run(200, rpm=3_000, tpm=3_000_000, latency=0.05, via="run")
    assert result.failed == 0
    assert result.succeeded == 200
    assert result.server_429 <= 6
