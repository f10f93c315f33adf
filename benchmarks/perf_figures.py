"""What the performance report is made of: runs per subject, their medians, rows and sections.

Every measurement of ``benchmarks/perf_report.py`` returns a :class:`Section`: a table whose
columns are the subjects compared side by side (throttle, aiolimiter, bare asyncio ...) and
whose rows are figures, each with the issue's target and whether it is met. Micro-benchmarks
run their subjects in rounds (:func:`interleaved`), the order rotating each round so that
drift and the machine's other load fall on every subject alike; a row shows the median.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Row:
    """One figure: a cell per subject, the target, and whether it is met.

    Attributes:
        figure: what is measured, in a few words.
        cells: formatted value per column (a missing column shows as blank).
        target: the issue's target for throttle, in words ("" when there is none).
        met: whether the target is met; ``None`` when the row has no target.
    """

    figure: str
    cells: Mapping[str, str]
    target: str = ""
    met: bool | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """One table of the report.

    Attributes:
        title: the heading.
        columns: the subjects, in the order they are shown.
        rows: the figures.
        notes: how the figures were measured, one paragraph each.
    """

    title: str
    columns: Sequence[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def targets_met(self) -> bool:
        """True when no row misses its target."""
        return all(row.met is not False for row in self.rows)


def median(runs: Sequence[float]) -> float:
    """The median of ``runs`` (the report's figure for repeated measurements)."""
    return statistics.median(runs)


async def interleaved(
    rounds: int, subjects: Mapping[str, Callable[[], Awaitable[T]]]
) -> dict[str, list[T]]:
    """Run every subject once per round, rotating the order; return each subject's runs.

    Args:
        rounds: how many times each subject runs (3 for medians of 3).
        subjects: name to a coroutine function that measures once and returns the figure.

    Returns:
        The figures of every round, by subject name.
    """
    names = list(subjects)
    runs: dict[str, list[T]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()  # garbage of the previous subject is not this one's to collect
            runs[name].append(await subjects[name]())
    return runs


def markdown(section: Section, *, notes: bool = True) -> str:
    """The section as a Markdown table, with a target column (and its notes below)."""
    head = ["figure", *section.columns, "target (throttle)", "met"]
    lines = [f"### {section.title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for row in section.rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        cells = [row.figure, *(row.cells.get(c, "") for c in section.columns), row.target, met]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *(f"{note}\n" for note in section.notes)]
    return "\n".join(lines)


def per_second(value: float) -> str:
    """A rate as the report shows it: ``36k``, ``442k``, ``3.1k``, ``950``."""
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 1_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def duration(seconds: float) -> str:
    """A short duration with its unit: ``1.3 µs``, ``14 ms``, ``2.10 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2g} µs" if seconds < 1e-5 else f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2g} ms" if seconds < 1e-2 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def kilobytes(size: float) -> str:
    """Bytes as kilobytes (1,000 bytes), one decimal: ``2.4 KB``."""
    return f"{size / 1000:.1f} KB"


def ratio(value: float) -> str:
    """A ratio as ``1.05x``."""
    return f"{value:.2f}x"


def change(value: float) -> str:
    """A relative change as a signed percentage: ``-33%``, ``+2%``."""
    return f"{value * 100:+.0f}%"
