"""``throttle batches status|cancel``: a job's batches, seen and cancelled from its journal."""

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.batch_sim import FAST_OPTIONS, KEY, MODEL, simulator
from throttle.batch_cli import batch_options
from throttle.batch_executor import BatchExecutor
from throttle.batch_journal import journal_path_for
from throttle.batch_options import BatchOptions
from throttle.cli_parser import build_parser
from throttle.errors import ConfigurationError
from throttle.executor import JobLine
from throttle.testing import ManualClock


async def throttle(*args: str, key: str | None = KEY) -> tuple[int, str, str]:
    """Run ``throttle ARGS`` as its own process; return its status, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    if key is not None:
        env["OPENAI_API_KEY"] = key
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "throttle",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_status_shows_and_cancel_cancels_the_open_batches_of_a_stopped_job(
    tmp_path: Path,
) -> None:
    """A stopped job's batch validates: status shows it, cancel cancels it, status agrees."""
    results = tmp_path / "results.jsonl"
    clock = ManualClock()  # the batch stays validating until the clock moves
    async with simulator(clock=clock.now, time_scale=1.0, validating_seconds=10) as sim:
        executor = BatchExecutor(
            sim.base_url,
            KEY,
            FAST_OPTIONS,
            journal=journal_path_for(results),
            endpoint="/v1/embeddings",
        )
        lines = [JobLine(i, {"model": MODEL, "input": f"t{i}"}) for i in range(30)]
        waiting = asyncio.gather(*(executor.execute(line) for line in lines))
        async with asyncio.timeout(5):
            while executor.counts.batches_created == 0:  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.005)
        await executor.aclose()
        await waiting
        args = ("--results", str(results))
        offline, status = await asyncio.gather(
            throttle("batches", "status", *args, key=None), throttle("batches", "status", *args)
        )
        cancel = await throttle("batches", "cancel", *args)
        after, keyless_cancel, missing = await asyncio.gather(
            throttle("batches", "status", *args),
            throttle("batches", "cancel", *args, key=None),
            throttle("batches", "status", "--results", str(tmp_path / "none.jsonl")),
        )
    batch_id = _batch_id(status[1])
    assert offline[0] == 0
    assert " open" in offline[1]
    assert status[0] == 0, status[2]
    assert "validating" in status[1]
    assert "30" in status[1]
    assert "1 files: 1 validating" in status[2]
    assert cancel[0] == 0, cancel[2]
    assert batch_id in cancel[1]
    assert "cancelling" in cancel[1]
    assert "asked to cancel 1 open batches" in cancel[2]
    assert "cancelling" in after[1]
    assert keyless_cancel[0] == 2
    assert "set the API key" in keyless_cancel[2]
    assert missing[0] == 2
    assert "no batch journal" in missing[2]


def _batch_id(table: str) -> str:
    """The one batch id a status table shows."""
    return next(word for word in table.split() if word.startswith("batch_"))


@pytest.mark.parametrize("tokens", ["0", "-5"])
def test_an_enqueued_limit_below_one_token_is_refused(tokens: str) -> None:
    """``--batch-enqueued-tokens 0`` would fail every line: refused, like the other sizes."""
    run = ["run", "in.jsonl", "--url", "http://x/v1/embeddings", "--mode", "batch"]
    args = build_parser().parse_args([*run, "--batch-enqueued-tokens", tokens])
    with pytest.raises(ConfigurationError, match="at least 1"):
        batch_options(args)
    with pytest.raises(ConfigurationError):
        BatchOptions(enqueued_by_model={"m": 0})
    assert BatchOptions(enqueued_tokens=1).enqueued_tokens == 1
