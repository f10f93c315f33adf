"""Polling batches to their end: a cancel from outside stops the job, a lost batch ends it."""

import asyncio
import dataclasses
import itertools
import json
from pathlib import Path

from tests.batch_sim import (
    FAST_OPTIONS,
    KEY,
    embedding_job,
    job_options,
    list_batches,
    run_job,
    simulator,
)
from tests.polling import wait_until
from tests.test_batch_resume import (
    EMBEDDINGS,
    HELD,
    job_lines,
    start_journal,
    time_passing,
    upload_lines,
)
from throttle.batch_admin import cancel_open_batches
from throttle.batch_client import BatchClient
from throttle.batch_executor import BatchExecutor
from throttle.batch_journal import BatchJournal, journal_path_for
from throttle.errors import JobAbortedError
from throttle.runner import EXIT_OK
from throttle.testing import ManualClock


async def test_a_cancel_from_another_terminal_stops_the_job_instead_of_resubmitting(
    tmp_path: Path,
) -> None:
    """``throttle batches cancel`` while the job runs: no new batch; its lines run next time."""
    clock, journal, lines = ManualClock(), tmp_path / "j.jsonl", job_lines(100)
    async with simulator(clock=clock.now, **HELD) as sim:
        options = dataclasses.replace(FAST_OPTIONS, max_requests=50)
        executor = BatchExecutor(sim.base_url, KEY, options, journal=journal, endpoint=EMBEDDINGS)
        waiting = asyncio.gather(*(executor.execute(line) for line in lines))
        await wait_until(lambda: executor.counts.batches_created == 1)  # the other file waits
        cancelled = await cancel_open_batches(journal, KEY)
        async with time_passing(clock):
            results = await waiting
            late = await executor.execute(job_lines(101)[-1])
        await executor.aclose()
        batches = await list_batches(sim)
    assert [view.status for view in cancelled] == ["cancelling"]
    assert [batch["status"] for batch in batches] == ["cancelled"]
    assert results == [None] * 100
    assert late is None
    assert executor.counts.lines_retried == 0


async def test_a_rerun_with_a_key_that_cannot_see_the_batches_stops_naming_the_key(
    tmp_path: Path,
) -> None:
    """Another project's key polls 404 for the journal's batch: exit, not a poll forever."""
    clock, journal_path, lines = ManualClock(), tmp_path / "j.jsonl", job_lines(20)
    async with simulator(clock=clock.now, **HELD) as sim:
        client = BatchClient(sim.base_url, KEY)
        journal = BatchJournal(journal_path)
        name = start_journal(journal, sim.base_url, lines)
        file_id = await upload_lines(client, name, lines)
        journal.append({"type": "uploaded", "name": name, "file_id": file_id})
        batch = await client.create_batch(file_id, EMBEDDINGS, {})
        journal.append({"type": "created", "file_id": file_id, "batch_id": batch["id"]})
        journal.close()
        await client.aclose()
        options = dataclasses.replace(FAST_OPTIONS, poll_max=0.05)
        rerun = BatchExecutor(
            sim.base_url, "sk-another-project", options, journal=journal_path, endpoint=EMBEDDINGS
        )
        async with asyncio.timeout(3):
            results = await asyncio.gather(
                *(rerun.execute(line) for line in lines), return_exceptions=True
            )
        await rerun.aclose()
    assert all(isinstance(result, JobAbortedError) for result in results)
    assert f"batch {batch['id']}" in str(results[0])
    assert "the key is another organization's or project's" in str(results[0])


async def test_a_lesson_is_journaled_before_the_end_of_the_batch_that_taught_it(
    tmp_path: Path,
) -> None:
    """A kill between the two records keeps the lesson: it comes first."""
    embedding_job(tmp_path / "requests.jsonl", 400)
    async with simulator(time_scale=10_000.0, enqueued_tokens=500, lines_per_second=0.02) as sim:
        options = job_options(sim, tmp_path)
        status, executor, _ = await run_job(
            options, dataclasses.replace(FAST_OPTIONS, max_requests=40)
        )
    records = [
        json.loads(line) for line in journal_path_for(options.output).read_text().splitlines()
    ]
    assert status == EXIT_OK
    assert executor.counts.batches_refused >= 1
    kinds = [record["type"] for record in records]
    assert "limit" in kinds
    for record, after in itertools.pairwise(records):
        if record["type"] == "limit":
            assert (after["type"], after["code"]) == ("ended", "token_limit_exceeded")


async def test_a_rerun_with_another_key_after_the_batches_ended_stops_instead_of_paying_twice(
    tmp_path: Path,
) -> None:
    """Batches ended, results unwritten, a rerun with another project's key: it stops.

    Its files and batches answer 404: the job names the key, and no batch is made again.
    """
    journal_path, lines = tmp_path / "j.jsonl", job_lines(20)
    async with simulator() as sim:
        options = dataclasses.replace(FAST_OPTIONS, poll_max=0.05)
        first = BatchExecutor(sim.base_url, KEY, options, journal=journal_path, endpoint=EMBEDDINGS)
        answered = await asyncio.gather(*(first.execute(line) for line in lines))
        await first.aclose()
        created = sim.stats.batch.batches_created
        rerun = BatchExecutor(
            sim.base_url, "sk-another-project", options, journal=journal_path, endpoint=EMBEDDINGS
        )
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                *(rerun.execute(line) for line in lines), return_exceptions=True
            )
        await rerun.aclose()
        assert sim.stats.batch.batches_created == created
    assert all(result is not None and result.error is None for result in answered)
    assert all(isinstance(result, JobAbortedError) for result in results)
    assert "the key is another organization's or project's" in str(results[0])
