"""``throttle run --mode batch`` against the simulated Batch API: every line ends exactly once."""

import dataclasses
import io
import itertools
import json
import math
import time
from pathlib import Path

import openai

from tests.batch_sim import (
    FAST_OPTIONS,
    KEY,
    MODEL,
    embedding_job,
    job_options,
    list_batches,
    results_by_index,
    run_job,
    sim_vector,
    simulator,
)
from throttle.batch_journal import BatchJournal, journal_path_for, read_journal
from throttle.batch_split import encode_line
from throttle.estimate import estimate_tokens
from throttle.runner import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from throttle.testing import SimulatedAPI, SimulatorConfig

EMBEDDINGS = "/v1/embeddings"


async def test_a_20000_line_job_split_into_several_batches_ends_each_line_once(
    tmp_path: Path,
) -> None:
    """7 files of at most 3,000 requests; each line's own embedding, joined on custom_id."""
    texts = embedding_job(tmp_path / "requests.jsonl", 20_000)
    started = time.monotonic()
    async with simulator() as sim:
        options = job_options(sim, tmp_path)
        status, executor, _ = await run_job(
            options, dataclasses.replace(FAST_OPTIONS, max_requests=3_000)
        )
        stats = sim.stats.batch
    assert status == EXIT_OK
    results = results_by_index(options.output)
    assert sorted(results) == list(range(20_000))
    for index in (0, 1, 2_999, 3_000, 12_345, 19_999):
        record = results[index]
        assert record["response"]["data"][0]["embedding"] == sim_vector(texts[index])
        assert record["batch_id"].startswith("batch_")
        assert record["input_file_id"].startswith("file-")
    assert stats.files_uploaded == stats.batches_created == math.ceil(20_000 / 3_000)
    assert stats.lines_uploaded == 20_000
    assert executor.counts.files_uploaded == 7
    assert len({r["batch_id"] for r in results.values()}) == 7
    assert time.monotonic() - started < 20


async def test_an_enqueued_limit_smaller_than_the_job_is_learned_one_refusal_per_step(
    tmp_path: Path,
) -> None:
    """The simulator holds 2 of 10 files' tokens at once; each refusal teaches a lower limit."""
    embedding_job(tmp_path / "requests.jsonl", 2_000)
    # A batch validates in 6 ms and runs for 100 ms: many would overlap but for the limit.
    async with simulator(time_scale=10_000.0, enqueued_tokens=2_000, lines_per_second=0.2) as sim:
        options = job_options(sim, tmp_path)
        status, executor, _ = await run_job(
            options, dataclasses.replace(FAST_OPTIONS, max_requests=200)
        )
        batches = await list_batches(sim)
    assert status == EXIT_OK
    assert sorted(results_by_index(options.output)) == list(range(2_000))
    refused = [b for b in batches if b["status"] == "failed"]
    assert all(b["errors"]["data"][0]["code"] == "token_limit_exceeded" for b in refused)
    steps = executor.budget.steps
    assert 1 <= len(refused) == len(steps) == executor.counts.batches_refused
    limits = [step.after for step in steps]
    assert all(later < earlier for earlier, later in itertools.pairwise(limits))
    # One batch of the model validated at a time: each was created after the one before it
    # had left validation (60 simulated seconds), so no two refusals share a lesson.
    created = [b["created_at"] for b in batches]
    assert all(later - earlier >= 59 for earlier, later in itertools.pairwise(created))
    # A refused batch is created again from the same file: nothing is uploaded twice.
    assert sim.stats.batch.files_uploaded == 10
    assert len(batches) == 10 + len(refused)


async def test_expired_lines_go_into_later_batches_until_answered(tmp_path: Path) -> None:
    """A fifth of each batch expires; those lines ride later batches and all succeed."""
    embedding_job(tmp_path / "requests.jsonl", 1_000)
    async with simulator(expired_share=0.2, seed=3) as sim:
        options = job_options(sim, tmp_path)
        status, executor, _ = await run_job(
            options, dataclasses.replace(FAST_OPTIONS, max_requests=400, max_attempts=8)
        )
        stats = sim.stats.batch
    assert status == EXIT_OK
    results = results_by_index(options.output)
    assert all("response" in record for record in results.values())
    assert executor.counts.lines_retried >= 150
    assert stats.batches_created > 3
    assert stats.lines_uploaded == 1_000 + executor.counts.lines_retried


