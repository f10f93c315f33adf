"""Soak: the native client and ``throttle run`` for N minutes against the fault matrix.

The simulated API runs in a child process (so the figures are the client's alone) with limits
far above the load, 20 ms latency, and per attempt 5% 500s, 2% 503s, 1% dropped connections,
1% truncated streams and 1% latency spikes of 1 s, twice the client's 0.5 s per-attempt
timeout. In this process, ``--in-flight`` workers send chat and embeddings requests through
one ``Throttle.post`` without pause, and (unless ``--run-lines 0``) a loop runs ``throttle
run``'s library entry over fresh files of ``--run-lines`` Batch API lines, one after another.
Neither sends streams, so truncation never reaches them.

Every ``--sample-seconds`` it records: completions; failures; duplicates (a request ending a
second time, or a result line repeating an index); crossed answers (an embedding that is not
its own input's); losses (a request started over 60 s ago that has not ended, or, at the end,
one that never ended; a line without a result); the server's requests and faults injected;
and this process's peak RSS (``VmRSS`` of ``/proc/self/status``) and peak open file
descriptors (``/proc/self/fd``) over the interval, read every 0.5 s: peaks, because the
descriptors rise and fall with every job's connections, and a leak raises every peak.
Results are counted, never kept: one bit per request.

Flat, after warm-up (the first sample is warm-up): the mean of the last third of the
samples' peaks is at most 10% above the first third's for RSS, and at most 5 above it for
descriptors.
Targets (the exit status): zero failures, duplicates, crossed answers and losses; every
``throttle run`` job exits 0 with one success per line; RSS and descriptors flat; and every
fault the clients can meet (500, 503, drop, spike) was injected.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/soak.py --minutes 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

import aiohttp

# Run as a file, the script's folder is on the path, not the repository: make `throttle` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throttle import RetryPolicy, Throttle, ThrottleError
from throttle.online_executor import OnlineExecutor
from throttle.run_options import RunOptions
from throttle.runner import EXIT_OK, JobRunner
from throttle.testing import Faults, ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.sim_bodies import embeddings

TIMEOUT = 0.5  # seconds per attempt, client side
FAULTS = Faults(
    server_error=0.05, overloaded=0.02, drop=0.01, truncate=0.01, spike=0.01, spike_seconds=1.0
)
CLIENT_FAULTS = ("server_error", "overloaded", "drop", "spike")  # no streams: no truncation
# A fault on one attempt in ten: 8 attempts all failing (1e-8) would be chance, not a bug.
RETRY = RetryPolicy(max_attempts=8, initial_backoff=0.02, max_backoff=0.2)
PEEK_SECONDS = 0.5  # how often RSS and descriptors are read between samples
LOST_AFTER = 60.0  # seconds: 8 attempts take ~6 s at most, so a request older is lost
RSS_SLACK, FD_SLACK = 0.10, 5  # flat: last third's mean within 10% / 5 fds of the first's
MODEL, EMBEDDER, DIMENSIONS = "gpt-4o-mini", "text-embedding-3-small", 8


def body(i: int) -> tuple[str, dict[str, Any]]:
    """Request ``i``: an endpoint and a body, chat and embeddings alternating."""
    if i % 2:
        return "embeddings", {"model": EMBEDDER, "input": f"row {i}", "dimensions": DIMENSIONS}
    messages = [{"role": "user", "content": f"say something about {i}"}]
    return "chat/completions", {"model": MODEL, "messages": messages, "max_tokens": 8}


def is_own_answer(i: int, answer: Any) -> bool:
    """Whether ``answer`` answers request ``i`` (embeddings hash their input; chat: any)."""
    try:
        if not i % 2:
            return bool(answer["choices"][0]["message"]["content"])
        expected = embeddings(EMBEDDER, [f"row {i}"], 0, DIMENSIONS)["data"][0]["embedding"]
        return bool(answer["data"][0]["embedding"] == expected)
    except (KeyError, IndexError, TypeError):
        return False


@dataclass(slots=True)
class Ledger:
    """What the clients saw, as counts: one bit per request ended, no results kept."""

    started: int = 0
    completed: int = 0
    failed: int = 0
    duplicates: int = 0
    crossed: int = 0
    first_failure: str | None = None
    ended: bytearray = field(default_factory=bytearray)
    open: dict[int, float] = field(default_factory=dict)  # request -> start; <= in flight
    jobs: int = 0
    job_lines: int = 0
    job_missing: int = 0
    job_duplicates: int = 0
    job_errors: int = 0
    job_bad_exits: int = 0

    def start(self) -> int:
        """Number a new request and note when it started."""
        i = self.started
        self.started += 1
        self.open[i] = time.monotonic()
        if len(self.ended) * 8 <= i:
            self.ended.extend(bytes(4096))
        return i

    def end(self, i: int, error: BaseException | None = None, own: bool = True) -> None:
        """Request ``i`` ended, with an answer (its own or not) or an error."""
        self.open.pop(i, None)
        byte, bit = divmod(i, 8)
        if self.ended[byte] >> bit & 1:
            self.duplicates += 1
            return
        self.ended[byte] |= 1 << bit
        if error is not None:
            self.failed += 1
            self.first_failure = self.first_failure or f"{type(error).__name__}: {error}"
        else:
            self.completed += 1
            self.crossed += not own

    def lost(self, older_than: float = LOST_AFTER) -> int:
        """Requests started more than ``older_than`` seconds ago that have not ended."""
        now = time.monotonic()
        return sum(1 for started in self.open.values() if now - started > older_than)


async def native_worker(client: Throttle, ledger: Ledger, until: float) -> None:
    """Send requests one after another until ``until``."""
    while time.monotonic() < until:
        i = ledger.start()
        path, payload = body(i)
        try:
            answer = await client.post(path, payload)
        except ThrottleError as error:
            ledger.end(i, error)
        else:
            ledger.end(i, own=is_own_answer(i, answer))


async def run_loop(url: str, lines: int, ledger: Ledger, until: float) -> None:
    """Run ``throttle run`` over fresh files of ``lines`` lines until ``until``."""
    with tempfile.TemporaryDirectory(prefix="throttle-soak-") as folder:
        requests, output = Path(folder) / "requests.jsonl", Path(folder) / "results.jsonl"
        while time.monotonic() < until:
            with requests.open("w") as handle:
                for i in range(lines):
                    path, payload = body(i)
                    line = {"custom_id": str(i), "method": "POST", "url": f"/v1/{path}"}
                    handle.write(json.dumps({**line, "body": payload}) + "\n")
            job = Throttle(url, "sk-soak-run", timeout=TIMEOUT, retry=RETRY, max_in_flight=32)
            options = RunOptions(requests, output, url, "sk-soak-run")
            runner = JobRunner(options, executor=OnlineExecutor(job), show_progress=False)
            status = await runner.run()
            seen = bytearray(lines)
            with output.open() as results:
                for text in results:
                    record = json.loads(text)
                    ledger.job_duplicates += seen[record["index"]]
                    seen[record["index"]] = 1
                    ledger.job_errors += "error" in record
            ledger.jobs += 1
            ledger.job_lines += lines
            ledger.job_missing += lines - sum(seen)
            ledger.job_bad_exits += status != EXIT_OK
            output.unlink()


def rss_mb() -> float:
    """This process's resident memory, in MB (``VmRSS`` of ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(slots=True)
