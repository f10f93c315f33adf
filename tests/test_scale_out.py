"""Several workers on one key through Redis, against the simulated API, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from throttle import AdmissionPolicy, Limits, QuotaExhaustedError, Throttle
from throttle.redis_backend import RedisBackend
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

RPM = 1200  # 20 requests a second, shared by every worker
REQUESTS_PER_WORKER = 30


def body(i: int) -> dict[str, object]:
    """A small chat request."""
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"{i}"}],
    }


def without_headers() -> SimulatorConfig:
    """RPM shared by every worker, an empty bucket, and no rate-limit headers to learn from."""
    return SimulatorConfig(
        default_limits=ModelLimits(rpm=RPM, tpm=10_000_000),
        start_level=0.0,
        latency=0.01,
        rate_limit_headers=False,
    )


async def test_workers_sharing_redis_stay_under_a_limit_the_server_never_tells(
    redis_url: str,
) -> None:
    """Two workers given the true RPM, no headers from the server: together they keep to it."""
    config = without_headers()
    connections = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    policy = AdmissionPolicy(reserve_fraction=0.0)
    try:
        async with SimulatedAPI(config) as sim:
            backends = [
                RedisBackend(connection, lambda _key: Limits(rpm=RPM), policy)
                for connection in connections
            ]
            workers = [Throttle(sim.base_url, "sk-shared", backend=b) for b in backends]
            started = time.monotonic()
            try:
                answers = await asyncio.gather(
                    *(
                        worker.post("chat/completions", body(i))
                        for worker in workers
                        for i in range(REQUESTS_PER_WORKER)
                    )
                )
            finally:
                for worker, backend in zip(workers, backends, strict=True):
                    await worker.close()
                    await backend.close()
            elapsed = time.monotonic() - started
            rate_limited = sim.stats.total_429
    finally:
        for connection in connections:
            await connection.aclose()
    assert len(answers) == 2 * REQUESTS_PER_WORKER
    assert rate_limited <= 1  # one worker alone at the same pace would see none either
    # 60 requests at 20/s from an empty bucket (the probe goes first): about 3 s, not 1.5 s.
    assert elapsed >= (2 * REQUESTS_PER_WORKER - 1) / (RPM / 60) * 0.9


async def test_one_workers_insufficient_quota_stops_the_other_and_a_reset_frees_both(
    redis_url: str,
) -> None:
    """Worker A runs out of quota: B's queued requests fail unsent at once; A's reset frees B."""
    config = SimulatorConfig(latency=0.01, rate_limit_headers=False, quota_tokens=1)
    limits = {"gpt-4o-mini": Limits(rpm=6000), "gpt-4o": Limits(rpm=6)}  # B's queue: 10 s apart
    async with (
        SimulatedAPI(config) as sim,
        Throttle(sim.base_url, "sk-org", limits=limits, redis_url=redis_url) as first,
        Throttle(sim.base_url, "sk-org", limits=limits, redis_url=redis_url) as second,
    ):
        await second.post("chat/completions", {**body(0), "model": "gpt-4o"})  # B's probe
        queued = [
            asyncio.create_task(second.post("chat/completions", {**body(i), "model": "gpt-4o"}))
            for i in range(3)
        ]
        with pytest.raises(QuotaExhaustedError):  # B's probe charged past the 1-token quota
            await first.post("chat/completions", body(1))
        sent = sim.stats.received
        started = time.monotonic()
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        assert time.monotonic() - started < 2.0  # not the 10 s their bucket asked
        assert all(isinstance(outcome, QuotaExhaustedError) for outcome in outcomes)
        assert all(isinstance(o, QuotaExhaustedError) and o.attempts == 0 for o in outcomes)
        assert second.quota_error() is not None
        assert sim.stats.received == sent
        await first.reset_quota_breaker()
        async with asyncio.timeout(5):
            while second.quota_error() is not None:  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.01)


def run_worker(requests: Path, output: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    """Start one `throttle run` worker process."""
    command = [sys.executable, "-m", "throttle", "run", str(requests), "--url", url]
    return subprocess.Popen(
        [*command, "-o", str(output), "--no-progress", *extra],
        env={**os.environ, "OPENAI_API_KEY": "sk-cli"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_throttle_run_workers_share_limits_through_redis(
    redis_url: str, tmp_path: Path
) -> None:
    """Two `throttle run --redis` processes, no headers, true RPM: every line once, no 429."""
    config = without_headers()
    inputs = [tmp_path / f"part{n}.jsonl" for n in range(2)]
    for n, path in enumerate(inputs):
        path.write_text("".join(json.dumps(body(n * 100 + i)) + "\n" for i in range(20)))
    async with SimulatedAPI(config) as sim:
        url = f"{sim.base_url}/chat/completions"
        workers = [
            run_worker(path, path.with_suffix(".out"), url, "--redis", redis_url, "--rpm", f"{RPM}")
            for path in inputs
        ]
        codes = [await asyncio.to_thread(worker.wait, 60) for worker in workers]
        said = [worker.communicate()[1] for worker in workers]
    assert codes == [0, 0], said
    for path in inputs:
        indexes = [
            json.loads(line)["index"] for line in path.with_suffix(".out").read_text().splitlines()
        ]
        assert sorted(indexes) == list(range(20))
    assert sim.stats.total_429 <= 1, (sim.stats.as_dict(), said)


def test_throttle_run_names_a_bad_redis_url_without_its_password(tmp_path: Path) -> None:
    """A malformed URL: exit 2 and an error that shows *** in place of the password."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(body(0)) + "\n")
    worker = run_worker(
        requests, tmp_path / "out.jsonl", "http://127.0.0.1:9/v1", "--redis", "redis://:hunter2@h:x"
    )
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 2
    assert "redis://:***@h:x" in stderr
    assert "hunter2" not in stderr
