"""Benchmark: what an admission costs: throttle beside aiolimiter and a bare asyncio.Semaphore.

An admission is acquire, ``await asyncio.sleep(0)``, release, with limits that never bind
(the three gates are described in ``benchmarks/admission_gates.py``; throttle's goes through
``Throttle.run``, the public API, without HTTP). Every figure is the median of 3 rounds, the
three subjects run back to back in each round, the order rotating; each run has a fresh gate,
warmed up (every key admitted once, then 1,000 more) before the clock starts, and its tasks
start together.

* admissions/s with 1 task and with 1,000 tasks admitting in a loop (wall-clock);
* added latency, p50 and p99, with 1,000 ready tasks: one task admits 500 times in a row
  while 1,000 other tasks are ready (each yields in a loop); each admission is timed from
  asking to admission (for throttle, until the admitted work starts). A limiter that admits
  in place adds about a microsecond; one that hands admission to another task (a pump) adds
  a pass of the event loop over the 1,000 ready tasks. The garbage collector is paused for
  these 500 admissions, for every subject alike: the 1,000 ready tasks allocate enough for a
  young-generation collection on nearly every pass of the loop, and one that lands inside a
  timed admission (some 100 µs over 1,000 tasks) made every subject's p99, aiolimiter's and
  the bare Semaphore's included, a figure of the collector rather than of the limiter;
* 1 -> 10,000 keys: admissions/s with 1,000 tasks, each admission on the next key in turn,
  against the same with one key, paired in the same round (the change in percent);
* a free key while 100,000 requests wait on a blocked key: admissions/s with 1,000 tasks on a
  free key, before and after the waiters are parked, on the same gate (the change).

Targets (issue 13): throttle >= 1.0x aiolimiter's admissions/s at 1 and at 1,000 tasks; p99
added latency < 50 µs; 10,000 keys within 10% of 1 key; 100k waiters slow a free key by at
most 10%. Exit status 0 only when all are met.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/perf_admission.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.admission_gates import GATES, Gate
from benchmarks.perf_figures import (
    Row,
    Section,
    change,
    duration,
    interleaved,
    markdown,
    median,
    per_second,
)

TASKS, KEYS = 1_000, 10_000


@dataclass(frozen=True, slots=True)
class AdmissionScale:
    """How much work each run does."""

    rounds: int = 3
    admissions: int = 100_000  # per throughput run
    waiters: int = 100_000  # parked on the blocked key
    timed: int = 500  # admissions timed one by one among 1,000 ready tasks

    @classmethod
    def quick(cls) -> AdmissionScale:
        """A smoke run: one round, a fifth of the work, 10,000 waiters."""
        return cls(rounds=1, admissions=20_000, waiters=10_000, timed=100)


async def _warm(gate: Gate, keys: int) -> None:
    for key in range(keys):
        await gate.admit(key)
    await asyncio.gather(*(gate.admit(n % keys) for n in range(1_000)))


async def admissions_per_second(
    gate: Gate, *, tasks: int, admissions: int, keys: int = 1, latencies: list[float] | None = None
) -> float:
    """Admissions per second of ``tasks`` tasks admitting in a loop, keys taken in turn."""
    per_task = max(1, admissions // tasks)
    turn = itertools.count()
    go = asyncio.Event()

    async def worker() -> None:
        await go.wait()
        for _ in range(per_task):
            await gate.admit(next(turn) % keys, latencies)

    workers = [asyncio.create_task(worker()) for _ in range(tasks)]
    await asyncio.sleep(0)  # every worker is waiting for the start
    gc.collect()
    started = time.perf_counter()
    go.set()
    await asyncio.gather(*workers)
    return per_task * tasks / (time.perf_counter() - started)


async def _rate(name: str, tasks: int, admissions: int) -> float:
    async with GATES[name](1) as gate:
        await _warm(gate, 1)
        return await admissions_per_second(gate, tasks=tasks, admissions=admissions)


async def _latency(name: str, admissions: int) -> tuple[float, float]:
    """p50 and p99 from asking to admission, one task admitting while 1,000 others are ready."""
    async with GATES[name](1) as gate:
        await _warm(gate, 1)
        busy = True

        async def ready_task() -> None:
            while busy:  # noqa: ASYNC110 - the point is a task that stays ready
                await asyncio.sleep(0)

        others = [asyncio.create_task(ready_task()) for _ in range(TASKS)]
        await asyncio.sleep(0)
        latencies: list[float] = []
        gc.disable()  # see the module docstring: the collector is not the limiter
        try:
            for _ in range(admissions):
                await gate.admit(0, latencies)
        finally:
            gc.enable()
        busy = False
        await asyncio.gather(*others)
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[98]


async def _keys_change(name: str, admissions: int) -> float:
    async with GATES[name](1) as gate:
        await _warm(gate, 1)
        one = await admissions_per_second(gate, tasks=TASKS, admissions=admissions)
    async with GATES[name](KEYS) as gate:
        await _warm(gate, KEYS)
        many = await admissions_per_second(gate, tasks=TASKS, admissions=admissions, keys=KEYS)
    return many / one - 1


async def _blocked_change(name: str, admissions: int, waiters: int) -> float:
    async with GATES[name](1) as gate:
        await _warm(gate, 1)
        alone = await admissions_per_second(gate, tasks=TASKS, admissions=admissions)
        parked = [asyncio.create_task(gate.park()) for _ in range(waiters)]
        for _ in range(3):
            await asyncio.sleep(0)  # every waiter reaches its queue
        await asyncio.sleep(0.1)
        crowded = await admissions_per_second(gate, tasks=TASKS, admissions=admissions)
        assert not any(task.done() for task in parked), "a parked waiter was admitted"
        for task in parked:
            task.cancel()
        await asyncio.gather(*parked, return_exceptions=True)
    return crowded / alone - 1


async def measure(scale: AdmissionScale) -> Section:
    """Run every admission figure, each subject in turn; return the report's section."""
    names, n, rounds = list(GATES), scale.admissions, scale.rounds
    one = await interleaved(rounds, {m: partial(_rate, m, 1, n // 4) for m in names})
    many = await interleaved(rounds, {m: partial(_rate, m, TASKS, n) for m in names})
    latency = await interleaved(rounds, {m: partial(_latency, m, scale.timed) for m in names})
    keys = await interleaved(rounds, {m: partial(_keys_change, m, n) for m in names})
    blocked = await interleaved(
        rounds, {m: partial(_blocked_change, m, n, scale.waiters) for m in names}
    )
    rate_one = {m: median(one[m]) for m in names}
    rate_many = {m: median(many[m]) for m in names}
    p50 = {m: median([p for p, _ in latency[m]]) for m in names}
    p99 = {m: median([p for _, p in latency[m]]) for m in names}
    key_change = {m: median(keys[m]) for m in names}
    blocked_change = {m: median(blocked[m]) for m in names}
    vs_limiter = min(
        rate_one["throttle"] / rate_one["aiolimiter"],
        rate_many["throttle"] / rate_many["aiolimiter"],
    )
    section = Section("Admission", ["throttle", "aiolimiter", "asyncio"])
    section.rows.extend(
        [
            Row(
                "admissions/s, 1 task / 1,000 tasks",
                {m: f"{per_second(rate_one[m])} / {per_second(rate_many[m])}" for m in names},
                f">= 1.0x aiolimiter at both (now {vs_limiter:.2f}x)",
                vs_limiter >= 1.0,
            ),
            Row(
                "added latency p50 / p99, 1,000 ready tasks",
                {m: f"{duration(p50[m])} / {duration(p99[m])}" for m in names},
                "p99 < 50 µs",
                p99["throttle"] < 50e-6,
            ),
            Row(
                "admissions/s, 1 → 10,000 keys (1,000 tasks)",
                {m: change(key_change[m]) for m in names},
                "within 10%",
                key_change["throttle"] >= -0.10,
            ),
            Row(
                f"free key while {scale.waiters:,} wait on a blocked key (1,000 tasks)",
                {m: change(blocked_change[m]) for m in names},
                "at most -10%",
                blocked_change["throttle"] >= -0.10,
            ),
        ]
    )
    section.notes.append(
        f"Medians of {rounds} interleaved rounds; {n:,} admissions per run with 1,000 tasks, "
        f"{n // 4:,} with 1 task; latency over {scale.timed:,} admissions of one task among "
        "1,000 ready ones. asyncio = a bare asyncio.Semaphore. The gates: "
        "benchmarks/admission_gates.py."
    )
    return section


def main() -> None:
    """Print the section; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    section = asyncio.run(measure(AdmissionScale.quick() if args.quick else AdmissionScale()))
    print(markdown(section))
    sys.exit(0 if section.targets_met else 1)


if __name__ == "__main__":
    main()
