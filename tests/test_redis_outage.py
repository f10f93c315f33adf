"""Redis dies mid-run and comes back: what each failure policy does, end to end.

Each test starts its own password-protected redis-server, kills it (SIGKILL) while requests
flow through a Throttle to the simulated API, and restarts it. No request is lost either way,
and the password never shows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import generate_latest

from throttle import (
    AdmissionPolicy,
    BackendAvailabilityChanged,
    BackendUnavailableError,
    ConfigurationError,
    Event,
    Limits,
    MemoryBackend,
    Throttle,
    ThrottleOptions,
)
from throttle.metrics import PrometheusMetrics
from throttle.online_executor import OnlineExecutor
from throttle.redis_backend import RedisBackend
from throttle.run_options import RunOptions
from throttle.runner import EXIT_OK, EXIT_USAGE, JobRunner
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.redis_server import RedisServer

PASSWORD = "s3cret-redis-pw"  # the test server's, to prove it never shows
RPM = 1200  # 20 requests a second
REQUESTS = 40


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with a password, to kill and restart."""
    server = RedisServer(tmp_path, password=PASSWORD)
    server.start()
    yield server
    server.stop()


def body(i: int) -> dict[str, object]:
    """A small chat request."""
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"{i}"}],
    }


def simulator() -> SimulatorConfig:
    """20 requests a second, no rate-limit headers: only the shared state keeps the pace."""
    return SimulatorConfig(
        default_limits=ModelLimits(rpm=RPM, tpm=10_000_000), latency=0.01, rate_limit_headers=False
    )


def shared_backend(server: RedisServer, **settings: Any) -> RedisBackend:
    """A backend on ``server`` given the true RPM, retrying Redis every 0.2 s."""
    return RedisBackend.from_url(
        server.url,
        lambda _key: Limits(rpm=RPM),
        AdmissionPolicy(reserve_fraction=0.0),
        reconnect_seconds=0.2,
        **settings,
    )


async def until(condition: Any, seconds: float = 10.0) -> None:
    """Wait until ``condition()`` holds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - counters of the simulator have no event
            await asyncio.sleep(0.01)


def problems(events: list[Event]) -> list[str | None]:
    """What the BackendAvailabilityChanged events said, in order."""
    return [e.problem for e in events if isinstance(e, BackendAvailabilityChanged)]


async def test_fail_closed_sends_nothing_while_redis_is_down_then_finishes_every_request(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed after 10 answers, back 1.5 s later: nothing sent meanwhile, all 40 answered."""
    events: list[Event] = []
    async with (
        SimulatedAPI(simulator()) as sim,
        shared_backend(own_redis, outage_seconds=30.0) as backend,
        Throttle(sim.base_url, "sk-closed", backend=backend, on_event=events.append) as client,
    ):
        tasks = [asyncio.create_task(client.post("chat/completions", body(i))) for i in range(40)]
        await until(lambda: sim.stats.received >= 10)
        own_redis.kill()
        await until(lambda: problems(events))
        sent_when_down = sim.stats.received
        await asyncio.sleep(1.5)
        assert sim.stats.received == sent_when_down
        own_redis.start()
        answers = await asyncio.gather(*tasks)
    assert len(answers) == REQUESTS
    assert sim.stats.received == REQUESTS
    said = problems(events)
    assert said[0] is not None
    assert "unreachable" in said[0]
    assert "fail_closed" in said[0]
    assert said[-1] is None
    assert "unreachable" in caplog.text
    assert PASSWORD not in caplog.text + repr(said) + repr(backend) + repr(client)


async def test_fail_closed_fails_waiting_requests_unsent_after_the_outage_limit(
    own_redis: RedisServer,
) -> None:
    """Redis gone for good: queued requests fail with a clear error naming the server."""
    async with (
        SimulatedAPI(simulator()) as sim,
        shared_backend(own_redis, outage_seconds=0.5) as backend,
        Throttle(sim.base_url, "sk-closed", backend=backend) as client,
    ):
        await client.post("chat/completions", body(0))
        own_redis.kill()
        outcomes = await asyncio.gather(
            *(client.post("chat/completions", body(i)) for i in range(5)), return_exceptions=True
        )
    assert sim.stats.received == 1
    assert all(isinstance(outcome, BackendUnavailableError) for outcome in outcomes), outcomes
    message = str(outcomes[0])
    assert f"Redis at redis://127.0.0.1:{own_redis.port}" in message
    assert "fail_closed" in message
    assert PASSWORD not in message


