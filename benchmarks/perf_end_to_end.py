"""Benchmark: what a whole request costs the client, throttle beside plain clients.

Every figure runs against the fixed-answer server (``benchmarks/fixed_answer_server.py``):
its own process on loopback, answering each POST at once with the same chat completion and
rate-limit headers showing limits that never bind. Requests are ``throttle demo``'s chat
bodies, all distinct. CPU is ``time.process_time()`` of this process over the timed run (the
server's CPU is its own process's), divided by the requests; each run first sends 200
untimed requests (connections opened, limits learned). Medians of 3 interleaved rounds.
A CPU run sends 10,000 requests: a full (oldest-generation) collection of the garbage
collector takes some 40 ms in this process and a run sees one, two or three of them, so over
3,000 requests one more moved a subject's figure by 13 µs (9% of plain aiohttp's) by chance;
over 10,000, by 4 µs.

* ``Throttle.post``: every request submitted at once to ``Throttle(url, key,
  max_in_flight=64)``; beside it plain aiohttp: one ``ClientSession``, every request
  submitted at once behind an ``asyncio.Semaphore(64)``, JSON sent and decoded, status
  checked.
* the openai SDK: ``AsyncOpenAI(...).chat.completions.create(**body)`` behind a
  ``Semaphore(64)``, alone and wrapped by ``wrap_openai(client, Throttle())`` (same code
  otherwise).
* ``throttle run``: ``python -m throttle run`` over a JSONL file, no limits given (learned:
  unlimited); requests per second over the run's own elapsed time (its summary line), and
  over the whole process (start-up and imports included).

Targets (issue 13): ``Throttle.post`` CPU at most 1.5x plain aiohttp's; wrapped SDK at most
5% over the SDK alone; ``throttle run`` at least 3,000 requests/s. Exit status 0 only when
all are met.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/perf_end_to_end.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import openai

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fixed_answer_server import fixed_answer_server
from benchmarks.perf_figures import (
    Row,
    Section,
    duration,
    interleaved,
    markdown,
    median,
    per_second,
)
from throttle import Throttle, wrap_openai
from throttle.testing.demo_requests import demo_request

CONCURRENCY, WARM_UP, API_KEY = 64, 200, "sk-bench"
Send = Callable[[dict[str, Any]], Awaitable[object]]


def bodies(count: int) -> list[dict[str, Any]]:
    """``count`` distinct chat requests (``throttle demo``'s, without their metadata)."""
    made = [demo_request(index) for index in range(count)]
    for body in made:
        del body["metadata"]
    return made


async def cpu_per_request(send: Send, requests: int) -> float:
    """Warm up, then submit ``requests`` at once through ``send``; CPU seconds per request."""
    await asyncio.gather(*(send(body) for body in bodies(WARM_UP)))
    work = bodies(requests)
    started = time.process_time()
    await asyncio.gather(*(send(body) for body in work))
    return (time.process_time() - started) / requests


async def _throttle_post(url: str, requests: int) -> float:
    async with Throttle(url, API_KEY, max_in_flight=CONCURRENCY) as client:
        return await cpu_per_request(partial(client.post, "chat/completions"), requests)


async def _aiohttp_post(url: str, requests: int) -> float:
    room = asyncio.Semaphore(CONCURRENCY)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def send(body: dict[str, Any]) -> object:
            async with room, session.post(f"{url}/chat/completions", json=body) as answer:
                answer.raise_for_status()
                return await answer.json()

        return await cpu_per_request(send, requests)


async def _sdk(url: str, requests: int, *, wrapped: bool) -> float:
    room = asyncio.Semaphore(CONCURRENCY)
    async with Throttle() as throttle:
        client = openai.AsyncOpenAI(base_url=url, api_key=API_KEY)
        if wrapped:
            client = wrap_openai(client, throttle)

        async def send(body: dict[str, Any]) -> object:
            async with room:
                return await client.chat.completions.create(**body)

        try:
            return await cpu_per_request(send, requests)
        finally:
            await client.close()


async def _throttle_run(url: str, requests: int, folder: Path) -> tuple[float, float]:
    """``throttle run`` over ``requests`` lines: requests/s over its elapsed and over its life."""
    job = folder / "requests.jsonl"
    job.write_text("".join(json.dumps(body) + "\n" for body in bodies(requests)))
    results = folder / "results.jsonl"
    results.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "throttle",
        "run",
        str(job),
        "--url",
        f"{url}/chat/completions",
    ]
    command += ["-o", str(results), "--no-progress"]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "OPENAI_API_KEY": API_KEY},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    wall = time.monotonic() - started
    summary = out.decode() + err.decode()
    assert process.returncode == 0, summary[-2000:]
    match = re.search(r"elapsed ([\d.]+)\s*s", summary)
    elapsed = float(match.group(1)) if match else wall
    return requests / elapsed, requests / wall


