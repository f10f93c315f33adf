"""``throttle run --mode batch`` killed at random points resumes: nothing lost or paid twice."""

import asyncio
import os
import random
import sys
from pathlib import Path

from tests.batch_sim import KEY, embedding_job, results_by_index, sim_vector, simulator
from throttle.batch_journal import journal_path_for, read_journal

LINES, PER_FILE = 3_000, 300


async def run_cli(url: str, folder: Path, kill_after: float | None) -> int | None:
    """Run the job as its own process; SIGKILL it after ``kill_after`` seconds, if given.

    Returns:
        Its exit status, or ``None`` when it was killed before it ended.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "throttle",
        "run",
        str(folder / "requests.jsonl"),
        "-o",
        str(folder / "results.jsonl"),
        "--url",
        url,
        "--mode",
        "batch",
        "--batch-max-requests",
        str(PER_FILE),
        "--batch-poll-min",
        "0.01",
        "--batch-poll-max",
        "0.05",
        "--no-progress",
        env={**os.environ, "OPENAI_API_KEY": KEY},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(kill_after if kill_after is not None else 60):
            _, stderr = await process.communicate()
    except TimeoutError:
        process.kill()  # SIGKILL: no cleanup of any kind
        await process.wait()
        return None
    assert process.returncode == 0, stderr.decode()
    return process.returncode


async def test_a_run_killed_at_random_points_and_resumed_loses_nothing_and_pays_once(
    tmp_path: Path,
) -> None:
    """Five SIGKILLs between start and end, then a run to the end: ten files, ten batches."""
    texts = embedding_job(tmp_path / "requests.jsonl", LINES)
    draw = random.Random(14)  # noqa: S311 - seeded test data, not secrets
    killed_in = []
    # A batch validates for 0.2 s and runs for 0.7 s of wall time, and batches validate one
    # after another: a run takes about 4 s, and a kill lands in any step of it.
    async with simulator(
        time_scale=300.0, validating_seconds=60, lines_per_second=1.5, finalizing_seconds=30
    ) as sim:
        url = f"{sim.base_url}/embeddings"
        for _ in range(5):
            if await run_cli(url, tmp_path, kill_after=draw.uniform(1.0, 2.5)) is not None:
                break  # it finished before the kill
            state = read_journal(journal_path_for(tmp_path / "results.jsonl"))
            killed_in.append((len(state.files), len(state.batches)))
        await run_cli(url, tmp_path, kill_after=None)
        stats = sim.stats.batch
    results = results_by_index(tmp_path / "results.jsonl")  # fails on a line with two results
    assert sorted(results) == list(range(LINES))
    for index in draw.sample(range(LINES), 50):
        assert results[index]["response"]["data"][0]["embedding"] == sim_vector(texts[index])
    assert stats.lines_uploaded == LINES  # no line was ever uploaded twice
    assert stats.files_uploaded == stats.batches_created == LINES // PER_FILE
    assert killed_in, "no run was killed"
