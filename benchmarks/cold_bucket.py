"""Acceptance benchmark: 1,200 chat requests at once into an empty bucket.

Simulator: RPM 3,000, TPM 1,000,000, 300 ms latency, every bucket empty at start (another job
just drained the key). The limits are not given to throttle: it must learn them.

Theoretical minimum = tokens the server charged / TPM (the bucket only refills that fast).
Targets: all succeed, at most 6 answers of 429, elapsed <= 1.1 x the minimum through
``Throttle.post`` (issue 2), <= 1.15 x through ``AsyncOpenAI`` with the throttle transport
(issue 3), <= 1.1 x through ``throttle run``'s engine over a JSONL file, with exactly one
result line per index (issue 4). ``--via all`` (the default) runs them one after the other.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/cold_bucket.py [--via all]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import openai

import throttle
from throttle.run_options import RunOptions
from throttle.runner import JobRunner
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

RPM, TPM, LATENCY = 3_000, 1_000_000, 0.3
TARGET_RATIO = {"native": 1.1, "openai": 1.15, "run": 1.1}
CLIENTS = tuple(TARGET_RATIO)


@dataclass(frozen=True, slots=True)
class ColdBucketResult:
    """Figures of one run."""

    via: str
    requests: int
    succeeded: int
    failed: int
    server_429: int
    charged_tokens: int
    elapsed_seconds: float
    minimum_seconds: float

    @property
    def ratio(self) -> float:
        """Elapsed time over the theoretical minimum."""
        return self.elapsed_seconds / self.minimum_seconds

    def meets_targets(self) -> bool:
        """All succeeded, at most 6 x 429, within the target ratio of the client used."""
        return self.failed == 0 and self.server_429 <= 6 and self.ratio <= TARGET_RATIO[self.via]


def chat_body(index: int) -> dict[str, object]:
    """A chat request whose output cap makes TPM, not RPM, the binding limit."""
    text = f"Request {index}: summarise the quarterly report in plain English. " * 6
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text},
        ],
        "max_tokens": 400 + index % 200,
    }


async def _run_file(base_url: str, bodies: list[dict[str, object]]) -> list[object]:
    """The job runner over a JSONL file; one outcome per line, from the results file."""
    with tempfile.TemporaryDirectory(prefix="throttle-bench-") as folder:
        requests = Path(folder) / "requests.jsonl"
        requests.write_text("".join(json.dumps(body) + "\n" for body in bodies))
        output = Path(folder) / "results.jsonl"
        options = RunOptions(requests, output, f"{base_url}/chat/completions", "sk-bench")
        await JobRunner(options, show_progress=False).run()
        records = [json.loads(line) for line in output.read_text().splitlines()]
    indices = sorted(record["index"] for record in records)
    assert indices == list(range(len(bodies))), "one result line per index"
    return [RuntimeError(str(r["error"])) if "error" in r else r["response"] for r in records]


async def _send_all(base_url: str, requests: int, via: str) -> list[object]:
    bodies = [chat_body(i) for i in range(requests)]
    if via == "run":
        return await _run_file(base_url, bodies)
    if via == "openai":
        sdk = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench")
        async with throttle.Throttle() as t, sdk, throttle.wrap_openai(sdk, t) as client:
            calls = [
                client.chat.completions.create(**body)  # type: ignore[call-overload] # dict bodies
                for body in bodies
            ]
            answers: list[object] = await asyncio.gather(*calls, return_exceptions=True)
            return answers
    async with throttle.Throttle(base_url, "sk-bench") as native:
        posted: list[object] = await asyncio.gather(
            *(native.post("chat/completions", body) for body in bodies), return_exceptions=True
        )
        return posted


async def run(
    requests: int, *, rpm: int = RPM, tpm: int = TPM, latency: float = LATENCY, via: str = "native"
) -> ColdBucketResult:
    """Run the benchmark once through ``via`` (one of :data:`CLIENTS`); return its figures."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=rpm, tpm=tpm), start_level=0.0, latency=latency
    )
    async with SimulatedAPI(config) as sim:
        started = time.monotonic()
        results = await _send_all(sim.base_url, requests, via)
        elapsed = time.monotonic() - started
    failed = sum(isinstance(r, BaseException) for r in results)
    return ColdBucketResult(
        via=via,
        requests=requests,
        succeeded=requests - failed,
        failed=failed,
        server_429=sim.stats.total_429,
        charged_tokens=sim.stats.charged_tokens,
        elapsed_seconds=elapsed,
        minimum_seconds=sim.stats.charged_tokens / tpm * 60,
    )


def main() -> None:
    """Run and print the figures as JSON; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--via", choices=(*CLIENTS, "all"), default="all")
    args = parser.parse_args()
    clients = CLIENTS if args.via == "all" else (args.via,)
    results = [asyncio.run(run(args.requests, via=via)) for via in clients]
    figures = [
        {
            **dataclasses.asdict(r),
            "ratio": round(r.ratio, 4),
            "target_ratio": TARGET_RATIO[r.via],
            "meets_targets": r.meets_targets(),
        }
        for r in results
    ]
    print(json.dumps(figures, indent=2))
    sys.exit(0 if all(r.meets_targets() for r in results) else 1)


if __name__ == "__main__":
    main()
