"""Benchmark: what exporting Prometheus metrics costs the scheduler, beside metrics off.

Two paths, each run with metrics off and with metrics on in this one process, interleaved:
every round runs each path off then on, the next round on then off, so drift and the load of
other work on the machine fall on both sides alike.

* ``noop``: ``Throttle(limits=Limits(rpm=1e9, tpm=1e12))`` (limits that never bind); 64 tasks
  call ``await t.run(noop, model="gpt-4o", tokens=1)`` until 50,000 admissions are done.
* ``sim``: ``await t.post("chat/completions", demo_request(i))`` against the built-in simulator
  (no latency, limits that never bind), 3,000 requests with 64 tasks. The simulator runs in the
  same process and event loop, so its CPU counts on both sides.

Metrics on means what a deployment does: a fresh ``PrometheusMetrics`` attached to the
Throttle (its events recorded, its queues read at each scrape), served by ``serve_metrics`` on
a free loopback port, and a thread that GETs ``/metrics`` every second as Prometheus would, so
the scrapes cost too. Each run is timed from its first request to its last (wall-clock, after
one unmeasured request; the scraper starts before and stops after).

Reported per path: requests per second off and on (median of the rounds); the cost in percent
(1 - on / off of those medians) and each round's own paired cost; CPU microseconds per request
off and on (``time.process_time``: every thread of the process, so the metrics server and the
scraper count); scrapes made. Target: cost <= 5% on the sim path (the exit status): the
scheduler serving requests, estimation and HTTP included, which is what "a few percent of
scheduler throughput" means for a user. The noop path is the bound: a scheduler that does
nothing but admit, where recording a request's three events (about 1 us each) is 7-10%.
``--profile`` then times each call of the metrics' listener in place, by
event type, over one run per path, and runs cProfile over a fifth of a noop run with metrics on
(the event loop's thread only; the profiler inflates every call) to show where that time goes.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/metrics_overhead.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import http.client
import io
import os
import pstats
import socket
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

# Run as a file, the script's folder is on the path, not the repository: make `throttle` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throttle import Event, EventListener, Limits, Throttle
from throttle.metrics import PrometheusMetrics, serve_metrics
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.demo_requests import demo_request

TASKS, TARGET_PERCENT, TARGET_PATH = 64, 5.0, "sim"
SCRAPE_INTERVAL = 1.0  # seconds between scrapes, Prometheus' usual for a busy job
UNBOUND = Limits(rpm=1e9, tpm=1e12)
SIMULATOR = SimulatorConfig(latency=0.0, default_limits=ModelLimits(rpm=10**9, tpm=10**12))
PATHS = ("noop", "sim")
Work = Callable[[int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run of one path, metrics off or on."""

    path: str
    exporting: bool
    requests: int
    wall_seconds: float
    cpu_seconds: float
    scrapes: int

    @property
    def per_second(self) -> float:
        """Requests finished per second of wall-clock time."""
        return self.requests / self.wall_seconds

    @property
    def cpu_us_per_request(self) -> float:
        """CPU microseconds of the whole process per request."""
        return self.cpu_seconds / self.requests * 1e6


class Scraper:
    """Fetches ``/metrics`` every :data:`SCRAPE_INTERVAL` seconds in its own thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.scrapes = 0
        self.last_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scraper", daemon=True)

    def __repr__(self) -> str:
        return f"Scraper(port={self.port}, scrapes={self.scrapes}, last_bytes={self.last_bytes})"

    def start(self) -> None:
        """Start scraping; the first scrape comes one interval from now."""
        self._thread.start()

    def stop(self) -> None:
        """Stop scraping and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def scrape(self) -> bytes:
        """Fetch the exposition once, as Prometheus would."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200, response.status
            return response.read()
        finally:
            connection.close()

    def _loop(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL):
            self.last_bytes = len(self.scrape())
            self.scrapes += 1


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class EventTimer:
    """Times a listener's calls in place, by event type: no profiler's distortion."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"EventTimer(calls={dict(self.calls)})"

    def wrap(self, listener: EventListener) -> EventListener:
        """``listener``, timed."""
        clock, seconds, calls = time.perf_counter, self.seconds, self.calls

        def timed_listener(event: Event) -> None:
            started = clock()
            listener(event)
            name = type(event).__name__
            seconds[name] += clock() - started
            calls[name] += 1

        return timed_listener

    def report(self, path: str, requests: int) -> str:
        """One line per event type: calls per request and microseconds per call."""
        lines = [
            f"  {name:<18} {self.calls[name] / requests:>5.2f} per request "
            f"{seconds / self.calls[name] * 1e6:>6.2f} us each"
            for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1])
        ]
        total = sum(self.seconds.values()) / requests * 1e6
        return f"{path}: {total:.1f} us per request in PrometheusMetrics.__call__\n" + "\n".join(
            lines
        )


