"""Benchmark: how close each client comes to the limits, on the simulator, side by side.

Six scenarios (``benchmarks/efficiency_scenarios.py``: cold start, shared key, limit change,
faults, embeddings, long outputs; each starts with drained buckets and about 10 s of work,
the limit change about 35 s) and five clients (``benchmarks/efficiency_client.py``):
throttle's native ``Throttle.post``; throttle behind the openai SDK (``wrap_openai``; cold
start only, where its later start shows); the reference client that follows the headers;
the cookbook design (fixed client-side budget at the starting limits, no header feedback,
a fixed pause after a 429: 15 s); the plain openai SDK behind a semaphore sized by
Little's law at the starting limits. Each client runs in its own process against a fresh
simulator in this one (``benchmarks/efficiency_run.py``), one run at a time.

Reported per scenario and client: elapsed / theoretical minimum (from the first request to
the last success, over the least time the limits allow for what the server charged) and the
share of the client's requests answered 429; failures when any. Also: how long each client
took from its start to its first request (cold start), and the most requests the server
held at once (limit change; throttle's in-flight bound: 1,024, or half the open-file limit).

Targets (issue 13): throttle at most 1.06x with at most 0.5% 429s in every scenario. Exit
status 0 only when all are met.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/perf_efficiency.py [--quick]``
(``--quick``: cold start and limit change only, at a fifth of the length, pause 3 s).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.efficiency_run import EfficiencyRun, run_client
from benchmarks.efficiency_scenarios import Scenario, charge, scenarios
from benchmarks.perf_figures import Row, Section, duration, markdown

CLIENTS = ("throttle", "throttle-openai", "reference", "cookbook", "sdk")
TARGET_RATIO, TARGET_429 = 1.06, 0.005
COLD_START_ONLY = frozenset({"throttle-openai"})
QUICK_SCENARIOS = ("cold start", "limit change")


def chosen(scale: float, *, quick: bool) -> list[Scenario]:
    """The scenarios to run at ``scale``."""
    every = scenarios(scale)
    return [s for s in every if s.name in QUICK_SCENARIOS] if quick else every


async def run_all(scenario_list: list[Scenario], pause: float) -> list[EfficiencyRun]:
    """Run every client through every scenario, one run at a time."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="throttle-efficiency-") as folder:
        for scenario in scenario_list:
            tokens = sum(charge(body, scenario.path) for body in scenario.bodies)
            nominal = scenario.minimum_seconds(0.0, tokens, len(scenario.bodies))
            limit = 120.0 + 6 * nominal
            for client in CLIENTS:
                if client in COLD_START_ONLY and scenario.name != "cold start":
                    continue
                run = await run_client(
                    scenario, client, Path(folder), pause=pause, time_limit=limit
                )
                print(
                    f"  {scenario.name:<13} {client:<16} {run.ratio:5.2f}x "
                    f"{run.share_429:6.1%} 429  {run.failed} failed",
                    flush=True,
                )
                runs.append(run)
    return runs


def cell(run: EfficiencyRun) -> str:
    """``1.05x, 0.3% 429`` (and failures, or a time-out)."""
    if run.timed_out:
        return f"timed out ({run.succeeded} done)"
    text = f"{run.ratio:.2f}x, {run.share_429:.1%} 429"
    return text + (f", {run.failed} failed" if run.failed else "")


def meets_targets(run: EfficiencyRun) -> bool:
    """All done, within the target ratio and 429 share."""
    done = not run.failed and not run.timed_out
    return done and run.ratio <= TARGET_RATIO and run.share_429 <= TARGET_429


def section(runs: list[EfficiencyRun], scenario_list: list[Scenario], pause: float) -> Section:
    """The report's section: a row per scenario, a column per client."""
    by_scenario: dict[str, dict[str, EfficiencyRun]] = defaultdict(dict)
    for run in runs:
        by_scenario[run.scenario][run.client] = run
    result = Section("Limit efficiency (simulated)", list(CLIENTS))
    for scenario in scenario_list:
        cells = by_scenario[scenario.name]
        mine = cells.get("throttle")
        met = mine is not None and meets_targets(mine)
        result.rows.append(
            Row(
                f"{scenario.name}: elapsed / minimum, 429 share",
                {client: cell(run) for client, run in cells.items()},
                f"<= {TARGET_RATIO}x, <= {TARGET_429:.1%} 429s",
                met,
            )
        )
    cold = by_scenario.get("cold start", {})
    if cold:
        result.rows.append(
            Row(
                "cold start: first request after the client's start",
                {client: duration(run.first_request_after) for client, run in cold.items()},
            )
        )
    change = by_scenario.get("limit change", {})
    if change:
        result.rows.append(
            Row(
                "limit change: most requests the server held at once",
                {client: str(run.peak_in_flight) for client, run in change.items()},
            )
        )
    result.notes.append(
        "Minimum = the least time the limits, as they change, take to refill what the server "
        "charged (both clients' tokens in the shared-key scenario), from the first request, "
        "plus the server's least latency (the last answer's). "
        "First request after start includes the interpreter and imports. Scenarios: "
        + "; ".join(f"{s.name}: {s.what}" for s in scenario_list)
        + f". Cookbook pause after a 429: {pause:g} s; sdk semaphore: Little's law at the "
        "starting limits x 1.25. One run each (benchmarks/perf_efficiency.py)."
    )
    return result


def main() -> None:
    """Print the section; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 scenarios at a fifth")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    scenario_list = chosen(scale, quick=args.quick)
    runs = asyncio.run(run_all(scenario_list, 15.0 * scale))
    result = section(runs, scenario_list, 15.0 * scale)
    print(markdown(result))
    sys.exit(0 if result.targets_met else 1)


if __name__ == "__main__":
    main()
