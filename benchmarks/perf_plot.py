"""The report's picture: tokens per minute against the limit, over time, in the limit change.

For each client the simulator's charges to it (sampled every 0.25 s by
``benchmarks/efficiency_run.py``) become tokens per minute over a sliding 2 s window, drawn
against the TPM limit in force (a step: halved, then doubled). Time counts from the
simulator's start, so the limit's steps fall at the same place for every client. Drawn with
matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from benchmarks.efficiency_run import EfficiencyRun
from benchmarks.efficiency_scenarios import Scenario

WINDOW_SECONDS = 2.0
COLORS = {
    "throttle": "#1f77b4",
    "throttle-openai": "#17becf",
    "reference": "#2ca02c",
    "cookbook": "#d62728",
    "sdk": "#ff7f0e",
}


def tokens_per_minute(timeline: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(times, tokens/min over the :data:`WINDOW_SECONDS` before each time)."""
    times: list[float] = []
    rates: list[float] = []
    start = 0
    for moment, charged in timeline:
        while timeline[start][0] < moment - WINDOW_SECONDS:
            start += 1
        then, before = timeline[start]
        if moment - then >= WINDOW_SECONDS / 2:
            times.append(moment)
            rates.append((charged - before) / (moment - then) * 60)
    return times, rates


def plot_limit_change(runs: Sequence[EfficiencyRun], scenario: Scenario, path: Path) -> None:
    """Draw every client's tokens/min and the limit; write a PNG to ``path``."""
    figure = Figure(figsize=(10, 5.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    end = max((run.timeline[-1][0] for run in runs if run.timeline), default=40.0)
    steps = [0.0, *(at for at, _ in scenario.changes), end]
    limit_x: list[float] = []
    limit_y: list[float] = []
    for left, right in itertools.pairwise(steps):
        limit_x += [left, right]
        limit_y += [scenario.tpm_at(left)] * 2
    axes.plot(limit_x, limit_y, color="black", linewidth=2.2, label="TPM limit")
    for run in runs:
        times, rates = tokens_per_minute(run.timeline)
        label = f"{run.client} ({run.ratio:.2f}x, {run.share_429:.1%} 429)"
        axes.plot(times, rates, color=COLORS.get(run.client), linewidth=1.4, label=label)
    for at, _ in scenario.changes:
        axes.axvline(at, color="grey", linestyle=":", linewidth=1)
    title = f"Limit change: tokens/min the server charged ({WINDOW_SECONDS:g} s window)"
    axes.set_title(f"{title}\n{scenario.what}", fontsize=10)
    axes.set_xlabel("seconds since the simulator started")
    axes.set_ylabel("tokens per minute")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1e6:.1f}M"))
    axes.set_xlim(0, end)
    axes.set_ylim(0, max(limit_y) * 1.25)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
