"""One client through one simulated scenario: the server in this process, the client in another.

The simulator starts with the scenario's configuration; the client
(``benchmarks/efficiency_client.py``) is started as a subprocess over a job file. While it
runs, a sampler notes every 0.25 s the tokens the server charged to the client under test
and the requests it holds unanswered; in the shared-key scenario a second client (same
organization, another key) starts with the first request of the tested one and sends a
third of the TPM, retrying its 429s after 1 s. Elapsed = the tested client's last success
(its own clock) less the server's first request; the minimum is the scenario's, from what the
server charged; 429 share = the tested client's 429 answers over its requests received, less
one: the simulator creates the key's buckets empty at the first request, so that request is
refused whatever the client (nothing can be known before the first answer); the share counts
the refusals pacing could have avoided.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.efficiency_scenarios import Scenario, background_bodies, charge
from throttle.testing import SimulatedAPI, SimulatorStats

CLIENT_SCRIPT = str(Path(__file__).resolve().with_name("efficiency_client.py"))
SAMPLE_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class EfficiencyRun:
    """What one client did in one scenario.

    Attributes:
        scenario: its name.
        client: its name.
        succeeded: requests that ended with an answer.
        failed: requests that ended with an error.
        errors: failures by kind.
        elapsed: seconds from the first request to the last success.
        minimum: the least seconds the limits allow for what the server charged.
        first_request_after: seconds from starting the client to its first request.
        received: the tested client's requests that reached the server.
        rate_limited: of them, answered 429.
        peak_in_flight: most requests the server held unanswered at a sample.
        timeline: (seconds since the server started, tokens charged to the client so far).
        timed_out: the client was killed after its time ran out.
    """

    scenario: str
    client: str
    succeeded: int
    failed: int
    errors: dict[str, int]
    elapsed: float
    minimum: float
    first_request_after: float
    received: int
    rate_limited: int
    peak_in_flight: int
    timeline: list[tuple[float, float]] = field(repr=False)
    timed_out: bool = False

    @property
    def ratio(self) -> float:
        """Elapsed over the theoretical minimum."""
        return self.elapsed / self.minimum if self.minimum > 0 else math.inf

    @property
    def share_429(self) -> float:
        """429 answers over requests received, the first request's refusal not counted."""
        return max(0, self.rate_limited - 1) / self.received if self.received else 0.0


