"""Benchmark: admissions per second through one Redis, from 4 processes on one key.

Each of 4 processes (``multiprocessing``, spawned) builds ``Throttle(redis_url=...,
limits=Limits(rpm=1e9, tpm=1e12))`` (limits that never bind) and runs 64 tasks that each call
``await t.run(noop, model="gpt-4o", tokens=1)`` in a loop: after a warm-up, the admissions
finished inside a common window (5 s by default, wall-clock) are counted. The same runs on
the in-memory backend (no ``redis_url``; each process its own buckets) for contrast.
Reported: admissions per second summed over the processes; for Redis, the round trips per
admission (commands clients sent in the window, from ``INFO commandstats``, less the commands
the Lua script runs inside the server and less INFO) and every command counted per admission.
Target: >= 5,000 admissions/s through Redis (the exit status). ``--profile`` runs cProfile in
one of the Redis processes and prints its top costs.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/admission_throughput.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing
import os
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workers import RedisTraffic, command_counts, traffic
from throttle import Limits, Throttle
from throttle.testing.redis_server import RedisServer

PROCESSES, TASKS, TARGET = 4, 64, 5_000
SETUP_SECONDS = 4.0  # spawning and importing, then warming up, before the window opens
UNBOUND = Limits(rpm=1e9, tpm=1e12)


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    """Figures of one backend."""

    backend: str
    seconds: float
    per_process: list[int]
    errors: int
    late_processes: int
    client_cpu_seconds: float
    redis_cpu_seconds: float | None
    redis: RedisTraffic | None

    @property
    def admissions(self) -> int:
        """Admissions inside the window, over every process."""
        return sum(self.per_process)

    @property
    def per_second(self) -> float:
        """Admissions per second, over every process."""
        return self.admissions / self.seconds


async def noop() -> None:
    """The work admitted: nothing."""


async def _admit_in_loop(client: Throttle, opens: float, closes: float) -> tuple[int, int]:
    counted = errors = 0
    while time.time() < closes:
        try:
            await client.run(noop, model="gpt-4o", tokens=1)
        except Exception:  # counted and reported, not expected
            errors += 1
            continue
        counted += opens <= time.time() < closes
    return counted, errors


async def _cpu_in_window(opens: float, closes: float) -> float:
    await asyncio.sleep(max(0.0, opens - time.time()))
    started = time.process_time()
    await asyncio.sleep(max(0.0, closes - time.time()))
    return time.process_time() - started


async def _measure(
    redis_url: str | None, opens: float, closes: float
) -> tuple[int, int, float, float]:
    async with Throttle(redis_url=redis_url, limits=UNBOUND) as client:
        await client.run(noop, model="gpt-4o", tokens=1)  # connect, subscribe, leave probing
        ready = time.time()
        cpu = asyncio.create_task(_cpu_in_window(opens, closes))
        tallies = await asyncio.gather(
            *(_admit_in_loop(client, opens, closes) for _ in range(TASKS))
        )
    return sum(n for n, _ in tallies), sum(e for _, e in tallies), ready, await cpu


def _by_package(stats: pstats.Stats) -> str:
    """Own time (tottime) summed by where the code lives, largest first."""
    totals: dict[str, float] = {}
    for (filename, _, _), figures in stats.stats.items():  # type: ignore[attr-defined]
        place = next(
            (name for name in ("redis", "throttle", "asyncio", "selectors") if name in filename),
            "other" if filename != "~" else "builtins (C)",
        )
        totals[place] = totals.get(place, 0.0) + figures[2]
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return "own time by package: " + ", ".join(f"{name} {t:.2f}s" for name, t in ranked) + "\n"


def measure_process(
    redis_url: str | None, opens: float, closes: float, profile: bool
) -> tuple[int, int, float, float, str]:
    """Run in one process; return its figures.

    Returns:
        Admissions in the window, errors, when it was ready, its CPU seconds in the window,
        and its profile (or "").
    """
    if not profile:
        return (*asyncio.run(_measure(redis_url, opens, closes)), "")
    profiler = cProfile.Profile()
    profiler.enable()
    figures = asyncio.run(_measure(redis_url, opens, closes))
    profiler.disable()
    report = io.StringIO()
    stats = pstats.Stats(profiler, stream=report)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    return (*figures, _by_package(stats) + report.getvalue())


def _redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the redis-server process used so far."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def run(backend: str, redis_url: str, seconds: float, *, profile: bool) -> ThroughputResult:
    """Measure one backend ("redis" or "memory") with :data:`PROCESSES` processes."""
    url = redis_url if backend == "redis" else None
    client = redis.Redis.from_url(redis_url)
    opens = time.time() + SETUP_SECONDS
    closes = opens + seconds
    arguments = [(url, opens, closes, profile and n == 0) for n in range(PROCESSES)]
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        pending = pool.starmap_async(measure_process, arguments)
        time.sleep(max(0.0, opens - time.time()))
        before = command_counts(client.info("commandstats")) if url else None
        cpu_before = _redis_cpu(client)
        time.sleep(max(0.0, closes - time.time()))
        after = command_counts(client.info("commandstats")) if url else None
        redis_cpu = _redis_cpu(client) - cpu_before
        figures = pending.get(timeout=seconds + 60)
    client.close()
    for *_, report in figures:
        if report:
            print(f"cProfile of one {backend} process (its admissions are slowed by it):")
            print(report)
    return ThroughputResult(
        backend=backend,
        seconds=seconds,
        per_process=[n for n, *_ in figures],
        errors=sum(e for _, e, *_ in figures),
        late_processes=sum(ready > opens for _, _, ready, _, _ in figures),
        client_cpu_seconds=sum(cpu for *_, cpu, _ in figures),
        redis_cpu_seconds=redis_cpu if url else None,
        redis=traffic(before, after) if before is not None and after is not None else None,
    )


def print_table(results: list[ThroughputResult]) -> None:
    """Print one row per backend, then the Redis commands."""
    header = (
        f"{'backend':<8} {'window s':>8} {'admissions':>10} {'per s':>8} {'per process':<26} "
        f"{'errors':>6} {'late':>4} {'rt/adm':>6} {'cmd/adm':>7} {'cpu us/adm':>10} "
        f"{'redis us/adm':>12} {'cores busy':>10}  target"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        trips = "-" if r.redis is None else f"{r.redis.round_trips / r.admissions:.2f}"
        commands = "-" if r.redis is None else f"{r.redis.commands / r.admissions:.2f}"
        verdict = "-" if r.redis is None else ("met" if r.per_second >= TARGET else "MISSED")
        server = r.redis_cpu_seconds or 0.0
        print(
            f"{r.backend:<8} {r.seconds:>8.1f} {r.admissions:>10} {r.per_second:>8.0f} "
            f"{' '.join(str(n) for n in r.per_process):<26} {r.errors:>6} "
            f"{r.late_processes:>4} {trips:>6} {commands:>7} "
            f"{r.client_cpu_seconds / r.admissions * 1e6:>10.1f} "
            f"{'-' if r.redis is None else f'{server / r.admissions * 1e6:.1f}':>12} "
            f"{(r.client_cpu_seconds + server) / r.seconds:>10.2f}  {verdict}"
        )
    print(
        f"\n{PROCESSES} processes x {TASKS} tasks on one key; target (redis) >= {TARGET:,} "
        "admissions/s. 'late': processes not ready when the window opened; 'rt/adm': Redis "
        "round trips per admission; 'cmd/adm': every command INFO commandstats counted, the "
        "script's own (*) included; 'cpu us/adm': CPU of the 4 processes per admission; "
        "'redis us/adm': redis-server's; 'cores busy': both, per second of the window "
        f"(this machine has {os.cpu_count()})."
    )
    for r in results:
        if r.redis is not None:
            print(f"{r.backend}: {r.redis.breakdown()}")


def main() -> None:
    """Measure Redis, then memory; exit 1 when Redis admits fewer than the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="the measured window")
    parser.add_argument("--profile", action="store_true", help="cProfile one Redis process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="throttle-admissions-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            results = [
                run(backend, server.url, args.seconds, profile=args.profile and backend == "redis")
                for backend in ("redis", "memory")
            ]
        finally:
            server.stop()
    print_table(results)
    sys.exit(0 if results[0].per_second >= TARGET else 1)


if __name__ == "__main__":
    main()