@contextmanager
def exported(client: Throttle, timer: EventTimer | None = None) -> Iterator[Scraper]:
    """Attach fresh metrics to ``client``, serve them, and scrape them while inside."""
    metrics = PrometheusMetrics()
    if timer is None:
        detach = metrics.attach(client)
    else:  # what attach does, with the listener timed
        metrics.watch_load(client.load)
        detach = client.events.subscribe(timer.wrap(metrics))
    port = free_port()
    serve_metrics(metrics, port)  # a daemon thread with no stop: it idles after the run
    scraper = Scraper(port)
    assert b"throttle_queued" in scraper.scrape()  # served before the clock starts
    scraper.start()
    try:
        yield scraper
    finally:
        scraper.stop()
        detach()


async def timed(
    client: Throttle,
    work: Work,
    path: str,
    requests: int,
    *,
    exporting: bool,
    timer: EventTimer | None,
) -> Run:
    """Call ``work(i)`` for ``i`` in ``range(requests)`` from :data:`TASKS` tasks; time it."""
    await work(requests)  # unmeasured: connections opened, encodings loaded, buckets made
    indexes = iter(range(requests))  # one iterator shared by the tasks: each index once

    async def worker() -> None:
        for index in indexes:
            await work(index)

    with exported(client, timer) if exporting else nullcontext() as scraper:
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(TASKS)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    scrapes = scraper.scrapes if scraper is not None else 0
    return Run(path, exporting, requests, wall, cpu, scrapes)


async def noop() -> None:
    """The work admitted: nothing."""


async def run_noop(requests: int, exporting: bool, timer: EventTimer | None) -> Run:
    """Admit ``requests`` no-op calls through ``Throttle.run``."""
    async with Throttle(limits=UNBOUND) as client:

        async def work(_: int) -> None:
            await client.run(noop, model="gpt-4o", tokens=1)

        return await timed(client, work, "noop", requests, exporting=exporting, timer=timer)


async def run_sim(requests: int, exporting: bool, timer: EventTimer | None) -> Run:
    """Send ``requests`` demo chat requests through ``Throttle.post`` to the simulator."""
    async with SimulatedAPI(SIMULATOR) as sim, Throttle(sim.base_url, "sk-bench") as client:

        async def work(index: int) -> object:
            return await client.post("chat/completions", demo_request(index))

        return await timed(client, work, "sim", requests, exporting=exporting, timer=timer)


def measure(path: str, requests: int, exporting: bool, timer: EventTimer | None = None) -> Run:
    """One run of ``path`` in a fresh event loop (``timer``: time the metrics' listener)."""
    runner = run_noop if path == "noop" else run_sim
    return asyncio.run(runner(requests, exporting or timer is not None, timer))


def profile_exporting(requests: int) -> str:
    """Profile one noop run with metrics on (cProfile); return where the metrics' time goes."""
    profiler = cProfile.Profile()
    profiler.enable()
    run = measure("noop", requests, exporting=True)
    profiler.disable()
    report = io.StringIO()
    stats = pstats.Stats(profiler, stream=report)
    own: dict[str, float] = {}
    places = ("prometheus_client", "throttle/metrics", "throttle", "asyncio")
    calls = 0.0
    for (filename, _, name), figures in stats.stats.items():  # type: ignore[attr-defined]
        place = next(
            (part for part in places if part in filename),
            "other" if filename != "~" else "builtins",
        )
        own[place] = own.get(place, 0.0) + figures[2]
        if filename.endswith("throttle/metrics.py") and name == "__call__":
            calls = figures[3]
    total = sum(own.values())
    print(
        f"cProfile, one noop run with metrics on ({run.requests:,} admissions, "
        f"{run.per_second:,.0f}/s under the profiler); event loop thread only.\n"
        f"PrometheusMetrics.__call__ cumulative: {calls:.2f}s of {total:.2f}s profiled "
        f"({calls / total:.1%}), {calls / run.requests * 1e6:.1f} us per admission.\n"
        "own time by place: "
        + ", ".join(f"{place} {t:.2f}s" for place, t in sorted(own.items(), key=lambda i: -i[1])),
        file=report,
    )
    stats.sort_stats("tottime").print_stats(r"prometheus_client|throttle/metrics", 20)
    stats.sort_stats("cumulative").print_stats(r"prometheus_client|throttle/metrics", 15)
    return report.getvalue()


