"""A server on 127.0.0.1 that answers every POST from a script: a wrong URL, a working one."""

from __future__ import annotations

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
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1", answered
