"""Render the Grafana dashboard's top row from a real Prometheus scrape of a simulated run.

What runs, all on 127.0.0.1: the built-in simulator (gpt-4o-mini at RPM 3,000 and TPM
200,000, every bucket drained at start, 200 ms latency) whose TPM drops to 100,000 half-way
through the run (``SimulatorConfig.changes``); ``Throttle.post("chat/completions", ...)``
sending a backlog of ``throttle demo``'s chat requests, all submitted at once and sized so
that the server's limits take about ``--seconds`` (180 s) to pass them; ``PrometheusMetrics``
attached to that client and served by ``serve_metrics``; and a real ``prometheus`` (Debian's
binary, via :class:`throttle.testing.prometheus_server.PrometheusServer`) scraping it every
second. The limits are not given to throttle: it learns them from the headers, both times.
The dashboard's rates use a 1-minute window, so each phase lasts longer than a minute for
its level to show.

After the run, the expressions of the top row of ``docs/grafana/throttle.json`` (tokens/min
against the learned limit, 429s by limit kind, queue depth) are asked of Prometheus as range
queries (1 s step; ``$model`` becomes ``.*``, ``$__rate_interval`` becomes ``1m``) and drawn
as the dashboard draws them, with the time of the limit change marked, into
``docs/images/dashboard-top-row.png``. Printed as JSON: requests, 429s (the simulator's, and
Prometheus's count before and after the change), the learned token limit and throttle's
estimated tokens/min over the 20 s before the change and before the end, the peak queue, and
the elapsed time beside the minimum the limits allow.

Run: ``TIKTOKEN_CACHE_DIR=.cache/tiktoken python benchmarks/dashboard_top_row.py``
(needs ``prometheus`` on PATH and matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

# Run as a file, the script's folder is on the path, not the repository: make `throttle` found.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throttle import PrometheusMetrics, Throttle, serve_metrics
from throttle.testing import LimitChange, ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.demo_requests import demo_request
from throttle.testing.prometheus_server import PrometheusServer
from throttle.testing.sim_accounting import output_cap, prompt_tokens

ROOT = Path(__file__).resolve().parents[1]
MODEL, RPM, TPM, TPM_AFTER, LATENCY = "gpt-4o-mini", 3_000, 200_000, 100_000, 0.2
TAIL_SECONDS = 4.0  # scraping after the last answer, so the end of the run is on the chart
DASHBOARD = ROOT / "docs" / "grafana" / "throttle.json"
OUTPUT = ROOT / "docs" / "images" / "dashboard-top-row.png"
# Grafana's classic palette, in its order, and its dark theme.
PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9")
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"


@dataclass(frozen=True, slots=True)
class Query:
    """One target of a panel: PromQL, its legend template, and whether it is drawn dashed."""

    expr: str
    legend: str
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Panel:
    """A time-series panel: title, y-axis label, whether its series stack, its queries."""

    title: str
    axis_label: str
    stacked: bool
    queries: tuple[Query, ...]


# The top row as the issue states it, for when the dashboard file is missing.
FALLBACK_ROW = (
    Panel(
        "Tokens/min vs learned limit",
        "tokens / min",
        stacked=False,
        queries=(
            Query("sum by (model) (rate(throttle_estimated_tokens_total[1m])) * 60", "estimated"),
            Query("sum by (model) (rate(throttle_usage_tokens_total[1m])) * 60", "used"),
            Query('max by (model) (throttle_learned_limit{resource="tokens"})', "limit", True),
        ),
    ),
    Panel(
        "429s by limit kind",
        "429s / min",
        stacked=True,
        queries=(Query("sum by (limit) (increase(throttle_rate_limited_total[1m]))", "{{limit}}"),),
    ),
    Panel(
        "Queue depth",
        "attempts",
        stacked=False,
        queries=(
            Query("sum (throttle_queued)", "queued"),
            Query("sum (throttle_in_flight)", "in flight"),
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Run:
    """What happened: wall-clock times (Unix seconds) and the simulator's counts."""

    started_at: float
    change_at: float
    finished_at: float
    requests: int
    failed: int
    rate_limited: dict[str, int]
    charged_tokens: int


def top_row(dashboard: Path) -> tuple[Panel, ...]:
    """Return the panels of the dashboard's first row, its variables filled in for all models."""
    if not dashboard.exists():
        print(f"{dashboard} is missing: drawing the issue's queries instead", file=sys.stderr)
        return FALLBACK_ROW
    panels: list[dict[str, Any]] = json.loads(dashboard.read_text())["panels"]
    rows = [i for i, p in enumerate(panels) if p["type"] == "row"]
    if not rows:
        first_y = min(p["gridPos"]["y"] for p in panels)
        row = [p for p in panels if p["gridPos"]["y"] == first_y]
    elif panels[rows[0]].get("collapsed"):
        row = panels[rows[0]]["panels"]
    else:
        row = panels[rows[0] + 1 : rows[1] if len(rows) > 1 else None]
    return tuple(_panel(p) for p in row)