async def test_fail_open_keeps_sending_on_local_limits_and_shares_again_when_redis_returns(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests flow while Redis is down, with a warning and the metric; then shared again."""
    metrics = PrometheusMetrics()
    events: list[Event] = []

    def listen(event: Event) -> None:
        events.append(event)
        metrics(event)

    async with (
        SimulatedAPI(simulator()) as sim,
        shared_backend(own_redis, failure_policy="fail_open") as backend,
        Throttle(sim.base_url, "sk-open", backend=backend, on_event=listen) as client,
    ):
        tasks = [asyncio.create_task(client.post("chat/completions", body(i))) for i in range(40)]
        await until(lambda: sim.stats.received >= 10)
        own_redis.kill()
        await until(lambda: problems(events))
        assert metrics.backend_unavailable == 1
        sent_when_down = sim.stats.received
        await until(lambda: sim.stats.received >= sent_when_down + 5)  # sending meanwhile
        own_redis.start()
        answers = await asyncio.gather(*tasks)
        await client.post("chat/completions", body(99))  # reaches Redis: shared again
        async with aioredis.Redis.from_url(own_redis.url) as direct:
            assert await direct.keys("throttle:*")
    assert len(answers) == REQUESTS
    said = problems(events)
    assert said[0] is not None
    assert "fail_open" in said[0]
    assert said[-1] is None
    assert metrics.backend_unavailable == 0
    assert metrics.backend_outages == 1
    assert "unreachable" in caplog.text
    exposition = generate_latest(metrics.registry).decode()
    assert PASSWORD not in caplog.text + exposition + repr(said)


async def test_a_job_stopped_by_a_redis_outage_resumes_without_losing_a_line(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """fail_closed, Redis gone past the limit: the job aborts; rerun later, every line once."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(body(i)) + "\n" for i in range(60)))
    async with SimulatedAPI(simulator()) as sim:
        url = f"{sim.base_url}/chat/completions"
        options = RunOptions(requests, tmp_path / "results.jsonl", url, "sk-job")
        async with shared_backend(own_redis, outage_seconds=0.5) as backend:
            executor = OnlineExecutor(Throttle(options.url, "sk-job", backend=backend))
            runner = JobRunner(options, executor=executor, show_progress=False)
            job = asyncio.create_task(runner.run())
            await until(lambda: sim.stats.received >= 15)
            own_redis.kill()
            first_status = await job
        assert runner.fatal is not None
        assert "unreachable" in runner.fatal
        assert PASSWORD not in runner.fatal
        own_redis.start()
        async with shared_backend(own_redis) as backend:
            executor = OnlineExecutor(Throttle(options.url, "sk-job", backend=backend))
            second_status = await JobRunner(options, executor=executor, show_progress=False).run()
    assert first_status == EXIT_USAGE
    assert second_status == EXIT_OK
    indexes = sorted(json.loads(line)["index"] for line in options.output.read_text().splitlines())
    assert indexes == list(range(60))


async def test_a_redis_url_with_a_password_works_and_never_shows(own_redis: RedisServer) -> None:
    """Through a password-protected server: answers arrive; reprs and errors hide the secret."""
    async with (
        SimulatedAPI(simulator()) as sim,
        Throttle(sim.base_url, "sk-pw", redis_url=own_redis.url) as client,
    ):
        await client.post("chat/completions", body(0))
        shown = repr(client) + repr(client.options)
    assert PASSWORD not in shown
    assert "redis" in shown.lower()
    with pytest.raises(ConfigurationError) as bad:
        Throttle(redis_url=f"redis://:{PASSWORD}@127.0.0.1:notaport")
    with pytest.raises(ConfigurationError) as wrong_scheme:
        Throttle(redis_url=f"http://:{PASSWORD}@127.0.0.1:6379")
    for error in (bad.value, wrong_scheme.value):
        assert PASSWORD not in str(error)
        assert "***" in str(error)
    options = RunOptions(
        Path("in.jsonl"), Path("out.jsonl"), "http://x", "sk-pw", redis_url=own_redis.url
    )
    assert PASSWORD not in repr(options)
    assert "sk-pw" not in repr(options)


def test_redis_url_and_a_backend_together_are_refused() -> None:
    """One place for the shared state: both given is a configuration error naming both."""
    with pytest.raises(ConfigurationError, match="backend and redis_url"):
        ThrottleOptions(backend=MemoryBackend(), redis_url="redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError, match="redis_failure_policy"):
        ThrottleOptions(redis_failure_policy="fail_sideways")
