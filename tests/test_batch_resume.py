"""A batch job stopped or killed at any step resumes from its journal, paying for nothing twice."""

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.batch_sim import FAST_OPTIONS, KEY, MODEL, simulator
from tests.polling import wait_until
from tests.scripted_server import app_served
from throttle.batch_admin import batch_status, cancel_open_batches
from throttle.batch_client import BatchClient
from throttle.batch_executor import BatchExecutor
from throttle.batch_journal import BatchJournal, read_journal, to_ranges
from throttle.batch_split import encode_line
from throttle.executor import JobLine, LineResult
from throttle.testing import ManualClock, SimulatedAPI

EMBEDDINGS = "/v1/embeddings"
# One simulated second per clock second: a batch validates for 10 s, until the test says so.
HELD = {"time_scale": 1.0, "validating_seconds": 10, "lines_per_second": 1000}


def job_lines(count: int) -> list[JobLine]:
    """``count`` embedding lines."""
    return [JobLine(i, {"model": MODEL, "input": f"text {i}"}) for i in range(count)]


def executor(sim: SimulatedAPI, journal: Path, **options: Any) -> BatchExecutor:
    """A batch executor for ``sim``'s embeddings, polling fast."""
    batch = dataclasses.replace(FAST_OPTIONS, **options)
    return BatchExecutor(sim.base_url, KEY, batch, journal=journal, endpoint=EMBEDDINGS)


@contextlib.asynccontextmanager
async def time_passing(clock: ManualClock, step: float = 20.0) -> AsyncIterator[None]:
    """Move the simulator's batch clock on by ``step`` seconds every few milliseconds."""

    async def pump() -> None:
        while True:
            await clock.advance(step)
            await asyncio.sleep(0.002)

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_all(batch_executor: BatchExecutor, lines: list[JobLine]) -> list[LineResult | None]:
    """Execute every line, then close the executor."""
    try:
        return await asyncio.gather(*(batch_executor.execute(line) for line in lines))
    finally:
        await batch_executor.aclose()


async def test_a_stopped_run_leaves_its_batch_running_and_the_rerun_polls_it(
    tmp_path: Path,
) -> None:
    """Stop: lines return None, the created batch keeps running; the rerun adopts it."""
    clock, journal, lines = ManualClock(), tmp_path / "j.jsonl", job_lines(300)
    async with simulator(clock=clock.now, **HELD) as sim:
        first = executor(sim, journal, max_requests=100)
        waiting = asyncio.gather(*(first.execute(line) for line in lines))
        await wait_until(lambda: first.counts.batches_created == 1)
        await first.aclose()  # the next two files wait: the first batch still validates
        assert await waiting == [None] * 300
        assert (sim.stats.batch.files_uploaded, sim.stats.batch.batches_created) == (1, 1)
        second = executor(sim, journal, max_requests=100)
        async with time_passing(clock):
            results = await run_all(second, lines)
        stats = sim.stats.batch
    assert all(r is not None and r.error is None for r in results)
    assert (stats.files_uploaded, stats.batches_created) == (3, 3)
    assert (second.counts.files_uploaded, second.counts.batches_created) == (2, 2)


async def upload_lines(client: BatchClient, name: str, lines: list[JobLine]) -> str:
    """Upload ``lines`` as the executor would, under ``name``; return the file id."""
    content = b"".join(encode_line(line.index, EMBEDDINGS, line.body) for line in lines)
    return str((await client.upload(name, content))["id"])


def start_journal(journal: BatchJournal, api_root: str, lines: list[JobLine]) -> str:
    """Journal job ``j1`` and the intent to upload ``lines`` in one file; return its name."""
    journal.append({"type": "job", "id": "j1", "api_root": api_root})
    name = "throttle-j1-00001.jsonl"
    journal.append(
        {
            "type": "upload",
            "name": name,
            "model": MODEL,
            "endpoint": EMBEDDINGS,
            "lines": to_ranges(line.index for line in lines),
            "tokens": 60,
        }
    )
    return name


@pytest.mark.parametrize(
    "crash",
    ["during_upload", "upload_lost", "after_upload", "during_create", "after_the_batch_ended"],
)
async def test_a_rerun_after_a_crash_at_each_step_pays_for_nothing_twice(
    tmp_path: Path, crash: str
) -> None:
    """The journal as a crash left it, the server as it was: no second upload or batch."""
    lines, journal_path = job_lines(20), tmp_path / "j.jsonl"
    async with simulator() as sim:
        client = BatchClient(sim.base_url, KEY)
        journal = BatchJournal(journal_path)
        name = start_journal(journal, sim.base_url, lines)
        file_id = None if crash == "upload_lost" else await upload_lines(client, name, lines)
        if crash not in ("during_upload", "upload_lost"):
            journal.append({"type": "uploaded", "name": name, "file_id": file_id})
        if crash in ("during_create", "after_the_batch_ended"):
            assert file_id is not None
            batch = await client.create_batch(file_id, EMBEDDINGS, {})
            if crash == "after_the_batch_ended":
                journal.append({"type": "created", "file_id": file_id, "batch_id": batch["id"]})
                while batch["status"] != "completed":
                    batch = await client.retrieve_batch(batch["id"])
                journal.append(
                    {
                        "type": "ended",
                        "batch_id": batch["id"],
                        "status": "completed",
                        "output_file_id": batch["output_file_id"],
                    }
                )
        journal.close()
        await client.aclose()
        rerun = executor(sim, journal_path)
        results = await run_all(rerun, lines)
        stats = sim.stats.batch
    assert all(r is not None and r.error is None for r in results)
    assert (stats.files_uploaded, stats.batches_created) == (1, 1)
    counts = rerun.counts
    expected = {
        "during_upload": (0, 1, 1, 0),
        "upload_lost": (1, 0, 1, 0),
        "after_upload": (0, 0, 1, 0),
        "during_create": (0, 0, 0, 1),
        "after_the_batch_ended": (0, 0, 0, 0),
    }[crash]
    assert (
        counts.files_uploaded,
        counts.files_found,
        counts.batches_created,
        counts.batches_found,
    ) == expected


