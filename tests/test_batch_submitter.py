"""Planning lines into files: full files even while lines trickle in as others end."""

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.batch_sim import FAST_OPTIONS, KEY, embedding_job, results_by_index, simulator
from tests.scripted_server import app_served
from throttle.batch_executor import BatchExecutor
from throttle.batch_journal import journal_path_for
from throttle.run_options import RunOptions
from throttle.runner import EXIT_OK, JobRunner


@contextlib.asynccontextmanager
async def slow_downloads(upstream: str, bytes_per_second: int) -> AsyncIterator[str]:
    """A proxy to ``upstream`` that sends file content at ``bytes_per_second``.

    Yields:
        The proxy's API root.
    """
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        url = upstream.removesuffix("/v1") + request.path_qs
        body = await request.read()
        async with session.request(request.method, url, data=body, headers=headers) as answer:
            payload, status, kind = await answer.read(), answer.status, answer.content_type
        if not (request.path.endswith("/content") and status == 200):
            return web.Response(body=payload, status=status, content_type=kind)
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(payload), 4096):
            await response.write(payload[start : start + 4096])
            await asyncio.sleep(4096 / bytes_per_second)
        return response

    app = web.Application(client_max_size=1 << 26)
    app.router.add_route("*", "/{tail:.*}", forward)
    try:
        async with app_served(app) as root:
            yield root
    finally:
        await session.close()


async def test_lines_fed_while_an_output_streams_in_fill_whole_files(tmp_path: Path) -> None:
    """All 500 lines held; as each answer is read a line arrives: files of 250, not of one."""
    embedding_job(tmp_path / "requests.jsonl", 1_500)
    async with simulator() as sim, slow_downloads(sim.base_url, 400_000) as proxy:
        options = RunOptions(
            input=tmp_path / "requests.jsonl",
            output=tmp_path / "results.jsonl",
            url=f"{proxy}/embeddings",
            api_key=KEY,
        )
        batch = dataclasses.replace(FAST_OPTIONS, max_lines=500, max_requests=250)
        journal = journal_path_for(options.output)
        executor = BatchExecutor(proxy, KEY, batch, journal=journal, endpoint="/v1/embeddings")
        status = await JobRunner(options, executor=executor, show_progress=False).run()
        stats = sim.stats.batch
    assert status == EXIT_OK
    assert sorted(results_by_index(options.output)) == list(range(1_500))
    assert stats.files_uploaded <= 8  # 6 full ones, and a partial one or two at most