async def test_lines_failing_in_every_batch_end_with_an_error_naming_the_cause(
    tmp_path: Path,
) -> None:
    """5xx lines are retried; out of attempts, a 5xx line gives up and an expired one says so."""
    embedding_job(tmp_path / "requests.jsonl", 600)
    async with simulator(failed_share=0.4, expired_share=0.4, seed=5) as sim:
        options = job_options(sim, tmp_path)
        status, executor, _ = await run_job(
            options, dataclasses.replace(FAST_OPTIONS, max_attempts=2)
        )
    assert status == EXIT_FAILED
    results = results_by_index(options.output)
    assert sorted(results) == list(range(600))
    errors = [r["error"] for r in results.values() if "error" in r]
    gave_up = [e for e in errors if e["type"] == "RetryExhaustedError"]
    expired = [e for e in errors if e["type"] == "BatchLineError"]
    assert gave_up
    assert expired
    assert len(gave_up) + len(expired) == len(errors)
    assert all(e["status"] == 500 and e["attempts"] == 2 for e in gave_up)
    assert all(e["code"] == "batch_expired" and e["attempts"] == 2 for e in expired)
    assert all(r["batch_id"] for r in results.values())
    assert executor.counts.lines_retried > 0
    assert 0 < len(errors) < 600


async def test_lines_that_fit_no_batch_or_name_no_model_end_at_once(tmp_path: Path) -> None:
    """A body without a model, or larger than a whole file, ends with its error, unsent."""
    lines = [
        '{"model": "text-embedding-3-small", "input": "fine"}',
        '{"input": "no model"}',
        '{"model": "text-embedding-3-small", "input": "' + "x" * 600 + '"}',
    ]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    async with simulator() as sim:
        options = job_options(sim, tmp_path)
        status, _, _ = await run_job(options, dataclasses.replace(FAST_OPTIONS, max_bytes=500))
        stats = sim.stats.batch
    results = results_by_index(options.output)
    assert status == EXIT_FAILED
    assert "response" in results[0]
    assert results[1]["error"]["type"] == "InvalidRequestError"
    assert results[2]["error"]["code"] == "line_too_large"
    assert stats.lines_uploaded == 1


async def test_a_rejected_key_stops_the_job_with_nothing_lost(tmp_path: Path) -> None:
    """A 401 on the Files API aborts the job (exit 2); no line gets a result."""
    embedding_job(tmp_path / "requests.jsonl", 50)
    config = SimulatorConfig(latency=0, organizations={"sk-other": "org-a"})
    async with SimulatedAPI(config) as sim:
        options = job_options(sim, tmp_path)
        status, _, runner = await run_job(options)
    assert status == EXIT_USAGE
    assert runner.fatal is not None
    assert "rejected the key" in runner.fatal
    assert options.output.read_text() == ""


async def test_a_wrong_url_stops_the_job_with_nothing_lost(tmp_path: Path) -> None:
    """No server at the URL: the job stops at once, saying to check --url."""
    embedding_job(tmp_path / "requests.jsonl", 5)
    async with simulator() as sim:
        url = sim.base_url
    options = job_options(sim, tmp_path, url=f"{url}/embeddings")
    status, _, runner = await run_job(options)
    assert status == EXIT_USAGE
    assert runner.fatal is not None
    assert "check --url" in runner.fatal


async def test_batch_lines_name_their_own_endpoint_and_keep_their_custom_id(
    tmp_path: Path,
) -> None:
    """Batch API input lines: the user's custom_id stays in the result; two models, two files."""
    lines = [
        json.dumps(
            {
                "custom_id": f"mine-{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": MODEL if i % 2 else "other-embed", "input": f"t{i}"},
            }
        )
        for i in range(10)
    ]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    async with simulator() as sim:
        options = job_options(sim, tmp_path, url=sim.base_url)
        status, _, _ = await run_job(options)
        stats = sim.stats.batch
    results = results_by_index(options.output)
    assert status == EXIT_OK
    assert [results[i]["custom_id"] for i in range(10)] == [f"mine-{i}" for i in range(10)]
    assert stats.files_uploaded == 2


