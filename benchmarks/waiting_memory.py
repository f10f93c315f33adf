"""Cost of waiting: memory per queued request, and CPU burned while thousands wait.

10,000 `post` calls are queued against a drained key that admits one request a second, so
all but a handful wait. Measured: Python heap per waiting request (tracemalloc) and process
CPU time over 3 s of waiting (a polling scheduler would burn a core).

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/waiting_memory.py [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import tracemalloc

import throttle
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
WAIT_SECONDS = 3.0


async def measure(requests: int) -> dict[str, float]:
    """Queue ``requests`` posts and return bytes per waiter and CPU share while waiting."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=60, tpm=10_000_000), start_level=0.0, latency=0.0
    )
    async with SimulatedAPI(config) as sim, throttle.Throttle(sim.base_url, "sk-mem") as client:
        throttle.estimate_tokens("chat/completions", BODY)  # load the encoding outside the count
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = [
            asyncio.create_task(client.post("chat/completions", BODY)) for _ in range(requests)
        ]
        await asyncio.sleep(0.5)  # let every task reach the queue
        waiting = client.waiting()
        heap = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        gc.collect()
        await asyncio.sleep(1.0)  # tracemalloc's teardown costs CPU for a moment: not waiting's
        cpu_started, wall_started = time.process_time(), time.monotonic()
        await asyncio.sleep(WAIT_SECONDS)
        cpu = time.process_time() - cpu_started
        wall = time.monotonic() - wall_started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "requests": requests,
        "waiting": waiting,
        "bytes_per_waiting_request": round(heap / requests),
        "cpu_share_while_waiting": round(cpu / wall, 4),
    }


def main() -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000)
    print(json.dumps(asyncio.run(measure(parser.parse_args().requests)), indent=2))


if __name__ == "__main__":
    main()
