"""The performance report of issue 13: every measurement side by side in one run, one file.

Runs, in this order and in this one process (the efficiency clients and the fixed-answer
server in their own): admission (``perf_admission.py``), memory (``perf_memory.py``),
estimation (``perf_estimate.py``), end to end (``perf_end_to_end.py``) and limit efficiency
(``perf_efficiency.py``); each module's docstring says what it measures and how. Then writes
``benchmarks/REPORT.md``: the machine, date, commit and command at the top; the issue's table
refreshed (throttle today beside aiolimiter and bare asyncio, with each target and whether
it is met); the estimation and efficiency tables; how each figure was measured. And
``benchmarks/limit_change.png``: tokens/min against the limit over time in the limit-change
scenario, for throttle and the baselines (``perf_plot.py``, matplotlib).

Exit status 0 only when every target is met. ``--quick`` is a smoke run (about 2 minutes:
one round, less work, two efficiency scenarios at a fifth of their length): its figures say
that the harness works, not how fast throttle is. The full run takes about 15 minutes.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/perf_report.py [--quick]``
(``--only admission,memory,estimation,end-to-end,efficiency`` runs some parts).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

# Run as a file, the script's folder is on the path, not the repository: make `benchmarks` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import perf_admission, perf_efficiency, perf_end_to_end, perf_estimate, perf_memory
from benchmarks.efficiency_run import EfficiencyRun
from benchmarks.perf_figures import Section
from benchmarks.perf_plot import plot_limit_change
from benchmarks.report_markdown import render, run_context

HERE = Path(__file__).resolve().parent
PARTS = ("admission", "memory", "estimation", "end-to-end", "efficiency")


async def measure_part(part: str, *, quick: bool) -> Section:
    """Run one micro-benchmark part at its full or quick size."""
    if part == "admission":
        sizes = perf_admission.AdmissionScale
        return await perf_admission.measure(sizes.quick() if quick else sizes())
    if part == "memory":
        return await perf_memory.measure(1, 10_000 if quick else 100_000)
    if part == "estimation":
        return await perf_estimate.measure(*((1, 1_000) if quick else (5, 15_000)))
    return await perf_end_to_end.measure(*((1, 1_000, 3_000) if quick else (3, 10_000, 20_000)))


async def measure_efficiency(*, quick: bool, plot: Path) -> tuple[Section, list[EfficiencyRun]]:
    """Run the simulated scenarios; draw the limit change; return the section and the runs."""
    scale = 0.2 if quick else 1.0
    scenario_list = perf_efficiency.chosen(scale, quick=quick)
    runs = await perf_efficiency.run_all(scenario_list, 15.0 * scale)
    change = next(s for s in scenario_list if s.name == "limit change")
    plot_limit_change([r for r in runs if r.scenario == change.name], change, plot)
    return perf_efficiency.section(runs, scenario_list, 15.0 * scale), runs


async def measure_parts(
    parts: list[str], *, quick: bool, plot: Path
) -> tuple[list[Section], list[EfficiencyRun]]:
    """Run the chosen parts in order; return their sections and the efficiency runs."""
    sections: list[Section] = []
    runs: list[EfficiencyRun] = []
    for part in parts:
        started = time.monotonic()
        print(f"{part} ...", flush=True)
        gc.collect()
        if part == "efficiency":
            section, runs = await measure_efficiency(quick=quick, plot=plot)
        else:
            section = await measure_part(part, quick=quick)
        sections.append(section)
        print(f"{part} done in {time.monotonic() - started:.0f} s", flush=True)
    return sections, runs


def main() -> None:
    """Run the parts, write the report (and the plot); exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--output", type=Path, default=HERE / "REPORT.md")
    parser.add_argument("--plot", type=Path, default=HERE / "limit_change.png")
    args = parser.parse_args()
    parts = [part for part in args.only.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    context = run_context(sys.argv, quick=args.quick)
    started = time.monotonic()
    sections, runs = asyncio.run(measure_parts(parts, quick=args.quick, plot=args.plot))
    seconds = time.monotonic() - started
    plot = args.plot if runs else None
    args.output.write_text(render(context, sections, seconds, plot, args.output.parent))
    print(f"wrote {args.output}" + (f" and {args.plot}" if plot else "") + f" in {seconds:.0f} s")
    sys.exit(0 if all(section.targets_met for section in sections) else 1)


if __name__ == "__main__":
    main()
