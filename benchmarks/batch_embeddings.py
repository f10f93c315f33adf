"""Benchmark: a 100,000-line embeddings job through ``throttle run --mode batch``.

The simulated Batch API runs in this process, ``--time-scale`` simulated seconds to the wall
second (validating 60 s, 50 lines a second per batch, finalizing 60 s: the simulator's
defaults); ``throttle run`` runs in a child process, as a user would run it. Reported: input
files and batches, requests to the Files and Batch APIs by endpoint (the simulator's count),
the child's peak RSS and CPU time (``getrusage(RUSAGE_CHILDREN)``), and elapsed simulated vs
wall time (the simulated clock runs ``--time-scale`` times faster, so most of the simulated
time of a fast run is throttle's own CPU time, stretched).

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/batch_embeddings.py [--lines N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from throttle.testing import BatchSettings, SimulatedAPI, SimulatorConfig

MODEL = "text-embedding-3-small"
WORDS = ("the quick brown fox jumps over the lazy dog while batches run at half the price").split()  # noqa: SIM905 - a sentence reads better than a list of words


def write_requests(path: Path, lines: int) -> int:
    """Write ``lines`` embeddings requests of about 40 words each; return the file's bytes."""
    with path.open("w") as handle:
        for i in range(lines):
            text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(40))
            handle.write(json.dumps({"model": MODEL, "input": f"{i}: {text}"}) + "\n")
    return path.stat().st_size


async def run_job(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Run the job against a simulator in this process; return the figures."""
    requests, results = folder / "requests.jsonl", folder / "results.jsonl"
    input_bytes = write_requests(requests, args.lines)
    settings = BatchSettings(time_scale=args.time_scale, enqueued_tokens=args.enqueued_tokens)
    async with SimulatedAPI(SimulatorConfig(latency=0, batch=settings)) as sim:
        command = [
            sys.executable,
            "-m",
            "throttle",
            "run",
            str(requests),
            "-o",
            str(results),
            "--url",
            f"{sim.base_url}/embeddings",
            "--mode",
            "batch",
            "--batch-max-requests",
            str(args.max_requests),
            "--batch-poll-min",
            str(args.poll_min),
            "--batch-poll-max",
            str(args.poll_max),
            "--no-progress",
        ]
        simulated, wall = sim.simulated_time(), time.monotonic()
        child = await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, "OPENAI_API_KEY": "sk-benchmark"},
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await child.communicate()
        wall, simulated = time.monotonic() - wall, sim.simulated_time() - simulated
        if child.returncode != 0:
            raise SystemExit(f"throttle run failed ({child.returncode}): {stderr.decode()}")
        stats = sim.stats.batch.as_dict()
    child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = child_usage.ru_maxrss  # KiB on Linux
    results_lines = sum(1 for _ in results.open())
    return {
        "lines": args.lines,
        "input_mb": round(input_bytes / 1e6, 1),
        "results_lines": results_lines,
        "files_uploaded": stats["files_uploaded"],
        "batches_created": stats["batches_created"],
        "api_requests": stats["total_requests"],
        "api_requests_by_endpoint": stats["requests"],
        "uploaded_mb": round(stats["bytes_uploaded"] / 1e6, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "simulated_seconds": round(simulated),
        "wall_seconds": round(wall, 2),
        "throttle_cpu_seconds": round(child_usage.ru_utime + child_usage.ru_stime, 2),
    }


def main() -> None:
    """Run the benchmark and print its figures (``--json`` for one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--max-requests", type=int, default=50_000, help="lines per file")
    parser.add_argument("--time-scale", type=float, default=1000.0, help="simulated s per s")
    parser.add_argument("--enqueued-tokens", type=int, default=None, help="the API's limit")
    parser.add_argument("--poll-min", type=float, default=0.05, help="seconds")
    parser.add_argument("--poll-max", type=float, default=0.5, help="seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="throttle-batch-") as folder:
        figures = asyncio.run(run_job(args, Path(folder)))
    if args.json:
        print(json.dumps(figures))
        return
    assert figures["results_lines"] == args.lines, figures
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
