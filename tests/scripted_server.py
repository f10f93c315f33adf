"""Servers on 127.0.0.1 for tests: any app on a free port, or one answering from a script."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

Answer = tuple[int, dict[str, Any]]
INVALID_URL = {"message": "Invalid URL (POST /v1/chat)", "type": "invalid_request_error"}
NOT_FOUND: Answer = (404, {"error": {**INVALID_URL, "param": None, "code": None}})
USAGE = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
COMPLETION: Answer = (
    200,
    {"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": USAGE},
)


async def serve(answers: list[Answer]) -> tuple[web.AppRunner, str, list[int]]:
    """Answer the n-th POST with ``answers[n]`` (the last repeats).

    Returns:
        The runner (``await runner.cleanup()`` stops it), its ``/v1`` base URL, and the
        statuses answered so far.
    """
    answered: list[int] = []

    async def answer(_request: web.Request) -> web.Response:
        status, body = answers[min(len(answered), len(answers) - 1)]
        answered.append(status)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner, root = await start_app(app)
    return runner, root, answered


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free port of 127.0.0.1.

    Returns:
        The runner (``await runner.cleanup()`` stops it) and the ``/v1`` API root.
    """
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


@asynccontextmanager
async def app_served(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 while inside; yield its ``/v1`` API root."""
    runner, root = await start_app(app)
    try:
        yield root
    finally:
        await runner.cleanup()
