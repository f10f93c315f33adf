"""Acceptance check: insufficient_quota hit mid-job stops the credential at once.

2,000 chat requests against a simulator whose organization runs out of quota after 100,000
tokens (latency 200 ms, limits not binding). Reported: how the requests ended, the longest
time from the breaker opening to a request failing, the requests in flight when it opened,
and how many requests reached the server after the first quota error.
Targets (issue 2): every remaining request fails with QuotaExhaustedError within 1 s, and no
more than the in-flight requests reach the server after the first quota error.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/quota_stop.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import throttle
from throttle.testing import InFlightWatch, ModelLimits, SimulatedAPI, SimulatorConfig

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi " * 50}],
    "max_tokens": 300,
}


async def measure(requests: int = 2000) -> dict[str, object]:
    """Run the job and return the figures."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=6000, tpm=2_000_000), latency=0.2, quota_tokens=100_000
    )
    watch, failed_at = InFlightWatch(), []
    async with (
        SimulatedAPI(config) as sim,
        throttle.Throttle(sim.base_url, "sk-quota", on_event=watch) as client,
    ):

        async def one() -> str:
            try:
                await client.post("chat/completions", BODY)
            except throttle.QuotaExhaustedError:
                failed_at.append(time.monotonic())
                return "quota"
            except throttle.ThrottleError as error:
                return type(error).__name__
            return "ok"

        outcomes = Counter(await asyncio.gather(*(one() for _ in range(requests))))
    assert watch.opened_at is not None, "the quota breaker never opened"
    assert watch.in_flight_when_opened is not None
    latest = max(failed_at) - watch.opened_at
    return {
        "outcomes": dict(outcomes),
        "latest_failure_after_open_seconds": round(latest, 3),
        "in_flight_when_breaker_opened": watch.in_flight_when_opened,
        "received_after_first_quota_error": sim.stats.received_after_quota,
        "meets_targets": (
            set(outcomes) <= {"ok", "quota"}
            and latest < 1.0
            and sim.stats.received_after_quota <= watch.in_flight_when_opened
        ),
    }


if __name__ == "__main__":
    figures = asyncio.run(measure())
    print(json.dumps(figures, indent=2))
    sys.exit(0 if figures["meets_targets"] else 1)