def _paired_costs(runs: list[Run], path: str) -> list[float]:
    """Each round's cost in percent: 1 - on / off of that round's two runs."""
    off = [r.per_second for r in runs if r.path == path and not r.exporting]
    on = [r.per_second for r in runs if r.path == path and r.exporting]
    return [(1 - b / a) * 100 for a, b in zip(off, on, strict=True)]


def cost_percent(runs: list[Run], path: str) -> float:
    """1 - on / off of the medians of the rounds, in percent."""
    off = statistics.median(r.per_second for r in runs if r.path == path and not r.exporting)
    on = statistics.median(r.per_second for r in runs if r.path == path and r.exporting)
    return (1 - on / off) * 100


def print_table(runs: list[Run], rounds: int) -> None:
    """Print one row per path, then each round's paired cost."""
    header = (
        f"{'path':<5} {'requests':>8} {'off req/s':>10} {'on req/s':>10} {'cost %':>7} "
        f"{'off cpu us/req':>14} {'on cpu us/req':>13} {'cpu +%':>7} {'scrapes':>7}  target"
    )
    print(header)
    print("-" * len(header))
    for path in PATHS:
        off = [r for r in runs if r.path == path and not r.exporting]
        on = [r for r in runs if r.path == path and r.exporting]
        cpu_off = statistics.median(r.cpu_us_per_request for r in off)
        cpu_on = statistics.median(r.cpu_us_per_request for r in on)
        cost = cost_percent(runs, path)
        verdict = (
            "bound" if path != TARGET_PATH else ("met" if cost <= TARGET_PERCENT else "MISSED")
        )
        print(
            f"{path:<5} {off[0].requests:>8,} "
            f"{statistics.median(r.per_second for r in off):>10,.0f} "
            f"{statistics.median(r.per_second for r in on):>10,.0f} {cost:>7.1f} "
            f"{cpu_off:>14.1f} {cpu_on:>13.1f} {(cpu_on / cpu_off - 1) * 100:>7.1f} "
            f"{sum(r.scrapes for r in on):>7}  {verdict}"
        )
    print()
    for path in PATHS:
        costs = ", ".join(f"{c:+.1f}" for c in _paired_costs(runs, path))
        print(f"{path}: cost % per round (paired, in run order): {costs}")
    print(
        f"\n{rounds} rounds, median of each side; {TASKS} tasks; 'cost %': 1 - on/off of the "
        f"median requests/s (target on {TARGET_PATH} <= {TARGET_PERCENT:.0f}%; noop is the bound: "
        "a scheduler doing nothing else); 'cpu us/req': process "
        "CPU (every thread) per request; 'scrapes': /metrics fetched during the 'on' runs, "
        f"one per {SCRAPE_INTERVAL:.0f} s. This machine has {os.cpu_count()} cores, shared."
    )


def main() -> None:
    """Measure both paths, off and on, interleaved; exit 1 when noop's cost misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="off/on pairs per path")
    parser.add_argument("--noop-requests", type=int, default=50_000, help="admissions per run")
    parser.add_argument("--sim-requests", type=int, default=3_000, help="posts per run")
    parser.add_argument("--profile", action="store_true", help="then show where the time goes")
    args = parser.parse_args()
    sizes = {"noop": args.noop_requests, "sim": args.sim_requests}
    for path in PATHS:  # warm-up, unmeasured: imports, tiktoken's encoding, first connections
        measure(path, sizes[path] // 10, exporting=True)
    runs: list[Run] = []
    for round_index in range(args.rounds):
        order = (False, True) if round_index % 2 == 0 else (True, False)
        for path in PATHS:
            for exporting in order:
                runs.append(measure(path, sizes[path], exporting))
    print_table(runs, args.rounds)
    if args.profile:
        print("\nIn place, one run per path with metrics on, each listener call timed:")
        for path in PATHS:
            timer = EventTimer()
            measure(path, sizes[path], exporting=True, timer=timer)
            print(timer.report(path, sizes[path]))
        print()
        print(profile_exporting(args.noop_requests // 5))
    sys.exit(0 if cost_percent(runs, TARGET_PATH) <= TARGET_PERCENT else 1)


if __name__ == "__main__":
    main()
