"""Acceptance benchmark: 1,200 chat requests at once into an empty bucket.

Simulator: RPM 3,000, TPM 1,000,000, 300 ms latency, every bucket empty at start (another job
just drained the key). The limits are not given to throttle: it must learn them.

Theoretical minimum = tokens the server charged / TPM (the bucket only refills that fast).
Targets (issue 2): all succeed, at most 6 answers of 429, elapsed <= 1.1 x the minimum.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/cold_bucket.py [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from dataclasses import dataclass

import throttle
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

RPM, TPM, LATENCY = 3_000, 1_000_000, 0.3


@dataclass(frozen=True, slots=True)
class ColdBucketResult:
    """Figures of one run."""

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
        """All succeeded, at most 6 x 429, at most 1.1 x the minimum."""
        return self.failed == 0 and self.server_429 <= 6 and self.ratio <= 1.1


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


async def run(
    requests: int, *, rpm: int = RPM, tpm: int = TPM, latency: float = LATENCY
) -> ColdBucketResult:
    """Run the benchmark once and return its figures."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=rpm, tpm=tpm), start_level=0.0, latency=latency
    )
    async with SimulatedAPI(config) as sim, throttle.Throttle(sim.base_url, "sk-bench") as client:
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.post("chat/completions", chat_body(i)) for i in range(requests)),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
    failed = sum(isinstance(r, BaseException) for r in results)
    return ColdBucketResult(
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
    args = parser.parse_args()
    result = asyncio.run(run(args.requests))
    print(
        json.dumps(
            {
                **dataclasses.asdict(result),
                "ratio": round(result.ratio, 4),
                "meets_targets": result.meets_targets(),
            },
            indent=2,
        )
    )
    sys.exit(0 if result.meets_targets() else 1)


if __name__ == "__main__":
    main()