class Peaks:
    """The highest RSS (MB) and open descriptor count read since the last :meth:`take`."""

    rss_mb: float = 0.0
    fds: int = 0

    def read(self) -> None:
        """Read both now."""
        self.rss_mb = max(self.rss_mb, rss_mb())
        self.fds = max(self.fds, len(os.listdir("/proc/self/fd")))

    def take(self) -> tuple[float, int]:
        """Read both, return the peaks, and start over."""
        self.read()
        peaks = self.rss_mb, self.fds
        self.rss_mb, self.fds = 0.0, 0
        return peaks


@dataclass(frozen=True, slots=True)
class Sample:
    """One row of the table: the counts so far at ``seconds`` after the start."""

    seconds: float
    completed: int
    failed: int
    duplicates: int
    crossed: int
    lost: int
    job_lines: int
    rss_mb: float
    fds: int
    server_received: int
    faults: int


async def sample(
    ledger: Ledger, started: float, peaks: Peaks, stats_url: str, http: aiohttp.ClientSession
) -> Sample:
    """Read the counts, this process's peak RSS and descriptors, and the server's counters."""
    async with http.get(stats_url) as response:
        server = await response.json()
    rss, fds = peaks.take()
    return Sample(
        time.monotonic() - started,
        ledger.completed,
        ledger.failed,
        ledger.duplicates + ledger.job_duplicates,
        ledger.crossed,
        ledger.lost() + ledger.job_missing,
        ledger.job_lines,
        rss,
        fds,
        server["received"],
        sum(server["injected"].values()),
    )


def flat(samples: Sequence[Sample]) -> tuple[bool, bool, str]:
    """Whether RSS and descriptors are flat after warm-up, and the figures compared."""
    steady = list(samples[1:]) or list(samples)
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]
    rss = mean(s.rss_mb for s in first), mean(s.rss_mb for s in last)
    fds = mean(s.fds for s in first), mean(s.fds for s in last)
    text = (
        f"RSS {rss[0]:.1f} -> {rss[1]:.1f} MB (limit +{RSS_SLACK:.0%}), "
        f"fds {fds[0]:.1f} -> {fds[1]:.1f} (limit +{FD_SLACK}), "
        f"first vs last {third} of {len(steady)} samples after warm-up"
    )
    return rss[1] <= rss[0] * (1 + RSS_SLACK), fds[1] <= fds[0] + FD_SLACK, text


