"""Benchmark: one of 4 ``throttle run`` workers sharing a key through Redis is SIGKILLed mid-run.

Simulator (in this process): RPM 3,000, TPM 1,000,000, 300 ms latency, every bucket empty at
start, no rate-limit headers; the workers are given the true limits (``--rpm 3000 --tpm
1000000``) and share one redis-server started here. 2,400 chat requests, a quarter each.
Worker 0 is SIGKILLed once it has written 25% of its lines, with attempts in flight: their
reservations stay in Redis until their lease ends (``AdmissionPolicy.lease_seconds``).

Reported: the reservations the killed worker left behind; how long the key stayed under-used
after the kill (from the server's charged tokens and requests sampled every 0.5 s here: from
the kill to the start of the first window at >= 90% of the binding limit); the 429s; the
survivors' elapsed time against the theoretical minimum of all the work the key served until
they finished (max(tokens / TPM, requests / RPM)). Then the killed worker's command runs again
(resume) and every line of its file must have exactly one result.
Targets (the exit status): every survivor line succeeds exactly once; after the resume, every
line of the killed worker's file has exactly one result, a success.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/worker_crash.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workers import (
    RPM,
    TPM,
    ResultTally,
    Worker,
    kill_running,
    launch,
    minimum_seconds,
    read_results,
    simulator_config,
    start_workers,
    tally,
)
from throttle import AdmissionPolicy
from throttle.testing import SimulatedAPI, SimulatorStats
from throttle.testing.redis_server import RedisServer

REQUESTS, WORKERS, VICTIM = 2400, 4, 0
SAMPLE_SECONDS, RECOVERED = 0.5, 0.9


@dataclass(frozen=True, slots=True)
class Sample:
    """The server's counters at one moment (``time.monotonic()`` seconds)."""

    at: float
    charged_tokens: int
    succeeded: int


@dataclass(slots=True)
class Series:
    """Samples of the server's counters, taken every :data:`SAMPLE_SECONDS`."""

    samples: list[Sample] = field(default_factory=list)

    async def record(self, stats: SimulatorStats) -> None:
        """Sample ``stats`` until cancelled."""
        while True:
            self.samples.append(Sample(time.monotonic(), stats.charged_tokens, stats.succeeded))
            await asyncio.sleep(SAMPLE_SECONDS)

    def windows(self) -> list[tuple[float, float, float]]:
        """(start, end, use of the binding limit) of each pair of consecutive samples.

        A use above 100% is the server's bucket spending tokens it saved while the start was
        slow (the probe's 429, the bucket starting empty).
        """
        out = []
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            minutes = (after.at - before.at) / 60
            tokens = (after.charged_tokens - before.charged_tokens) / minutes / TPM
            requests = (after.succeeded - before.succeeded) / minutes / RPM
            out.append((before.at, after.at, max(tokens, requests)))
        return out


@dataclass(frozen=True, slots=True)
class CrashResult:
    """Figures of the run."""

    lease_seconds: float
    killed_after_lines: int
    orphaned_leases: int
    lease_ends_after_kill: tuple[float, float]
    under_used_seconds: float | None
    use_after_kill: float
    survivors: ResultTally
    server_429: int
    survivors_elapsed: float
    survivors_minimum: float
    resumed: ResultTally
    resume_status: int
    resume_elapsed: float

    def meets_targets(self) -> bool:
        """Survivors all succeeded once; the resumed file has one success per line."""
        return (
            self.survivors.exactly_once
            and self.survivors.succeeded == self.survivors.lines
            and self.resumed.exactly_once
            and self.resumed.succeeded == self.resumed.lines
        )


async def lease_ends(client: aioredis.Redis) -> dict[bytes, float]:
    """Every reservation in Redis and when its lease ends (the server's clock, seconds)."""
    ends: dict[bytes, float] = {}
    async for name in client.scan_iter(match="*:leases"):
        members = await client.zrange(name, 0, -1, withscores=True)
        for member, score in cast("list[tuple[bytes, float]]", members):
            ends[name + b"/" + member] = score
    return ends


def under_use(series: Series, killed_at: float) -> tuple[float | None, float]:
    """Seconds from the kill until a window reaches 90% use, and the mean use from the kill.

    The window the kill fell in counts: if it reached 90%, the key was never under-used.
    """
    after = [(start, use) for start, end, use in series.windows() if end > killed_at]
    recovered = next((start for start, use in after if use >= RECOVERED), None)
    mean = sum(use for _, use in after) / len(after) if after else 0.0
    return (None if recovered is None else max(0.0, recovered - killed_at)), mean


