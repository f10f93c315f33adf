"""``benchmarks/REPORT.md``: where and when the figures were measured, and the tables.

The top says what the figures depend on: the machine (CPU, cores, memory, the load already
on it when the run started: the machine is shared), the date, the commit (and whether the
package had uncommitted changes), the command, and the versions of what was compared. Then
the issue's table (the sections whose subjects are throttle, aiolimiter and bare asyncio,
merged), the other sections' tables, the plot, and how each figure was measured.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.perf_figures import Section, markdown

ROOT = Path(__file__).resolve().parents[1]
ISSUE_COLUMNS = {
    "throttle": "throttle today",
    "aiolimiter": "aiolimiter",
    "asyncio": "bare asyncio",
}
PACKAGES = ("throttle-llm", "aiohttp", "aiolimiter", "openai", "httpx2", "tiktoken")


@dataclass(frozen=True, slots=True)
class RunContext:
    """Where, when and how the report was made."""

    date: str
    machine: str
    commit: str
    command: str
    versions: str
    quick: bool


def _git(*arguments: str) -> str:
    try:
        done = subprocess.run(
            ["git", *arguments],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def _version(name: str) -> str:
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return f"{name} (not installed)"


def run_context(argv: list[str], *, quick: bool) -> RunContext:
    """Note the machine, date, commit and command now, before anything runs."""
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    machine = (
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB; "
        f"{platform.platform()}; Python {platform.python_version()}; "
        f"load average at start {load}"
    )
    changed = [
        line for line in _git("status", "--porcelain", "--", "throttle").splitlines() if line
    ]
    commit = _git("log", "-1", "--format=%h %s") or "unknown"
    if len(commit) > 100:
        commit = commit[:100].rsplit(" ", 1)[0] + " ..."
    if changed:
        commit += f" (plus uncommitted changes in {len(changed)} files under throttle/)"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python " + shlex.join(["benchmarks/perf_report.py", *argv[1:]])
    versions = ", ".join(_version(name) for name in PACKAGES)
    return RunContext(now, machine, commit, command, versions, quick)


def issue_table(sections: list[Section]) -> str:
    """The issue's table: every row of the sections compared with aiolimiter and asyncio."""
    head = ["figure", *ISSUE_COLUMNS.values(), "target (throttle)", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for section in sections:
        for row in section.rows:
            met = "" if row.met is None else ("yes" if row.met else "**no**")
            cells = [row.cells.get(column, "") for column in ISSUE_COLUMNS]
            lines.append("| " + " | ".join([row.figure, *cells, row.target, met]) + " |")
    return "\n".join(lines)


def render(
    context: RunContext, sections: list[Section], seconds: float, plot: Path | None, folder: Path
) -> str:
    """The whole report as Markdown; ``plot`` is linked relative to ``folder``."""
    compared = [s for s in sections if set(s.columns) <= set(ISSUE_COLUMNS)]
    others = [s for s in sections if s not in compared]
    rows = [row for section in sections for row in section.rows if row.met is not None]
    met = sum(1 for row in rows if row.met)
    lines = [
        "# Performance report (issue 13)",
        "",
        f"* machine: {context.machine}",
        f"* date: {context.date}",
        f"* commit: {context.commit}",
        f"* command: `{context.command}` (took {seconds / 60:.1f} min)",
        f"* compared: {context.versions}",
        f"* targets met: {met} of {len(rows)}",
    ]
    if context.quick:
        lines += [
            "",
            "**A `--quick` smoke run**: one round, less work, two efficiency scenarios at a "
            "fifth of their length. It shows the harness works; the figures are not the ones "
            "to quote.",
        ]
    if compared:
        lines += ["", "## Throttle today beside the baselines", "", issue_table(compared)]
    for section in others:
        lines += ["", markdown(section, notes=False).replace("### ", "## ", 1)]
    if plot is not None:
        link = os.path.relpath(plot, folder)
        lines += [
            "",
            "## Limit change: tokens/min against the limit",
            "",
            f"![limit change]({link})",
            "",
            "Tokens the server charged each client, per minute over a sliding 2 s window, against "
            "the TPM limit in force. A line that leaves the top of the chart is a bucket's stock "
            "spent at once (the cookbook design after each pause; any client after idling).",
        ]
    lines += ["", "## How each figure was measured", ""]
    lines += [f"* {s.title}: {note}" for s in sections for note in s.notes]
    return "\n".join(lines) + "\n"
