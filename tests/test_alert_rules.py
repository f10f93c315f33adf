"""Tests for the alert rules docs/prometheus/alerts.yml, their unit tests and their runbook.

promtool checks the rules and runs docs/prometheus/alerts_test.yml; the rest reads the rule
file with PyYAML (:func:`read_alert_rules`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.metric_names import (
    REPO,
    DocumentedMetric,
    documented_metrics,
    metric_names,
    promtool,
    unaggregated,
    undocumented,
)

RULES = REPO / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "docs" / "prometheus" / "alerts_test.yml"
RUNBOOK = REPO / "docs" / "alerts.md"
DASHBOARD = REPO / "docs" / "grafana" / "throttle.json"
RUNBOOK_PREFIX = "docs/alerts.md#"
SEVERITIES = frozenset({"critical", "warning", "info"})
REQUIRED = ("labels.severity", "annotations.summary", "annotations.description")

_HEADING = re.compile(r"^#{1,6} +(.+?) *#*$")
_ITALIC = re.compile(r"(?<![*\w])\*([^*\n]+)\*(?![*\w])")
_TESTED_ALERT = re.compile(r"^ *alertname: *(\S+) *$", re.MULTILINE)
_TEST_SERIES = re.compile(r"^ *- series: *['\"]?([A-Za-z_:][\w:]*)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alerting rule of the file.

    Attributes:
        name: the ``alert`` name.
        fields: every other scalar of the rule by its dotted path (``expr``,
            ``labels.severity``, ``annotations.summary``, ...).
    """

    name: str
    fields: dict[str, str]


def read_alert_rules(text: str) -> list[AlertRule]:
    """Read the alerting rules of a Prometheus rule file.

    Args:
        text: the rule file.

    Returns:
        Each ``alert`` rule with its scalars by dotted path, stripped; recording rules and
        lists inside a rule are not read.
    """
    document = yaml.safe_load(text) or {}
    return [
        AlertRule(name=str(rule["alert"]), fields=_scalars(rule, ""))
        for group in document.get("groups", [])
        for rule in group.get("rules", [])
        if "alert" in rule
    ]


def _scalars(mapping: dict[str, Any], prefix: str) -> dict[str, str]:
    """The scalars of ``mapping`` (``alert`` aside), nested ones by their dotted path."""
    fields: dict[str, str] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            fields.update(_scalars(value, f"{path}."))
        elif not isinstance(value, list) and path != "alert":
            fields[path] = str(value).strip()
    return fields


def _anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _runbook_sections() -> dict[str, str]:
    """Each heading's anchor in docs/alerts.md with the text under it (code blocks skipped)."""
    sections: dict[str, str] = {}
    anchor = ""
    in_code = False
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        heading = None if in_code else _HEADING.match(line)
        if heading is not None:
            anchor = _anchor(heading[1])
            sections[anchor] = ""
        elif anchor:
            sections[anchor] += line + "\n"
    return sections


@pytest.fixture(scope="module")
def rules() -> list[AlertRule]:
    """The alerting rules of docs/prometheus/alerts.yml."""
    read = read_alert_rules(RULES.read_text(encoding="utf-8"))
    assert read, f"no alert rules read from {RULES}"
    return read


@pytest.fixture(scope="module")
def documented() -> dict[str, DocumentedMetric]:
    """The metrics docs/metrics.md documents, by series name."""
    return documented_metrics()


