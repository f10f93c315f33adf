"""Helpers for the batch-mode tests: a fast simulated Batch API and small embedding jobs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import openai

from throttle.batch_executor import BatchExecutor
from throttle.batch_options import BatchOptions
from throttle.batch_run import batch_executor
from throttle.run_options import RunOptions
from throttle.runner import JobRunner
from throttle.testing import BatchSettings, SimulatedAPI, SimulatorConfig

MODEL: Final = "text-embedding-3-small"
KEY: Final = "sk-batch-test"
# A simulated day in under a second: batches validate, run and finalize in microseconds.
FAST_SETTINGS: Final = {"time_scale": 100_000.0}
# Polls every few milliseconds; a partial file goes once lines stop arriving for 20 ms.
FAST_OPTIONS: Final = BatchOptions(poll_initial=0.002, poll_max=0.02, gather_seconds=0.02)


@asynccontextmanager
async def simulator(
    clock: Callable[[], float] | None = None, **settings: Any
) -> AsyncIterator[SimulatedAPI]:
    """A simulated API whose Batch API runs on ``settings`` (fast by default)."""
    batch = BatchSettings(**{**FAST_SETTINGS, **settings})
    config = SimulatorConfig(latency=0, batch=batch)
    sim = SimulatedAPI(config) if clock is None else SimulatedAPI(config, batch_clock=clock)
    async with sim:
        yield sim


def embedding_job(path: Path, count: int) -> list[str]:
    """Write ``count`` embedding request bodies to ``path``; return their inputs."""
    texts = [f"text number {index}" for index in range(count)]
    with path.open("w") as handle:
        handle.writelines(json.dumps({"model": MODEL, "input": text}) + "\n" for text in texts)
    return texts


def sim_vector(text: str, dimensions: int = 8) -> list[float]:
    """The embedding the simulator answers for ``text`` (a hash of it)."""
    digest = hashlib.sha256(json.dumps(text).encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(dimensions)]


def results_by_index(path: Path) -> dict[int, dict[str, Any]]:
    """The results file's records by line index; fails on a line with two results."""
    records: dict[int, dict[str, Any]] = {}
    for text in path.read_text().splitlines():
        record = json.loads(text)
        assert record["index"] not in records, f"line {record['index']} has two results"
        records[record["index"]] = record
    return records


def job_options(sim: SimulatedAPI, folder: Path, **changes: Any) -> RunOptions:
    """The options of the embedding job in ``folder`` against ``sim``."""
    values: dict[str, Any] = {
        "input": folder / "requests.jsonl",
        "output": folder / "results.jsonl",
        "url": f"{sim.base_url}/embeddings",
        "api_key": KEY,
        **changes,
    }
    return RunOptions(**values)


async def run_job(
    options: RunOptions, batch: BatchOptions = FAST_OPTIONS
) -> tuple[int, BatchExecutor, JobRunner]:
    """Run a job in batch mode to its end; return its exit status, executor and runner."""
    executor = batch_executor(options, batch)
    runner = JobRunner(options, executor=executor, show_progress=False)
    return await runner.run(), executor, runner


async def list_batches(sim: SimulatedAPI) -> list[dict[str, Any]]:
    """Every batch on the simulator, oldest first, as the real SDK reads them."""
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as client:
        batches = [batch.model_dump() async for batch in client.batches.list(limit=100)]
    return batches[::-1]
