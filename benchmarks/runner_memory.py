"""Acceptance benchmark: ``throttle run`` over a 1,000,000-line file stays under 300 MB RSS.

Small embeddings requests against a fast simulator with huge limits, in its own process.
Reported: the runner process's peak RSS (from ``wait4``), elapsed time, result lines.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/runner_memory.py [--lines N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 300


def write_requests(path: Path, lines: int) -> None:
    """Write ``lines`` small embeddings requests."""
    with path.open("w") as handle:
        for i in range(lines):
            handle.write(
                json.dumps(
                    {
                        "model": "text-embedding-3-small",
                        "input": f"row {i}",
                        "dimensions": 4,
                        "metadata": {"row": i},
                    }
                )
                + "\n"
            )


def main() -> None:
    """Run the job in a child process and report its peak memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="throttle-memory-") as folder:
        requests = Path(folder) / "requests.jsonl"
        write_requests(requests, args.lines)
        simulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "throttle",
                "simulate",
                "--port",
                "0",
                "--rpm",
                "1000000000",
                "--tpm",
                "1000000000000",
                "--latency",
                "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert simulator.stdout is not None
            url = simulator.stdout.readline().split("listening on ")[1].split()[0]
            started = time.monotonic()
            runner = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "throttle",
                    "run",
                    str(requests),
                    "--url",
                    f"{url}/embeddings",
                    "--no-progress",
                ],
                env={**os.environ, "OPENAI_API_KEY": "sk-memory"},
            )
            _, status, usage = os.wait4(runner.pid, 0)
            elapsed = time.monotonic() - started
        finally:
            simulator.terminate()
            simulator.wait()
        results = requests.with_name("requests_results.jsonl")
        with results.open("rb") as handle:
            lines = sum(1 for _ in handle)
    peak_mb = usage.ru_maxrss / 1024
    figures = {
        "lines": args.lines,
        "result_lines": lines,
        "exit_status": os.waitstatus_to_exitcode(status),
        "peak_rss_mb": round(peak_mb, 1),
        "elapsed_seconds": round(elapsed, 1),
        "meets_target": peak_mb < TARGET_MB and lines == args.lines,
    }
    print(json.dumps(figures, indent=2))
    sys.exit(0 if figures["meets_target"] else 1)


if __name__ == "__main__":
    main()