async def test_retry_failed_sends_only_the_lines_that_ended_in_error_again(
    tmp_path: Path,
) -> None:
    """A rerun with --retry-failed reads no answered line again and uploads only the failed."""
    embedding_job(tmp_path / "requests.jsonl", 400)
    async with simulator(failed_share=0.5, seed=11) as sim:
        options = job_options(sim, tmp_path)
        first, _, _ = await run_job(options, dataclasses.replace(FAST_OPTIONS, max_attempts=1))
        failed = {i for i, r in results_by_index(options.output).items() if "error" in r}
        uploaded = sim.stats.batch.lines_uploaded
        again = dataclasses.replace(options, retry_failed=True)
        second, executor, _ = await run_job(
            again, dataclasses.replace(FAST_OPTIONS, max_attempts=8)
        )
        stats = sim.stats.batch
    assert (first, second) == (EXIT_FAILED, EXIT_OK)
    assert 100 < len(failed) < 300
    assert stats.lines_uploaded - uploaded >= len(failed)
    assert executor.counts.lines_retried >= len(failed)
    results = list(map(json.loads, options.output.read_text().splitlines()))
    assert {r["index"] for r in results if "response" in r} == set(range(400))


async def test_a_limit_other_batches_fill_is_waited_out_not_learned_down_to_a_line(
    tmp_path: Path,
) -> None:
    """Another job's batch holds the org's whole limit for a second: ours wait; none fails."""
    embedding_job(tmp_path / "requests.jsonl", 50)
    foreign = [{"model": MODEL, "input": "a"} for _ in range(2_000)]
    limit = sum(estimate_tokens(EMBEDDINGS, body).total for body in foreign)
    data = b"".join(encode_line(i, EMBEDDINGS, body) for i, body in enumerate(foreign))
    async with simulator(time_scale=2_000.0, enqueued_tokens=limit, lines_per_second=1.0) as sim:
        sdk = openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
        async with sdk:
            other = await sdk.files.create(file=("other.jsonl", io.BytesIO(data)), purpose="batch")
            await sdk.batches.create(
                input_file_id=other.id, endpoint="/v1/embeddings", completion_window="24h"
            )
        options = job_options(sim, tmp_path)
        status, executor, _ = await run_job(options)
    assert status == EXIT_OK
    assert all("response" in r for r in results_by_index(options.output).values())
    steps = executor.budget.steps
    assert steps
    assert all((step.after, step.crowded) == (limit // 4, n) for n, step in enumerate(steps, 1))
    assert read_journal(journal_path_for(options.output)).limits == {}  # no lesson kept


async def test_a_configured_limit_overrides_a_limit_an_earlier_run_learned(
    tmp_path: Path,
) -> None:
    """The journal learned 3 tokens (less than a line); --batch-enqueued-tokens undoes it."""
    embedding_job(tmp_path / "requests.jsonl", 50)
    async with simulator() as sim:
        options = job_options(sim, tmp_path)
        journal = BatchJournal(journal_path_for(options.output))
        journal.append({"type": "job", "id": "j1", "api_root": sim.base_url})
        journal.append({"type": "limit", "model": MODEL, "tokens": 3})
        journal.close()
        batch = dataclasses.replace(FAST_OPTIONS, enqueued_tokens=100_000)
        status, _, _ = await run_job(options, batch)
        stats = sim.stats.batch
    assert status == EXIT_OK
    assert (stats.files_uploaded, stats.lines_uploaded) == (1, 50)


async def test_a_line_holding_a_lone_surrogate_goes_escaped_and_is_not_left_held(
    tmp_path: Path,
) -> None:
    r"""``"\ud800"`` is valid JSON but no UTF-8: the line goes as ASCII escapes, like online."""
    (tmp_path / "requests.jsonl").write_text(
        json.dumps({"model": MODEL, "input": "ok"})
        + "\n"
        + '{"model": "%s", "input": "bad \\ud800 text"}\n' % MODEL  # noqa: UP031 - raw JSON
    )
    async with simulator() as sim:
        options = job_options(sim, tmp_path)
        status, executor, _ = await run_job(options)
    results = results_by_index(options.output)
    assert status == EXIT_OK
    assert "response" in results[1]
    assert not executor._held  # the leak this guards against


async def test_a_journal_of_another_api_stops_the_job_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    """A rerun with another --url would poll batches it cannot see: exit 2, naming both."""
    embedding_job(tmp_path / "requests.jsonl", 20)
    async with simulator() as sim:
        options = job_options(sim, tmp_path)
        journal = BatchJournal(journal_path_for(options.output))
        journal.append({"type": "job", "id": "j1", "api_root": "https://elsewhere.example/v1"})
        journal.close()
        status, _, runner = await run_job(options)
        requests = sum(sim.stats.batch.requests.values())
    assert status == EXIT_USAGE
    assert runner.fatal is not None
    assert "https://elsewhere.example/v1" in runner.fatal
    assert sim.base_url in runner.fatal
    assert requests == 0
    assert options.output.read_text() == ""