async def test_status_and_cancel_see_the_jobs_open_batches_and_a_rerun_finishes_it(
    tmp_path: Path,
) -> None:
    """Status shows the batch validating; cancel stops it; the rerun sends its lines again."""
    clock, journal, lines = ManualClock(), tmp_path / "j.jsonl", job_lines(50)
    async with simulator(clock=clock.now, **HELD) as sim:
        first = executor(sim, journal)
        waiting = asyncio.gather(*(first.execute(line) for line in lines))
        await wait_until(lambda: first.counts.batches_created == 1)
        await first.aclose()
        await waiting
        offline = await batch_status(journal)
        live = await batch_status(journal, KEY)
        cancelled = await cancel_open_batches(journal, KEY)
        again = await cancel_open_batches(journal, KEY)
        await clock.advance(120)
        after = await batch_status(journal, KEY)
        second = executor(sim, journal)
        async with time_passing(clock):
            results = await run_all(second, lines)
        stats = sim.stats.batch
    assert [(v.status, v.lines, v.open) for v in offline] == [("open", 50, True)]
    assert [(v.status, v.request_counts["total"]) for v in live] == [("validating", 0)]
    assert [v.status for v in cancelled] == ["cancelling"]
    assert [v.status for v in again] == ["cancelling"]
    assert [v.status for v in after] == ["cancelled"]
    assert all(r is not None and r.error is None for r in results)
    assert (stats.files_uploaded, stats.batches_created) == (2, 2)
    assert second.counts.lines_retried == 50


@contextlib.asynccontextmanager
async def losing_one_answer(
    upstream: str, lost: str, instead: int | None = None
) -> AsyncIterator[str]:
    """A proxy to ``upstream`` that forwards the first ``lost`` request, then drops its answer.

    With ``instead``, the answer is replaced by an error of that status (a gateway's 502).

    Yields:
        The proxy's API root.
    """
    dropped: list[str] = []
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        url = upstream.removesuffix("/v1") + request.path_qs
        body = await request.read()
        async with session.request(request.method, url, data=body, headers=headers) as answer:
            payload = await answer.read()
            status, kind = answer.status, answer.content_type
        if f"{request.method} {request.path}" == lost and not dropped:
            dropped.append(lost)
            if instead is not None:  # the server acted; the gateway answers an error
                error = {"error": {"message": "Bad gateway", "type": "server_error"}}
                return web.json_response(error, status=instead)
            assert request.transport is not None
            request.transport.close()  # the server acted; its answer never arrives
        return web.Response(body=payload, status=status, content_type=kind)

    app = web.Application(client_max_size=1 << 26)
    app.router.add_route("*", "/{tail:.*}", forward)
    try:
        async with app_served(app) as root:
            yield root
    finally:
        await session.close()
    assert dropped == [lost]


@pytest.mark.parametrize("instead", [None, 502, 500, 408])
@pytest.mark.parametrize("lost", ["POST /v1/files", "POST /v1/batches"])
async def test_an_answer_lost_after_the_server_acted_is_looked_up_not_repeated(
    tmp_path: Path, lost: str, instead: int | None
) -> None:
    """No answer (or a 5xx, 408) to an upload or a create: the executor finds what was made."""
    lines = job_lines(40)
    async with simulator() as sim, losing_one_answer(sim.base_url, lost, instead) as proxy:
        batch = dataclasses.replace(FAST_OPTIONS, max_requests=20)
        rerun = BatchExecutor(proxy, KEY, batch, journal=tmp_path / "j", endpoint=EMBEDDINGS)
        results = await run_all(rerun, lines)
        stats = sim.stats.batch
    assert all(r is not None and r.error is None for r in results)
    assert (stats.files_uploaded, stats.batches_created) == (2, 2)
    found = rerun.counts.files_found if lost == "POST /v1/files" else rerun.counts.batches_found
    assert found == 1


async def test_a_webhook_nudge_reads_an_ended_batch_without_waiting_for_its_poll(
    tmp_path: Path,
) -> None:
    """Polls 60 s apart; the batch ends; batch_changed has it read within milliseconds."""
    clock, lines = ManualClock(), job_lines(20)
    async with simulator(clock=clock.now, **HELD) as sim:
        slow = executor(sim, tmp_path / "j.jsonl", poll_initial=60.0, poll_max=60.0)
        waiting = asyncio.gather(*(slow.execute(line) for line in lines))
        await wait_until(lambda: slow.counts.polls == 1)  # the first poll: validating
        await clock.advance(3_600)
        (batch,) = read_journal(tmp_path / "j.jsonl").open_batches()  # what the webhook names
        assert not slow.batch_changed("batch_unknown")
        assert slow.batch_changed(batch.batch_id)
        async with asyncio.timeout(2):
            results = await waiting
        await slow.aclose()
    assert all(r is not None and r.error is None for r in results)
    assert slow.counts.polls == 2