def test_promtool_accepts_the_rules_and_every_rule_is_an_alert(rules: list[AlertRule]) -> None:
    """`promtool check rules` passes, and counts as many rules as this test reads."""
    checked = promtool("check", "rules", str(RULES.relative_to(REPO)))
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    found = re.search(r"SUCCESS: (\d+) rules found", output)
    assert found is not None, output
    assert int(found[1]) == len(rules), f"promtool: {found[0]}; read: {[r.name for r in rules]}"


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules` runs alerts_test.yml: each alert fires on its synthetic series."""
    tested = promtool("test", "rules", str(RULE_TESTS.relative_to(REPO)))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test(rules: list[AlertRule]) -> None:
    """Each alert is evaluated at least once in alerts_test.yml."""
    tested = set(_TESTED_ALERT.findall(RULE_TESTS.read_text(encoding="utf-8")))
    assert {rule.name for rule in rules} <= tested, sorted({r.name for r in rules} - tested)


def test_every_rule_has_severity_summary_description_and_runbook(rules: list[AlertRule]) -> None:
    """An alert says how bad it is, what happened, and where the runbook is."""
    problems = [
        f"{rule.name}: no {field}"
        for rule in rules
        for field in (*REQUIRED, "annotations.runbook_url", "expr")
        if not rule.fields.get(field, "").strip()
    ]
    problems += [
        f"{rule.name}: severity {rule.fields['labels.severity']!r}"
        for rule in rules
        if rule.fields.get("labels.severity", "") not in SEVERITIES
    ]
    assert not problems, "\n".join(problems)


def test_every_runbook_url_points_at_a_heading_of_the_runbook(rules: list[AlertRule]) -> None:
    """Each runbook_url is `docs/alerts.md#anchor` and docs/alerts.md has that heading."""
    anchors = set(_runbook_sections())
    problems = []
    for rule in rules:
        url = rule.fields.get("annotations.runbook_url", "")
        if not url.startswith(RUNBOOK_PREFIX) or url.removeprefix(RUNBOOK_PREFIX) not in anchors:
            problems.append(f"{rule.name}: {url!r} (headings: {sorted(anchors)})")
    assert not problems, "\n".join(problems)


def test_every_runbook_section_names_dashboard_panels_that_exist(rules: list[AlertRule]) -> None:
    """The runbook's first checks (panel titles in *italics*) are panels of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = {panel["title"] for panel in dashboard["panels"]}
    titles |= {inner["title"] for panel in dashboard["panels"] for inner in panel.get("panels", [])}
    sections = _runbook_sections()
    problems = []
    for rule in rules:
        section = sections.get(rule.fields["annotations.runbook_url"].removeprefix(RUNBOOK_PREFIX))
        named = _ITALIC.findall(section or "")
        if not named:
            problems.append(f"{rule.name}: its runbook section names no panel")
        problems += [f"{rule.name}: no panel {title!r}" for title in named if title not in titles]
    assert not problems, "\n".join(problems)


def test_every_rule_reads_only_documented_metrics_and_labels(
    rules: list[AlertRule], documented: dict[str, DocumentedMetric]
) -> None:
    """Rules read only names and labels docs/metrics.md promises, so they keep firing."""
    problems = [
        f"{rule.name}: {problem}"
        for rule in rules
        for problem in undocumented(rule.fields["expr"], documented)
    ]
    assert not problems, "\n".join(problems)


def test_every_rule_aggregates_over_worker_processes(rules: list[AlertRule]) -> None:
    """Each worker is its own instance: rules aggregate, so N workers alert once."""
    problems = [
        f"{rule.name}: {name} read per instance"
        for rule in rules
        for name in unaggregated(rule.fields["expr"])
    ]
    assert not problems, "\n".join(problems)


def test_unit_test_series_are_documented_metrics(documented: dict[str, DocumentedMetric]) -> None:
    """The synthetic input series of alerts_test.yml use the real metric names."""
    names = set(_TEST_SERIES.findall(RULE_TESTS.read_text(encoding="utf-8")))
    assert names, f"no input series found in {RULE_TESTS}"
    assert names <= documented.keys(), sorted(names - documented.keys())


def test_metric_names_of_an_expr_skip_functions_labels_and_keywords() -> None:
    """Only metric names come out of an expression, not functions, labels or durations."""
    expr = (
        'sum by (job) (throttle_job_lines{state="done"} - throttle_job_lines offset 15m) <= 0'
        " and on (job) histogram_quantile(0.5, sum by (le) (rate(x_bucket[5m])))"
    )
    assert metric_names(expr) == {"throttle_job_lines", "x_bucket"}


def test_runbook_anchor_follows_github() -> None:
    """Headings turn into GitHub's anchors: lower case, punctuation dropped, spaces to dashes."""
    assert _anchor("ThrottleQuotaBreakerOpen") == "throttlequotabreakeropen"
    assert _anchor("Queue: stalled (10 m)") == "queue-stalled-10-m"


def test_unit_tests_find_the_rules_from_any_directory(tmp_path: Path) -> None:
    """alerts_test.yml names alerts.yml relative to itself, so promtool runs it from anywhere."""
    tested = promtool("test", "rules", str(RULE_TESTS), cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
