"""The metric contract as queries see it: documented names, names an expression reads.

The dashboard and the alert rules are written against the table in docs/metrics.md; both
tests read that table here, so a renamed metric fails them instead of a silent empty panel.
Both also check their expressions with promtool, run from here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS_DOC = REPO / "docs" / "metrics.md"

# prometheus-client exposes a histogram `x` only as these series.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus adds to every scraped series: each worker process is one instance.
TARGET_LABELS = frozenset({"job", "instance"})

_TABLE_ROW = re.compile(r"^\| `(throttle_\w+)` \| (\w+) \|([^|]*)\|")
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]?(?![\w:])")
_IDENTIFIER = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_TOKEN = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*|[()]")
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk"}
    | {"quantile", "count_values"}
)
_NOT_METRICS = frozenset(
    {"and", "or", "unless", "offset", "bool", "inf", "nan", "Inf", "NaN", "+Inf"}
)


@dataclass(frozen=True, slots=True)
class DocumentedMetric:
    """One row of the table in docs/metrics.md.

    Attributes:
        name: the metric's name as documented (counters with their ``_total``).
        kind: counter, gauge or histogram.
        labels: the label names the row lists.
    """

    name: str
    kind: str
    labels: frozenset[str]

    def series_names(self) -> frozenset[str]:
        """The series names Prometheus stores for this metric."""
        if self.kind == "histogram":
            return frozenset(self.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        return frozenset({self.name})

    def series_labels(self, series: str) -> frozenset[str]:
        """The labels a matcher may name on ``series``: its own, the scrape's, ``le`` on buckets."""
        if series == self.name + "_bucket":
            return self.labels | TARGET_LABELS | {"le"}
        return self.labels | TARGET_LABELS


def documented_metrics(doc: Path = METRICS_DOC) -> dict[str, DocumentedMetric]:
    """Read the metrics table of docs/metrics.md.

    Args:
        doc: the markdown file holding the table.

    Returns:
        Every documented metric by each series name it is stored under.

    Raises:
        AssertionError: if the file holds no table row at all.
    """
    by_series: dict[str, DocumentedMetric] = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        row = _TABLE_ROW.match(line)
        if row is None:
            continue
        labels = frozenset(label.strip() for label in row[3].split(",") if label.strip())
        metric = DocumentedMetric(name=row[1], kind=row[2], labels=labels)
        for series in metric.series_names():
            by_series[series] = metric
    assert by_series, f"no metric table rows (| `throttle_...) found in {doc}"
    return by_series


def _without_quoted(expr: str) -> str:
    return _QUOTED.sub('""', expr)


def _names_and_calls(expr: str) -> str:
    """``expr`` without strings, label matchers, groupings, ranges and numbers."""
    text = _without_quoted(expr)
    for pattern in (_MATCHERS, _GROUPING, _RANGE, _NUMBER):
        text = pattern.sub(" ", text)
    return text


def metric_names(expr: str) -> frozenset[str]:
    """The metric (series) names a PromQL expression reads.

    What remains of the expression without strings, label matchers, groupings, ranges and
    numbers, and is neither a function call nor a keyword, is a metric name.

    Args:
        expr: a PromQL expression (Grafana variables inside strings are fine).

    Returns:
        The names, e.g. ``{"throttle_attempts_total"}``.
    """
    text = _names_and_calls(expr)
    names = set()
    for found in _IDENTIFIER.finditer(text):
        rest = text[found.end() :].lstrip()
        if not rest.startswith("(") and found[0] not in _NOT_METRICS:
            names.add(found[0])
    return frozenset(names)


def unaggregated(expr: str) -> list[str]:
    """The metric names an expression reads outside every aggregation.

    Each worker process is its own Prometheus instance; a metric read outside ``sum``,
    ``max`` and the like shows one series per worker instead of one for the job.

    Args:
        expr: a PromQL expression.

    Returns:
        Each metric read outside an aggregation, once per occurrence; empty when none is.
    """
    text = _names_and_calls(expr)
    open_calls: list[str] = []  # the function each open parenthesis belongs to ("" if none)
    call = ""
    outside: list[str] = []
    for token in _TOKEN.finditer(text):
        word = token[0]
        if word == "(":
            open_calls.append(call)
        elif word == ")":
            open_calls.pop()
        elif text[token.end() :].lstrip().startswith("("):
            call = word
            continue
        elif word not in _NOT_METRICS and AGGREGATIONS.isdisjoint(open_calls):
            outside.append(word)
        call = ""
    return outside


def matcher_labels(expr: str) -> dict[str, frozenset[str]]:
    """The label names each metric's selector matches on in a PromQL expression.

    Args:
        expr: a PromQL expression.

    Returns:
        For each metric selected with ``{...}``, the label names its matchers use.
    """
    labels: dict[str, frozenset[str]] = {}
    for selector in _SELECTOR.finditer(_without_quoted(expr)):
        names = frozenset(_MATCHER_LABEL.findall(selector[2]))
        labels[selector[1]] = labels.get(selector[1], frozenset()) | names
    return labels


def undocumented(expr: str, documented: dict[str, DocumentedMetric]) -> list[str]:
    """What an expression reads that docs/metrics.md does not document.

    Args:
        expr: a PromQL expression.
        documented: the result of :func:`documented_metrics`.

    Returns:
        One line per unknown metric name or unlisted matcher label; empty when all is known.
    """
    problems = [f"metric {name}" for name in sorted(metric_names(expr) - documented.keys())]
    for series, labels in sorted(matcher_labels(expr).items()):
        if series in documented:
            unknown = labels - documented[series].series_labels(series)
            problems += [f"label {label} on {series}" for label in sorted(unknown)]
    return problems


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run promtool (Prometheus's checker) and capture what it says.

    Args:
        *args: promtool's arguments, e.g. ``"check", "rules", "alerts.yml"``.
        cwd: the directory to run in (relative paths are read from there).

    Returns:
        The finished process, stdout and stderr as text.

    Raises:
        AssertionError: if promtool is not installed.
    """
    executable = shutil.which("promtool")
    assert executable is not None, (
        "promtool not found on PATH: install Prometheus (apt-get install prometheus)"
    )
    return subprocess.run(
        [executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