def _panel(panel: dict[str, Any]) -> Panel:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    custom = defaults.get("custom", {})
    dashed = {
        override["matcher"]["options"]
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        if override["matcher"]["id"] == "byFrameRefID"
        and any(prop["id"] == "custom.lineStyle" for prop in override["properties"])
    }
    queries = tuple(
        Query(_fill_variables(t["expr"]), t.get("legendFormat", ""), t.get("refId") in dashed)
        for t in panel["targets"]
    )
    stacked = custom.get("stacking", {}).get("mode", "none") != "none"
    return Panel(panel["title"], custom.get("axisLabel", ""), stacked, queries)


def _fill_variables(expr: str) -> str:
    expr = re.sub(r"\$\{?__rate_interval\}?", "1m", expr)
    return re.sub(r"\$\{?model\}?", ".*", expr)


def backlog(seconds: float, change_at: float, tpm: int, tpm_after: int) -> list[dict[str, object]]:
    """Demo requests whose tokens, as the server charges them, take ``seconds`` to refill.

    The buckets start drained, so the server passes ``tpm / 60`` tokens a second until the
    change and ``tpm_after / 60`` after it.
    """
    budget = tpm / 60 * change_at + tpm_after / 60 * (seconds - change_at)
    bodies: list[dict[str, object]] = []
    while budget > 0:
        body = demo_request(len(bodies))
        budget -= prompt_tokens(body) + output_cap(body)
        bodies.append(body)
    return bodies


async def run_job(metrics: PrometheusMetrics, seconds: float, change_at: float) -> Run:
    """Send the backlog through a Throttle with ``metrics`` attached; return what happened."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=RPM, tpm=TPM),
        start_level=0.0,
        latency=LATENCY,
        changes=[LimitChange(at_seconds=change_at, model=MODEL, tpm=TPM_AFTER)],
    )
    bodies = backlog(seconds, change_at, TPM, TPM_AFTER)
    async with SimulatedAPI(config) as sim, Throttle(sim.base_url, "sk-demo") as client:
        started = time.time()  # scheduled changes count from the simulator's start, just before
        metrics.attach(client)
        answers = await asyncio.gather(
            *(client.post("chat/completions", body) for body in bodies), return_exceptions=True
        )
        return Run(
            started_at=started,
            change_at=started + change_at,
            finished_at=time.time(),
            requests=len(bodies),
            failed=sum(isinstance(a, BaseException) for a in answers),
            rate_limited=dict(sim.stats.rate_limited),
            charged_tokens=sim.stats.charged_tokens,
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _scalar(prometheus: PrometheusServer, expr: str, at: float) -> float:
    """The value of a one-series expression at ``at``; 0 when it has no series (yet)."""
    result = prometheus.query(expr, at)
    return float(result[0]["value"][1]) if result else 0.0


def _legend(template: str, labels: dict[str, str], expr: str) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or expr


Series = tuple[str, list[float], list[float], bool]  # legend, seconds since start, values, dashed


def panel_series(prometheus: PrometheusServer, panel: Panel, run: Run) -> list[Series]:
    """Every series of a panel's queries, over the run, at a 1 s step."""
    end = run.finished_at + TAIL_SECONDS
    series: list[Series] = []
    for query in panel.queries:
        for result in prometheus.query_range(query.expr, run.started_at, end, 1.0):
            points = [(float(t) - run.started_at, float(v)) for t, v in result["values"]]
            legend = _legend(query.legend, result["metric"], query.expr)
            series.append((legend, [t for t, _ in points], [v for _, v in points], query.dashed))
    return series