def print_table(samples: Sequence[Sample]) -> None:
    """Print one line per sample."""
    header = (
        f"{'s':>6} {'done':>8} {'/s':>6} {'failed':>6} {'dup':>4} {'crossed':>7} {'lost':>4} "
        f"{'run lines':>9} {'RSS MB':>7} {'fds':>4} {'srv req':>8} {'faults':>6}"
    )
    print(header)
    print("-" * len(header))
    previous = (0.0, 0)
    for s in samples:
        rate = (s.completed - previous[1]) / max(s.seconds - previous[0], 1e-9)
        previous = (s.seconds, s.completed)
        print(
            f"{s.seconds:6.0f} {s.completed:8,} {rate:6.0f} {s.failed:6} {s.duplicates:4} "
            f"{s.crossed:7} {s.lost:4} {s.job_lines:9,} {s.rss_mb:7.1f} {s.fds:4} "
            f"{s.server_received:8,} {s.faults:6,}"
        )


async def serve() -> None:
    """The child process: the simulated API with the fault matrix, until SIGTERM."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=1_000_000_000, tpm=1_000_000_000_000),
        latency=0.02,
        faults=FAULTS,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with SimulatedAPI(config) as sim:
        print(sim.base_url, flush=True)
        await stop.wait()


async def soak(args: argparse.Namespace, url: str) -> bool:
    """Run the clients for ``args.minutes``, print the table and verdict; return it."""
    ledger, samples, peaks = Ledger(), list[Sample](), Peaks()
    started = time.monotonic()
    until = started + args.minutes * 60
    stats_url = url.removesuffix("/v1") + "/_stats"
    async with (
        aiohttp.ClientSession() as http,
        Throttle(
            url, "sk-soak", timeout=TIMEOUT, retry=RETRY, max_in_flight=args.in_flight
        ) as client,
    ):
        tasks = [
            asyncio.create_task(native_worker(client, ledger, until)) for _ in range(args.in_flight)
        ]
        if args.run_lines:
            tasks.append(asyncio.create_task(run_loop(url, args.run_lines, ledger, until)))
        due = started + args.sample_seconds
        while (now := time.monotonic()) < until:
            if now >= due:
                samples.append(await sample(ledger, started, peaks, stats_url, http))
                due += args.sample_seconds
            await asyncio.sleep(PEEK_SECONDS)
            peaks.read()
        _, stuck = await asyncio.wait(tasks, timeout=LOST_AFTER)
        for task in stuck:
            task.cancel()
        final = await sample(ledger, started, peaks, stats_url, http)
        async with http.get(stats_url) as response:
            injected = (await response.json())["injected"]
    lost = ledger.lost(older_than=0) + ledger.job_missing
    samples.append(final)
    print_table(samples)
    rss_flat, fds_flat, figures = flat(samples)
    checks = {
        "no failures": ledger.failed == 0 and ledger.job_errors == 0,
        "no duplicates": ledger.duplicates == 0 and ledger.job_duplicates == 0,
        "no crossed answers": ledger.crossed == 0,
        "no losses": lost == 0 and not stuck,
        "every job exited 0": ledger.job_bad_exits == 0,
        "RSS flat": rss_flat,
        "fds flat": fds_flat,
        "every client fault injected": all(injected.get(kind) for kind in CLIENT_FAULTS),
    }
    first = f" (first: {ledger.first_failure})" if ledger.first_failure else ""
    print(
        f"\nnative: {ledger.started:,} started, {ledger.completed:,} completed, "
        f"{ledger.failed} failed{first}, {ledger.duplicates} duplicates, "
        f"{ledger.crossed} crossed, {ledger.lost(0)} never ended"
    )
    print(
        f"throttle run: {ledger.jobs} jobs, {ledger.job_lines:,} lines, {ledger.job_missing} "
        f"without a result, {ledger.job_duplicates} duplicate results, {ledger.job_errors} "
        f"errors, {ledger.job_bad_exits} non-zero exits"
    )
    print(f"server: {final.server_received:,} requests, faults injected {injected}")
    print(figures)
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(checks.values())


def main() -> None:
    """Start the simulator child, soak, and exit 0 only when every target is met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=64, help="native client workers")
    parser.add_argument("--run-lines", type=int, default=500, help="lines per job; 0: no jobs")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        print(f"soak: {args.minutes:g} min against {url}, {FAULTS.describe()}", flush=True)
        ok = asyncio.run(soak(args, url))
    finally:
        server.terminate()
        server.wait()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