def print_series(series: Series, killed_at: float) -> None:
    """Print the use of the binding limit from 3 s before the kill to 10 s after it."""
    shown = [
        f"{start - killed_at:+.1f}s:{use:.0%}"
        for start, _, use in series.windows()
        if -3 <= start - killed_at <= 10
    ]
    print("use of the limit per 0.5 s window, from the kill: " + " ".join(shown))


async def run(folder: Path) -> CrashResult:
    """Run the workers, kill one, let the others finish, resume it; return the figures."""
    server = RedisServer(folder)
    server.start()
    client = aioredis.Redis.from_url(server.url)
    series = Series()
    workers: list[Worker] = []
    try:
        async with SimulatedAPI(simulator_config(headers=False)) as sim:
            sampler = asyncio.create_task(series.record(sim.stats))
            started = time.monotonic()
            workers = await start_workers(
                folder, sim.base_url, server.url, total=REQUESTS, count=WORKERS, limits=True
            )
            victim = workers[VICTIM]
            while victim.result_lines() < victim.lines // 4:
                assert victim.process.returncode is None, "the worker ended before the kill"
                await asyncio.sleep(0.02)
            victim.process.kill()
            killed_at = time.monotonic()
            killed_after = victim.result_lines()
            await victim.process.wait()
            seconds, micros = await client.time()
            held_then = await lease_ends(client)
            await asyncio.sleep(2.0)  # survivors' attempts take 0.3 s: what is left is orphaned
            orphaned = set(held_then) & set(await lease_ends(client))
            ends = [held_then[name] - (seconds + micros / 1e6) for name in orphaned] or [0.0]
            survivors = [w for w in workers if w is not victim]
            await asyncio.gather(*(w.process.wait() for w in survivors))
            survivors_elapsed = time.monotonic() - started
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            server_429 = sim.stats.total_429
            minimum = minimum_seconds(sim.stats.charged_tokens, sim.stats.succeeded)
            resume_started = time.monotonic()
            resumed = await launch(victim.command, victim.requests)
            resume_status = await resumed.wait()
            resume_elapsed = time.monotonic() - resume_started
    finally:
        await kill_running(workers)
        await client.aclose()
        server.stop()
    print_series(series, killed_at)
    print(f"killed worker's stderr after the resume:\n{victim.stderr().strip()}\n")
    under_used, mean_use = under_use(series, killed_at)
    return CrashResult(
        lease_seconds=AdmissionPolicy().lease_seconds,
        killed_after_lines=killed_after,
        orphaned_leases=len(orphaned),
        lease_ends_after_kill=(min(ends), max(ends)),
        under_used_seconds=under_used,
        use_after_kill=mean_use,
        survivors=tally(survivors),
        server_429=server_429,
        survivors_elapsed=survivors_elapsed,
        survivors_minimum=minimum,
        resumed=read_results(victim.results, victim.lines),
        resume_status=resume_status,
        resume_elapsed=resume_elapsed,
    )


def print_figures(r: CrashResult) -> None:
    """Print the figures, one per line."""
    first, last = r.lease_ends_after_kill
    under = "never" if r.under_used_seconds is None else f"{r.under_used_seconds:.1f} s"
    rows = [
        ("lease length (AdmissionPolicy.lease_seconds)", f"{r.lease_seconds:g} s"),
        ("killed worker's result lines at the kill", f"{r.killed_after_lines} of {REQUESTS // 4}"),
        (
            "reservations it left in Redis; their leases end after the kill",
            f"{r.orphaned_leases}; {first:.1f}-{last:.1f} s" if r.orphaned_leases else "0",
        ),
        ("under-used after the kill (to >= 90% of the limit)", under),
        ("mean use of the limit from the kill to the end", f"{r.use_after_kill:.1%}"),
        (
            "survivors: succeeded / failed / exactly once",
            f"{r.survivors.succeeded} / {r.survivors.failed} / {r.survivors.exactly_once}",
        ),
        ("429s seen by the server until the survivors ended", str(r.server_429)),
        (
            "survivors' elapsed, minimum of the work served, ratio",
            f"{r.survivors_elapsed:.2f} s, {r.survivors_minimum:.2f} s, "
            f"{r.survivors_elapsed / r.survivors_minimum:.3f}",
        ),
        ("resume: exit status, elapsed", f"{r.resume_status}, {r.resume_elapsed:.2f} s"),
        (
            "killed worker's file after the resume: ok / failed / exactly once",
            f"{r.resumed.succeeded} / {r.resumed.failed} / {r.resumed.exactly_once}",
        ),
        ("targets", "met" if r.meets_targets() else "MISSED"),
    ]
    for name, value in rows:
        print(f"{name:<66} {value}")


def main() -> None:
    """Run once and print the figures; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="throttle-crash-") as folder:
        result = asyncio.run(run(Path(folder)))
    print_figures(result)
    sys.exit(0 if result.meets_targets() else 1)


if __name__ == "__main__":
    main()
