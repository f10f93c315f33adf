"""Clients sharing one limit without headers and without Redis converge instead of fighting.

A scaled-down run of ``benchmarks/scale_out.py --config blind-memory`` (issue 12, defect 10):
three clients, each given the true limits of one key whose server sends no rate-limit headers,
together ask for three times the limit. Their 429s must cut their paces until they share it;
none of their requests may fail for being rate limited, however small the attempt budget.
"""

from __future__ import annotations

import asyncio

from throttle import Limits, RetryPolicy, Throttle
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.demo_requests import demo_request

CLIENTS, REQUESTS_EACH, RPM = 3, 100, 3_000


async def one_client(url: str, first: int) -> list[object]:
    """Send this client's share at once; return each request's value or error."""
    limits = Limits(rpm=RPM, tpm=10_000_000)
    async with Throttle(url, "sk-test", limits=limits, retry=RetryPolicy(max_attempts=2)) as client:
        calls = [
            client.post("chat/completions", demo_request(first + i)) for i in range(REQUESTS_EACH)
        ]
        outcomes: list[object] = await asyncio.gather(*calls, return_exceptions=True)
        return outcomes


async def test_blind_clients_on_one_limit_all_succeed_and_429s_stay_few() -> None:
    """3 x 100 requests at 3x the limit: every one succeeds, 429s at most 15% of them."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=RPM, tpm=10_000_000),
        start_level=0.0,
        latency=0.05,
        rate_limit_headers=False,
    )
    async with SimulatedAPI(config) as sim:
        outcomes = await asyncio.gather(
            *(one_client(sim.base_url, n * REQUESTS_EACH) for n in range(CLIENTS))
        )
    failures = [o for client in outcomes for o in client if isinstance(o, BaseException)]
    assert failures == []
    assert sim.stats.total_429 <= 0.15 * CLIENTS * REQUESTS_EACH, sim.stats