def _short(value: float, _position: object = None) -> str:
    """Grafana's ``short`` unit: 1.5 K, 200 K, 1.2 Mil."""
    for scale, suffix in ((1e6, " Mil"), (1e3, " K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def draw_panel(axes: Axes, panel: Panel, series: list[Series], run: Run) -> None:
    """Draw one panel: lines (stacked if the panel stacks), the change marker, a legend table."""
    axes.set_facecolor(PANEL)
    axes.set_title(panel.title, color=TEXT, loc="left", fontsize=11)
    axes.set_ylabel(panel.axis_label, color=TEXT)
    axes.set_xlabel("seconds since start", color=TEXT)
    axes.tick_params(colors=TEXT, labelsize=8)
    axes.yaxis.set_major_formatter(FuncFormatter(_short))
    axes.grid(color=GRID, linewidth=0.6)
    for spine in axes.spines.values():
        spine.set_color(GRID)
    change = run.change_at - run.started_at
    axes.axvline(change, color="#8e8e8e", linestyle=":", linewidth=1.2)
    axes.annotate(
        f"TPM {TPM // 1000}K \u2192 {TPM_AFTER // 1000}K",
        (change, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(4, -12),
        textcoords="offset points",
        color="#8e8e8e",
        fontsize=8,
    )
    base: dict[float, float] = {}
    for index, (legend, times, values, dashed) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        floor = [base.get(t, 0.0) if panel.stacked else 0.0 for t in times]
        tops = [f + v for f, v in zip(floor, values, strict=True)]
        if panel.stacked:
            base.update(zip(times, tops, strict=True))
        label = f"{legend}   last {_short(values[-1])}   max {_short(max(values))}"
        axes.plot(
            times, tops, color=color, linewidth=2 if dashed else 1.2,
            linestyle=(0, (5, 4)) if dashed else "-", label=label,
        )  # fmt: skip
        if not dashed:
            axes.fill_between(times, floor, tops, color=color, alpha=0.1, linewidth=0)
    axes.set_xlim(0, run.finished_at + TAIL_SECONDS - run.started_at)
    axes.set_ylim(0, None if any(max(values) > 0 for _, _, values, _ in series) else 1)
    if series:
        legend_box = axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        for text in legend_box.get_texts():
            text.set_color(TEXT)
            text.set_fontsize(8)
    else:
        axes.text(0.5, 0.5, "No data", color=TEXT, ha="center", transform=axes.transAxes)


def render(panels: tuple[Panel, ...], data: list[list[Series]], run: Run, output: Path) -> None:
    """Draw the row, panels side by side as on the dashboard, into a PNG at ``output``."""
    figure = Figure(figsize=(5.0 * len(panels), 4.4), dpi=100, facecolor=BACKGROUND)
    FigureCanvasAgg(figure)
    grid = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel, series in zip(grid, panels, data, strict=True):
        draw_panel(axes, panel, series, run)
    figure.subplots_adjust(left=0.06, right=0.99, top=0.92, bottom=0.3, wspace=0.22)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, facecolor=BACKGROUND)


def figures(prometheus: PrometheusServer, run: Run, series: list[Series]) -> dict[str, object]:
    """The numbers a reader needs beside the picture; Prometheus's, and the simulator's."""
    limit = 'max(throttle_learned_limit{resource="tokens"})'
    estimated = "sum(rate(throttle_estimated_tokens_total[20s])) * 60"
    counted_429 = "sum(throttle_rate_limited_total)"
    before, end = run.change_at - 0.5, run.finished_at
    queued = [max(values) for legend, _, values, _ in series if "queued" in legend]
    change = run.change_at - run.started_at
    after_change = run.charged_tokens - TPM / 60 * change  # tokens left for the lower limit
    minimum = change + after_change / TPM_AFTER * 60 if after_change > 0 else change
    return {
        "requests": run.requests,
        "failed": run.failed,
        "server_429s": run.rate_limited,
        "server_charged_tokens": run.charged_tokens,
        "429s_counted_before_change": _scalar(prometheus, counted_429, before),
        "429s_counted_after_change": _scalar(prometheus, counted_429, end)
        - _scalar(prometheus, counted_429, before),
        "learned_tpm_before_change": _scalar(prometheus, limit, before),
        "learned_tpm_at_end": _scalar(prometheus, limit, end),
        "estimated_tokens_per_min_20s_before_change": round(_scalar(prometheus, estimated, before)),
        "estimated_tokens_per_min_last_20s": round(_scalar(prometheus, estimated, end)),
        "peak_queued": max(queued, default=0),
        "change_at_seconds": round(change, 1),
        "elapsed_seconds": round(run.finished_at - run.started_at, 1),
        "minimum_seconds": round(minimum, 1),
    }  # fmt: skip


def main() -> None:
    """Run the job under a scraping Prometheus, render the row, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the run, about")
    parser.add_argument("--change-at", type=float, default=0.5, help="fraction of the run")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    panels = top_row(args.dashboard)
    metrics, port = PrometheusMetrics(), _free_port()
    serve_metrics(metrics, port)
    with tempfile.TemporaryDirectory(prefix="throttle-prometheus-") as folder:
        prometheus = PrometheusServer(Path(folder), [f"127.0.0.1:{port}"])
        prometheus.start()
        try:
            while not prometheus.targets_up():  # a first scrape before the first request
                time.sleep(0.2)
            run = asyncio.run(run_job(metrics, args.seconds, args.seconds * args.change_at))
            time.sleep(TAIL_SECONDS + 1)  # the last scrapes, and Prometheus storing them
            data = [panel_series(prometheus, panel, run) for panel in panels]
            result = figures(prometheus, run, [s for series in data for s in series])
        finally:
            prometheus.stop()
    render(panels, data, run, args.output)
    result["image"] = str(args.output)
    result["image_bytes"] = args.output.stat().st_size
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
