"""Tests for the Grafana dashboard docs/grafana/throttle.json against the metric contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.metric_names import (
    REPO,
    DocumentedMetric,
    documented_metrics,
    metric_names,
    promtool,
    unaggregated,
    undocumented,
)

DASHBOARD = REPO / "docs" / "grafana" / "throttle.json"
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
MODEL_QUERY = "label_values(throttle_attempts_total, model)"
# `$name`, `${name}` and `${name:format}`; Grafana's `[[name]]` is deprecated and not used.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")

Panel = dict[str, Any]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana imports it."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def documented() -> dict[str, DocumentedMetric]:
    """The metrics docs/metrics.md documents, by series name."""
    return documented_metrics()


def _all_panels(dashboard: dict[str, Any]) -> list[Panel]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    panels: list[Panel] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _graphs(dashboard: dict[str, Any]) -> list[Panel]:
    """Every panel that is not a row."""
    return [panel for panel in _all_panels(dashboard) if panel["type"] != "row"]


def _rows(dashboard: dict[str, Any]) -> list[tuple[Panel, list[Panel]]]:
    """Each row with the panels under it, in the dashboard's order."""
    rows: list[tuple[Panel, list[Panel]]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            rows.append((panel, list(panel.get("panels", []))))
        else:
            assert rows, f"panel {panel.get('title')!r} comes before the first row"
            rows[-1][1].append(panel)
    return rows


def _exprs(panel: Panel) -> list[str]:
    return [str(target.get("expr", "")) for target in panel.get("targets", [])]


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def _where(panel: Panel) -> str:
    return f"panel {panel.get('id')} {panel.get('title')!r}"


def test_dashboard_is_grafana_10_schema(dashboard: dict[str, Any]) -> None:
    """Schema version 38 or later is what Grafana 10 writes and imports without migration."""
    assert dashboard["schemaVersion"] >= 38
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["panels"]


def test_every_panel_has_title_description_unit_and_prometheus_datasource(
    dashboard: dict[str, Any],
) -> None:
    """A panel explains itself and queries the data source the user picks in `$datasource`."""
    problems = []
    for panel in _graphs(dashboard):
        for field in ("title", "description"):
            if not str(panel.get(field, "")).strip():
                problems.append(f"{_where(panel)}: no {field}")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{_where(panel)}: no fieldConfig.defaults.unit")
        if panel.get("datasource") != PROMETHEUS:
            problems.append(f"{_where(panel)}: datasource {panel.get('datasource')}")
        for target in panel.get("targets", []):
            if target.get("datasource", PROMETHEUS) != PROMETHEUS:
                problems.append(f"{_where(panel)}: target datasource {target['datasource']}")
    assert not problems, "\n".join(problems)


def test_every_panel_has_targets_each_with_an_expr_and_a_distinct_ref_id(
    dashboard: dict[str, Any],
) -> None:
    """Every panel queries something, and Grafana can tell its queries apart."""
    problems = []
    for panel in _graphs(dashboard):
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{_where(panel)}: no targets")
        ref_ids = [str(target.get("refId", "")) for target in targets]
        if "" in ref_ids or len(set(ref_ids)) != len(ref_ids):
            problems.append(f"{_where(panel)}: refIds {ref_ids}")
        if any(not expr.strip() for expr in _exprs(panel)):
            problems.append(f"{_where(panel)}: a target without expr")
    assert not problems, "\n".join(problems)


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    """Grafana keys panels by id: a duplicate one hides or overwrites another."""
    ids = [panel["id"] for panel in _all_panels(dashboard)]
    assert len(ids) == len(set(ids)), sorted(ids)


def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    """An undefined `$name` reaches Prometheus as text and the panel shows nothing."""
    defined = set(_variables(dashboard))
    used = {braced or bare for braced, bare in _VARIABLE.findall(json.dumps(dashboard))}
    assert used <= defined, f"undefined: {sorted(used - defined)}"


def test_variables_pick_a_prometheus_datasource_and_models(dashboard: dict[str, Any]) -> None:
    """`$datasource` lists Prometheus sources; `$model` lists the models seen, all by default."""
    variables = _variables(dashboard)
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    model = variables["model"]
    assert model["type"] == "query"
    assert model["datasource"] == PROMETHEUS
    query = model["query"]
    assert (query["query"] if isinstance(query, dict) else query) == MODEL_QUERY
    assert model["multi"]
    assert model["includeAll"]


def test_every_expr_reads_only_documented_metrics_and_labels(
    dashboard: dict[str, Any], documented: dict[str, DocumentedMetric]
) -> None:
    """Panels read only names and labels docs/metrics.md promises, so they keep working."""
    problems = [
        f"{_where(panel)}: {problem} in {expr}"
        for panel in _graphs(dashboard)
        for expr in _exprs(panel)
        for problem in undocumented(expr, documented)
    ]
    variable_metric = MODEL_QUERY.removeprefix("label_values(").split(",")[0]
    if variable_metric not in documented:
        problems.append(f"$model reads {variable_metric}")
    assert not problems, "\n".join(problems)


def test_every_expr_aggregates_over_worker_processes(dashboard: dict[str, Any]) -> None:
    """Each worker is its own instance: every series is aggregated, so N workers show as one."""
    problems = [
        f"{_where(panel)}: {name} read per instance in {expr}"
        for panel in _graphs(dashboard)
        for expr in _exprs(panel)
        for name in unaggregated(expr)
    ]
    assert not problems, "\n".join(problems)


def test_every_documented_metric_is_on_the_dashboard(
    dashboard: dict[str, Any], documented: dict[str, DocumentedMetric]
) -> None:
    """A metric added to the contract gets a panel too."""
    shown = {
        documented[name].name
        for panel in _graphs(dashboard)
        for expr in _exprs(panel)
        for name in metric_names(expr)
        if name in documented
    }
    missing = {metric.name for metric in documented.values()} - shown
    assert not missing, f"no panel reads {sorted(missing)}"


def test_every_expr_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Prometheus 2.42 parses every query (as a rule), with `.*` in place of each variable."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for panel in _graphs(dashboard):
        for target in panel.get("targets", []):
            expr = _VARIABLE.sub(".*", str(target.get("expr", "")))
            lines.append(f"      - record: dashboard_panel_{panel['id']}_{target.get('refId')}")
            lines.append(f"        expr: {json.dumps(expr)}")  # a JSON string is valid YAML
    rules = tmp_path / "dashboard_queries.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_top_row_shows_tokens_against_limit_429s_by_kind_and_queue(
    dashboard: dict[str, Any],
) -> None:
    """The first row holds exactly the three panels the benchmark renders, side by side."""
    _, top = _rows(dashboard)[0]
    assert len(top) == 3, [panel["title"] for panel in top]
    tokens, rate_limited, queue = (
        {name for expr in _exprs(panel) for name in metric_names(expr)} for panel in top
    )
    assert {"throttle_estimated_tokens_total", "throttle_learned_limit"} <= tokens
    assert rate_limited == {"throttle_rate_limited_total"}
    assert any("by (limit)" in expr for expr in _exprs(top[1]))
    assert {"throttle_queued", "throttle_in_flight"} <= queue
    assert len({panel["gridPos"]["y"] for panel in top}) == 1


def test_learned_limits_are_drawn_as_lines_over_the_throughput(dashboard: dict[str, Any]) -> None:
    """Where a rate is compared with the learned limit, the limit's query has its own style."""
    compared = 0
    for panel in _graphs(dashboard):
        targets = panel.get("targets", [])
        limits = {t["refId"] for t in targets if "throttle_learned_limit" in t["expr"]}
        if not limits or len(limits) == len(targets):
            continue
        compared += 1
        styled = {
            override["matcher"]["options"]
            for override in panel["fieldConfig"]["overrides"]
            if override["matcher"]["id"] == "byFrameRefID"
        }
        assert limits <= styled, f"{_where(panel)}: limit queries {limits} not styled"
    assert compared >= 2  # tokens/min and requests/min