async def measure(rounds: int, requests: int, run_requests: int) -> Section:
    """Run every end-to-end figure against one fixed-answer server; return the section."""
    async with fixed_answer_server() as url:
        post = await interleaved(
            rounds,
            {
                "throttle": partial(_throttle_post, url, requests),
                "asyncio": partial(_aiohttp_post, url, requests),
            },
        )
        sdk = await interleaved(
            rounds,
            {
                "throttle": partial(_sdk, url, requests, wrapped=True),
                "asyncio": partial(_sdk, url, requests, wrapped=False),
            },
        )
        with tempfile.TemporaryDirectory(prefix="throttle-e2e-") as folder:
            run = await interleaved(
                rounds, {"throttle": partial(_throttle_run, url, run_requests, Path(folder))}
            )
    post_cpu = {name: median(runs) for name, runs in post.items()}
    sdk_cpu = {name: median(runs) for name, runs in sdk.items()}
    post_ratio = post_cpu["throttle"] / post_cpu["asyncio"]
    sdk_over = sdk_cpu["throttle"] / sdk_cpu["asyncio"] - 1
    run_rate = median([own for own, _ in run["throttle"]])
    run_life = median([life for _, life in run["throttle"]])
    section = Section("End to end", ["throttle", "asyncio"])
    section.rows.extend(
        [
            Row(
                "client CPU per request, `Throttle.post` vs plain aiohttp + semaphore",
                {name: duration(cpu) for name, cpu in post_cpu.items()},
                f"<= 1.5x plain (now {post_ratio:.2f}x)",
                post_ratio <= 1.5,
            ),
            Row(
                "client CPU per request, openai SDK wrapped vs SDK alone",
                {name: duration(cpu) for name, cpu in sdk_cpu.items()},
                f"<= +5% (now {sdk_over * 100:+.0f}%)",
                sdk_over <= 0.05,
            ),
            Row(
                "`throttle run` requests/s, loopback, unlimited (whole process)",
                {"throttle": f"{per_second(run_rate)} ({per_second(run_life)})"},
                ">= 3,000/s",
                run_rate >= 3_000,
            ),
        ]
    )
    section.notes.append(
        f"Fixed-answer server in its own process; {requests:,} requests per CPU run after "
        f"{WARM_UP} untimed, {CONCURRENCY} at a time; `throttle run` over {run_requests:,} lines. "
        f"Medians of {rounds}. asyncio = plain aiohttp + Semaphore(64), or the openai SDK alone "
        "+ Semaphore(64)."
    )
    return section


def main() -> None:
    """Print the section; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 round, fewer requests")
    args = parser.parse_args()
    rounds, requests, run_requests = (1, 1_000, 3_000) if args.quick else (3, 10_000, 20_000)
    section = asyncio.run(measure(rounds, requests, run_requests))
    print(markdown(section))
    sys.exit(0 if section.targets_met else 1)


if __name__ == "__main__":
    main()
