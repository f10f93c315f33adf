"""One client of the limit-efficiency benchmark, run in its own process over a job file.

``benchmarks/perf_efficiency.py`` starts this script once per scenario and client, with the
simulator serving in the parent, so each side has its own process (and core) and each
client pays its own start-up (interpreter, imports, encodings) like a real job does. Every
request of the job file is submitted at once; the script prints one JSON line: succeeded,
failed, and the failures by kind.

Clients (``--client``):

* ``throttle``: ``Throttle(url, key).post(path, body)`` (limits learned from the headers).
* ``throttle-openai``: ``wrap_openai(AsyncOpenAI(...), Throttle())`` and the SDK's typed call.
* ``reference`` and ``cookbook``: ``benchmarks/reference_client.py`` and
  ``benchmarks/cookbook_client.py`` over aiohttp with an unbounded connection pool
  (``cookbook`` is given ``--rpm`` and ``--tpm``, the starting limits, and its 429 pause in
  ``--pause``).
* ``sdk``: ``AsyncOpenAI(max_retries=5)`` (6 attempts, as ``throttle run``'s default) with
  an ``asyncio.Semaphore(--concurrency)`` around each call; the SDK's own backoff.

Run: ``python benchmarks/efficiency_client.py --client throttle --url URL --path
chat/completions --bodies job.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baseline_clients import Body, Tally, character_count, chat_estimate, o200k_encoding
from benchmarks.cookbook_client import CookbookClient
from benchmarks.reference_client import ReferenceClient

API_KEY = "sk-bench"
CLIENTS = ("throttle", "throttle-openai", "reference", "cookbook", "sdk")


async def gathered(call: Callable[[Body], Awaitable[object]], bodies: list[Body]) -> Tally:
    """Submit every body at once through ``call``; count how they ended."""
    tally = Tally()

    async def counted(body: Body) -> None:
        await call(body)
        tally.success()

    for outcome in await asyncio.gather(*(counted(b) for b in bodies), return_exceptions=True):
        if isinstance(outcome, BaseException):
            tally.failed += 1
            tally.errors[type(outcome).__name__] += 1
    return tally


async def run_throttle(args: argparse.Namespace, bodies: list[Body]) -> Tally:
    """Every body through ``Throttle.post``."""
    from throttle import Throttle  # noqa: PLC0415 - each client imports only what it uses

    async with Throttle(args.url, API_KEY) as client:
        return await gathered(lambda body: client.post(args.path, body), bodies)


def _sdk_call(client: Any, path: str) -> Callable[[Body], Awaitable[object]]:
    if path == "embeddings":
        return lambda body: client.embeddings.create(**body)
    return lambda body: client.chat.completions.create(**body)


async def run_wrapped(args: argparse.Namespace, bodies: list[Body]) -> Tally:
    """Every body through the openai SDK wrapped by ``wrap_openai``."""
    import openai  # noqa: PLC0415

    from throttle import Throttle, wrap_openai  # noqa: PLC0415

    async with Throttle() as throttle:
        client = wrap_openai(openai.AsyncOpenAI(base_url=args.url, api_key=API_KEY), throttle)
        return await gathered(_sdk_call(client, args.path), bodies)


async def run_sdk(args: argparse.Namespace, bodies: list[Body]) -> Tally:
    """Every body through the plain openai SDK, ``--concurrency`` at a time."""
    import openai  # noqa: PLC0415

    client = openai.AsyncOpenAI(base_url=args.url, api_key=API_KEY, max_retries=5)
    room = asyncio.Semaphore(args.concurrency)
    call = _sdk_call(client, args.path)

    async def bounded(body: Body) -> object:
        async with room:
            return await call(body)

    try:
        return await gathered(bounded, bodies)
    finally:
        await client.close()


async def run_baseline(args: argparse.Namespace, bodies: list[Body]) -> Tally:
    """Every body through the reference client or the cookbook design."""
    import aiohttp  # noqa: PLC0415

    encoding = o200k_encoding()

    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    timeout = aiohttp.ClientTimeout(total=120)
    url = f"{args.url}/{args.path}"
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as s:
        if args.client == "reference":
            estimate = partial(chat_estimate, character_count, per_message=4)
            reference = ReferenceClient(s, url, estimate)
            return await reference.run(bodies)
        cookbook = CookbookClient(
            s,
            url,
            partial(chat_estimate, count, per_message=4),
            rpm=args.rpm,
            tpm=args.tpm,
            pause_seconds=args.pause,
        )
        return await cookbook.run(bodies)


RUNNERS = {
    "throttle": run_throttle,
    "throttle-openai": run_wrapped,
    "reference": run_baseline,
    "cookbook": run_baseline,
    "sdk": run_sdk,
}


def main() -> None:
    """Run the job; print its tally as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--url", required=True, help="the API root, http://127.0.0.1:N/v1")
    parser.add_argument("--path", required=True, help="chat/completions or embeddings")
    parser.add_argument("--bodies", type=Path, required=True, help="JSONL, one body a line")
    parser.add_argument("--rpm", type=float, default=0.0, help="cookbook: its RPM budget")
    parser.add_argument("--tpm", type=float, default=0.0, help="cookbook: its TPM budget")
    parser.add_argument("--pause", type=float, default=15.0, help="cookbook: pause after a 429")
    parser.add_argument("--concurrency", type=int, default=64, help="sdk: its semaphore")
    args = parser.parse_args()
    bodies = [json.loads(line) for line in args.bodies.read_text().splitlines()]
    tally = asyncio.run(RUNNERS[args.client](args, bodies))
    figures = {"succeeded": tally.succeeded, "failed": tally.failed, "errors": tally.errors}
    print(json.dumps({**figures, "last_success": tally.last_success}))


if __name__ == "__main__":
    main()
