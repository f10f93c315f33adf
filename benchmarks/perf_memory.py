"""Benchmark: memory per waiting request, throttle beside aiolimiter and bare asyncio.

100,000 tasks are started on a key that has no room, so every one of them waits; the Python
heap they add, measured with ``tracemalloc`` (current traced size after the waiters are
parked and ``gc.collect()``, less the size before they were created; the task, its coroutine
frames and whatever the limiter keeps), is divided by their number. Not RSS: the allocator's
arenas and free lists make RSS move in steps, tracemalloc counts each object exactly.

* admission path: ``Throttle.run(yield_once, model="blocked", tokens=1)`` (the gates of
  ``benchmarks/admission_gates.py``: the blocked model's ceiling is RPM 1, already spent)
  beside ``async with AsyncLimiter`` on a spent limiter and ``async with Semaphore(0)``;
* full ``post``: ``Throttle.post("chat/completions", body)`` against the built-in simulator,
  whose model allows 1 request a minute: the first request spends it and its headers say
  so, so every later one waits for room (the limit learned, not given). Beside it plain
  aiohttp: a task that would ``session.post`` the same body once a ``Semaphore(0)`` lets it.
  Every task shares one body (the body is the caller's memory, not the limiter's).

Target (issue 13): under 2.5 KB per waiting ``post`` (full path). One round by default: the
figure is the same to 0.1 KB from run to run and from 10,000 to 100,000 waiters, and a round
takes over a minute (throttle's waiters take superlinear time to park and to cancel);
``--rounds 3`` gives medians, subjects interleaved. Exit status 0 only when the target is met.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/perf_memory.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.admission_gates import BLOCKED_MODEL, GATES, NO_CAP
from benchmarks.perf_figures import Row, Section, interleaved, kilobytes, markdown, median
from throttle import Throttle
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

TARGET_BYTES = 2_500
BODY = {
    "model": BLOCKED_MODEL,
    "messages": [{"role": "user", "content": "Summarise the quarterly report in one line."}],
    "max_tokens": 50,
}
# The blocked model allows one request a minute; the first one spends it, and the answer's
# headers tell the client so: every later request waits for room.
SIMULATOR = SimulatorConfig(latency=0.0, models={BLOCKED_MODEL: ModelLimits(rpm=1, tpm=10**9)})
Waiter = Callable[[], Coroutine[Any, Any, object]]


async def heap_per_waiter(wait: Waiter, count: int) -> float:
    """Start ``count`` tasks running ``wait``; return the traced heap they add, per task."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.create_task(wait()) for _ in range(count)]
    for _ in range(3):
        await asyncio.sleep(0)  # every task reaches its queue
    await asyncio.sleep(0.1)
    gc.collect()
    added = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    waiting = sum(not task.done() for task in tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert waiting == count, f"only {waiting} of {count} were waiting"
    return added / count


async def _gate(name: str, count: int) -> float:
    async with GATES[name](1) as gate:
        return await heap_per_waiter(gate.park, count)


async def _throttle_post(url: str, count: int) -> float:
    async with Throttle(url, "sk-bench", max_in_flight=NO_CAP) as client:
        await client.post("chat/completions", BODY)  # spends the blocked model; opens the pool
        assert client.waiting() == 0
        return await heap_per_waiter(partial(client.post, "chat/completions", BODY), count)


async def _aiohttp_post(url: str, count: int) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/chat/completions", json=BODY) as answer:
            await answer.json()  # opens the pool, as Throttle's warm-up does
        room = asyncio.Semaphore(0)

        async def wait() -> object:
            async with room, session.post(f"{url}/chat/completions", json=BODY) as answer:
                return await answer.json()

        return await heap_per_waiter(wait, count)


async def _with_server(
    measure: Callable[[str, int], Coroutine[Any, Any, float]], count: int
) -> float:
    """Run ``measure`` against a fresh simulator whose blocked model allows 1 request/min."""
    async with SimulatedAPI(SIMULATOR) as sim:
        return await measure(sim.base_url, count)


async def measure(rounds: int, waiters: int) -> Section:
    """Measure every subject; return the report's section."""
    admission = await interleaved(rounds, {name: partial(_gate, name, waiters) for name in GATES})
    post = await interleaved(
        rounds,
        {
            "throttle": partial(_with_server, _throttle_post, waiters),
            "asyncio": partial(_with_server, _aiohttp_post, waiters),
        },
    )
    per_post = median(post["throttle"])
    section = Section("Memory", ["throttle", "aiolimiter", "asyncio"])
    section.rows.extend(
        [
            Row(
                f"memory per waiting request, admission path ({waiters:,} waiters)",
                {name: kilobytes(median(runs)) for name, runs in admission.items()},
            ),
            Row(
                f"memory per waiting request, full `post` ({waiters:,} waiters)",
                {name: kilobytes(median(runs)) for name, runs in post.items()},
                "< 2.5 KB",
                per_post < TARGET_BYTES,
            ),
        ]
    )
    section.notes.append(
        f"tracemalloc (Python heap, not RSS), {rounds} round(s). Full path: throttle = "
        "`Throttle.post`; asyncio = plain aiohttp, a task waiting on a Semaphore(0) before its "
        "`session.post` (benchmarks/perf_memory.py)."
    )
    return section


def main() -> None:
    """Print the section; exit 1 when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10,000 waiters, not 100,000")
    parser.add_argument("--rounds", type=int, default=1, help="medians of this many rounds")
    args = parser.parse_args()
    section = asyncio.run(measure(args.rounds, 10_000 if args.quick else 100_000))
    print(markdown(section))
    sys.exit(0 if section.targets_met else 1)


if __name__ == "__main__":
    main()