class SharedKeyLoad:
    """The second client of the shared-key scenario: a steady share of TPM, its 429s retried."""

    def __init__(self, url: str, path: str, tokens_per_second: float) -> None:
        self.url, self.path = f"{url}/{path}", path
        self.bodies = background_bodies(10_000)
        self.interval = charge(self.bodies[0], path) / tokens_per_second
        self.sent = self.rate_limited = 0
        self.charged: list[tuple[float, int]] = []  # (time.monotonic() sent, tokens)

    def __repr__(self) -> str:
        return f"SharedKeyLoad(sent={self.sent}, rate_limited={self.rate_limited})"

    def charged_by(self, moment: float) -> int:
        """Tokens charged to this client by ``moment`` (time.monotonic())."""
        return sum(tokens for at, tokens in self.charged if at <= moment)

    async def run(self, stats: SimulatorStats) -> None:
        """From the tested client's first request, send a body every interval until cancelled."""
        while stats.first_request_at is None:  # noqa: ASYNC110 - the stats offer no event
            await asyncio.sleep(0.005)
        headers = {"Authorization": "Bearer sk-other"}
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(headers=headers) as session:
            try:
                for body in self.bodies:
                    task = asyncio.create_task(self._send(session, body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    await asyncio.sleep(self.interval)
            finally:
                # Requests on their way were charged on arrival: let their answers count them.
                if tasks:
                    await asyncio.wait(list(tasks), timeout=1.5)
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        while True:
            self.sent += 1
            sent_at = time.monotonic()  # the server charges on arrival
            async with session.post(self.url, json=body) as answer:
                await answer.read()
            if answer.status != 429:
                self.charged.append((sent_at, charge(body, self.path)))
                return
            self.rate_limited += 1
            await asyncio.sleep(1.0)  # a second: its refused requests count against RPM too


class Sampler:
    """Notes, every :data:`SAMPLE_SECONDS`, what the server charged the tested client so far.

    Attributes:
        timeline: (seconds since the server started, tokens charged to the tested client).
        peak_in_flight: most requests the server held unanswered at a sample (all clients).
    """

    def __init__(self, stats: SimulatorStats, started: float, load: SharedKeyLoad | None):
        self.stats, self.started, self.load = stats, started, load
        self.timeline: list[tuple[float, float]] = []
        self.peak_in_flight = 0

    def __repr__(self) -> str:
        return f"Sampler(samples={len(self.timeline)}, peak_in_flight={self.peak_in_flight})"

    def in_flight(self) -> int:
        """Requests received and not yet answered (faults counted as answered)."""
        s = self.stats
        answered = s.succeeded + s.total_429 + s.too_large + s.rejected + s.abandoned
        faults = sum(n for kind, n in s.injected.items() if kind != "spike")
        return s.received - answered - faults

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            now = time.monotonic()
            other = self.load.charged_by(now) if self.load is not None else 0
            self.timeline.append((now - self.started, self.stats.charged_tokens - other))
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight())
            await asyncio.sleep(SAMPLE_SECONDS)


def sdk_concurrency(scenario: Scenario) -> int:
    """The plain SDK's semaphore: Little's law at the starting limits, plus a quarter."""
    per_body = sum(charge(b, scenario.path) for b in scenario.bodies) / len(scenario.bodies)
    per_second = min(scenario.rpm / 60, scenario.tpm / 60 / per_body)
    return max(1, math.ceil(per_second * scenario.mean_latency() * 1.25))


async def run_client(
    scenario: Scenario, client: str, folder: Path, *, pause: float, time_limit: float
) -> EfficiencyRun:
    """Run ``client`` through ``scenario`` once; kill it after ``time_limit`` seconds."""
    job = folder / "job.jsonl"
    job.write_text("".join(json.dumps(body) + "\n" for body in scenario.bodies))
    async with SimulatedAPI(scenario.config()) as sim:
        started = time.monotonic()
        stats = sim.stats
        load = None
        if scenario.shared_share:
            share = scenario.shared_share * scenario.tpm / 60
            load = SharedKeyLoad(sim.base_url, scenario.path, share)
        background = asyncio.create_task(load.run(stats)) if load is not None else None
        sampler = Sampler(stats, started, load)
        sampling = asyncio.create_task(sampler.run())
        command = [sys.executable, CLIENT_SCRIPT, "--client", client, "--url", sim.base_url]
        command += ["--path", scenario.path, "--bodies", str(job), "--pause", str(pause)]
        command += ["--rpm", str(scenario.rpm), "--tpm", str(scenario.tpm)]
        command += ["--concurrency", str(sdk_concurrency(scenario))]
        spawned = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        timed_out = False
        try:
            out, err = await asyncio.wait_for(process.communicate(), time_limit)
        except TimeoutError:
            timed_out = True
            process.kill()
            out, err = await process.communicate()
        for task in (sampling, background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    report = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    if not report:
        print(f"{client} in {scenario.name}: no report; stderr:\n{err.decode()[-2000:]}")
    return _result(
        scenario,
        client,
        stats=stats,
        load=load,
        sampler=sampler,
        spawned=spawned,
        report=report,
        timed_out=timed_out,
    )


def _result(
    scenario: Scenario,
    client: str,
    *,
    stats: SimulatorStats,
    load: SharedKeyLoad | None,
    sampler: Sampler,
    spawned: float,
    report: dict[str, Any],
    timed_out: bool,
) -> EfficiencyRun:
    first = stats.first_request_at if stats.first_request_at is not None else spawned
    last_success = report.get("last_success") or time.time()
    last = last_success - time.time() + time.monotonic()  # the client's clock, as monotonic
    # The other client's tokens count while the tested one still had requests to be charged:
    # up to its last answer, less the latency that answer took.
    other_tokens = load.charged_by(last - scenario.latency) if load is not None else 0
    other_total = sum(tokens for _, tokens in load.charged) if load is not None else 0
    own_tokens = stats.charged_tokens - other_total
    succeeded = int(report.get("succeeded", 0))
    minimum = scenario.minimum_seconds(
        first - sampler.started, own_tokens + other_tokens, stats.succeeded
    )
    return EfficiencyRun(
        scenario=scenario.name,
        client=client,
        succeeded=succeeded,
        failed=len(scenario.bodies) - succeeded,
        errors=dict(report.get("errors", {})),
        elapsed=last - first,
        minimum=minimum,
        first_request_after=first - spawned,
        received=stats.received - (load.sent if load is not None else 0),
        rate_limited=stats.total_429 - (load.rate_limited if load is not None else 0),
        peak_in_flight=sampler.peak_in_flight,
        timeline=sampler.timeline,
        timed_out=timed_out,
    )
