"""The journaled steps: a file name is never given twice, whatever the journal's gaps."""

import asyncio
import dataclasses
from pathlib import Path

from tests.batch_sim import FAST_OPTIONS, KEY, MODEL, simulator
from tests.polling import wait_until
from tests.test_batch_resume import HELD, time_passing
from throttle.batch_client import BatchClient
from throttle.batch_executor import BatchExecutor
from throttle.batch_journal import BatchJournal, read_journal, to_ranges
from throttle.batch_steps import BatchCounts, BatchSteps
from throttle.executor import JobLine
from throttle.testing import ManualClock, SimulatedAPI


def test_a_rerun_names_its_files_after_the_highest_name_journaled(tmp_path: Path) -> None:
    """Files 1 and 3 journaled (2 was drawn, never uploaded): the rerun's next file is 4."""
    journal = BatchJournal(tmp_path / "j.jsonl")
    journal.append({"type": "job", "id": "j1", "api_root": "http://x/v1"})
    for number, lines in ((1, range(50)), (3, range(100, 150))):
        journal.append(
            {
                "type": "upload",
                "name": f"throttle-j1-{number:05d}.jsonl",
                "model": "m",
                "endpoint": "/v1/embeddings",
                "lines": to_ranges(lines),
                "tokens": 1,
            }
        )
    journal.close()
    client = BatchClient("http://x/v1", None)
    rerun = BatchSteps(client, BatchJournal(journal.path), {}, BatchCounts())
    assert rerun.next_name() == "throttle-j1-00004.jsonl"


async def test_runs_stopped_with_a_file_never_uploaded_pay_for_each_line_once(
    tmp_path: Path,
) -> None:
    """Model A's second file waits (00002, never journaled) while B's 00003 goes; two reruns."""
    clock, journal = ManualClock(), tmp_path / "j.jsonl"
    lines = [
        JobLine(i, {"model": MODEL if i < 100 else "other", "input": f"t {i}"}) for i in range(150)
    ]

    def executor(sim: SimulatedAPI) -> BatchExecutor:
        options = dataclasses.replace(FAST_OPTIONS, max_requests=50)
        return BatchExecutor(sim.base_url, KEY, options, journal=journal, endpoint="/v1/embeddings")

    async with simulator(clock=clock.now, **HELD) as sim:
        first = executor(sim)
        waiting = asyncio.gather(*(first.execute(line) for line in lines))
        await wait_until(lambda: first.counts.batches_created == 2)
        await first.aclose()
        await waiting
        second = executor(sim)  # lines 50..99 go into a new file
        waiting = asyncio.gather(*(second.execute(line) for line in lines))
        await clock.advance(11)  # A's first batch leaves validation: A's next may go
        await wait_until(lambda: second.counts.batches_created == 1)
        await second.aclose()
        await waiting
        third = executor(sim)
        async with time_passing(clock):
            results = await asyncio.gather(*(third.execute(line) for line in lines))
        await third.aclose()
        stats = sim.stats.batch
    state = read_journal(journal)
    assert all(result is not None and result.error is None for result in results)
    assert stats.lines_uploaded == 150
    assert sorted(name[-11:] for name in state.files) == [
        "00001.jsonl",
        "00003.jsonl",
        "00004.jsonl",
    ]
    assert {f.model for f in state.files.values()} == {MODEL, "other"}
