"""A real Prometheus scrapes a `throttle run` job: every dashboard and alert query answers.

The job runs against the simulated API with a drained bucket (a 429 on the first request),
random 500s, another client on the same key, a limit change halfway and one line too large
for the limit; beside it a client whose quota ran out serves its metrics too, so the quota
breaker shows. Prometheus evaluates each query at a moment when the job was three quarters
done. The dashboard's and the alerts' own files are read, never a copy, so a query that no
longer parses or that lost its data fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from throttle import PrometheusMetrics, QuotaExhaustedError, Throttle
from throttle.keys import credential_identity
from throttle.runner import EXIT_FAILED
from throttle.testing import Faults, ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.demo_requests import demo_request
from throttle.testing.prometheus_server import PrometheusQueryError, PrometheusServer

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "docs" / "grafana" / "throttle.json"
ALERTS = REPO / "docs" / "prometheus" / "alerts.yml"
CANARY_KEY = "sk-canary-never-a-real-key-5b1e"
MODEL = "gpt-4o-mini"
REQUESTS = 300  # about 130k tokens: some 20 s at 600k, then 400k, tokens per minute
# Grafana's own variables, as a dashboard a few minutes wide would set them.
GRAFANA_MACROS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
# Panels that may be empty while such a job runs, and why. Every other query must answer.
MAY_BE_EMPTY = {
    "Inexact estimates": "tiktoken's BPE files are provisioned: every estimate is exact",
}
QUOTA_ALERT = "ThrottleQuotaBreakerOpen"  # the one alert made to fire, by the quota client
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),)?\s*(\w+)\s*\)$")


def metrics_ports(count: int) -> list[int]:
    """Free loopback ports below the ephemeral range (outgoing connections take from it)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    found: list[int] = []
    for port in random.sample(range(20_000, low), 100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise OSError("too few free ports between 20000 and the ephemeral range")


def write_job(path: Path) -> None:
    """One request whose output cap no limit admits, then the demo's chat requests."""
    lines = [{**demo_request(0), "max_tokens": 2_000_000}]
    lines += [demo_request(i) for i in range(1, REQUESTS + 1)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def line_count(path: Path) -> int:
    """Lines in a file that may not exist yet."""
    return len(path.read_text().splitlines()) if path.exists() else 0


async def wait_for_lines(path: Path, count: int) -> None:
    """Wait (at most a minute) until another process has written `count` lines to `path`."""
    async with asyncio.timeout(60):
        # Another process writes the file: there is nothing to wait on but the file itself.
        while await asyncio.to_thread(line_count, path) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def compete(url: str) -> None:
    """Another client on the same key: bursts that take tokens throttle counted on."""
    body = {"model": MODEL, "max_tokens": 1000, "messages": [{"role": "user", "content": "x"}]}
    headers = {"Authorization": f"Bearer {CANARY_KEY}"}
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.post(url, json=body, headers=headers) as answer:
                await answer.read()

        for _ in range(3):
            await asyncio.gather(*(one() for _ in range(30)))
            await asyncio.sleep(1)


@contextlib.asynccontextmanager
async def out_of_quota(port: int) -> AsyncIterator[None]:
    """A client on the canary key whose quota ran out, serving its metrics on ``port``."""
    metrics = PrometheusMetrics()
    config = SimulatorConfig(quota_tokens=1, latency=0.01)
    async with SimulatedAPI(config) as sim, Throttle(sim.base_url, CANARY_KEY) as client:
        metrics.attach(client)
        await client.post("chat/completions", demo_request(0))  # charged past the quota
        with pytest.raises(QuotaExhaustedError):
            await client.post("chat/completions", demo_request(1))

        async def scrape(_: web.Request) -> web.Response:
            page = generate_latest(metrics.registry)
            return web.Response(body=page, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield
        finally:
            await runner.cleanup()


async def until_scraped(prometheus: PrometheusServer, job: asyncio.subprocess.Process) -> None:
    """Wait until Prometheus holds the job's first attempts; fail at once if the job exits."""
    async with asyncio.timeout(30):
        while not await asyncio.to_thread(prometheus.query, "throttle_attempts_total"):
            assert job.returncode is None, "the job exited before Prometheus scraped it"
            await asyncio.sleep(0.2)


def metrics_page(port: int) -> str:
    """The job's own /metrics text."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        text: str = page.read().decode()
        return text


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found += [panel, *panels(panel)]
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable, variables filled in.

    A variable's ``label_values(metric, label)`` becomes ``count by (label) (metric)``; a
    dashboard variable takes its "All" value; Grafana's macros take `GRAFANA_MACROS`.
    """
    values = dict(GRAFANA_MACROS)
    queries: list[tuple[str, str]] = []
    for variable in dashboard.get("templating", {}).get("list", []):
        values[variable["name"]] = variable.get("allValue") or ".*"
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(text.strip())
            assert match, f"variable {variable['name']}: cannot evaluate {text!r}"
            metric, label = match.group(1) or '{__name__=~"throttle_.+"}', match.group(2)
            queries.append((f"variable {variable['name']}", f"count by ({label}) ({metric})"))

    def fill(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"unknown Grafana variable ${name}"
        return values[name]

    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                where = f"{panel['title']} / {target.get('refId', '?')}"
                queries.append((where, _VARIABLE.sub(fill, target["expr"])))
    return queries


def rule_names(text: str) -> set[str]:
    """Names of the rules a rule file defines (read as text: no YAML parser needed)."""
    return set(re.findall(r"^\s*-?\s*(?:alert|record):\s*(\S+)", text, re.MULTILINE))


def dashboard_problems(prometheus: PrometheusServer, at: float) -> list[str]:
    """Dashboard queries Prometheus refuses, or that are empty at ``at`` without leave."""
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel.get("title") for panel in panels(dashboard)}
    problems = [f"MAY_BE_EMPTY names no panel: {title}" for title in set(MAY_BE_EMPTY) - titles]
    for where, expr in dashboard_queries(dashboard):
        try:
            answer = prometheus.query(expr, at)
        except PrometheusQueryError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not answer and where.partition(" / ")[0] not in MAY_BE_EMPTY:
            problems.append(f"{where}: no data for {expr}")
    return problems


def rule_problems(prometheus: PrometheusServer, at: float) -> list[str]:
    """Alert rules not loaded, failing their evaluations, or refused as queries at ``at``.

    The rules are conditions of trouble: the job needs them to work, not to fire; only the
    quota client's open breaker must fire its alert.
    """
    rules = prometheus.rules()
    loaded = {rule["name"] for rule in rules}
    problems = [f"{name} not loaded" for name in rule_names(ALERTS.read_text()) - loaded]
    if QUOTA_ALERT not in {rule["name"] for rule in rules if rule["state"] == "firing"}:
        problems.append(f"{QUOTA_ALERT} is not firing while a quota breaker is open")
    for rule in rules:
        if rule["health"] != "ok":
            problems.append(f"{rule['name']}: {rule['health']}: {rule.get('lastError')}")
        try:
            prometheus.query(rule["query"], at)
        except PrometheusQueryError as exc:
            problems.append(f"{rule['name']}: {exc}")
    return problems


async def test_prometheus_answers_every_dashboard_and_alert_query(tmp_path: Path) -> None:
    """A job scraped by a real Prometheus: each query parses, each panel's has data."""
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_job(requests)
    port, quota_port = metrics_ports(2)
    targets = [f"127.0.0.1:{port}", f"127.0.0.1:{quota_port}"]
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(tmp_path / "prometheus", targets, [ALERTS])
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=3000, tpm=600_000),
        start_level=0.0,
        latency=0.2,
        latency_jitter=0.1,
        faults=Faults(server_error=0.02, seed=7),
    )
    await asyncio.to_thread(prometheus.start)
    try:
        async with out_of_quota(quota_port), SimulatedAPI(config) as sim:
            url = f"{sim.base_url}/chat/completions"
            command = [sys.executable, "-m", "throttle", "run", str(requests), "-o", str(output)]
            command += ["--url", url, "--no-progress", "--metrics-port", str(port)]
            env = {**os.environ, "OPENAI_API_KEY": CANARY_KEY}
            job = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                await until_scraped(prometheus, job)
                await wait_for_lines(output, REQUESTS // 3)
                sim.set_limits(MODEL, tpm=400_000)
                await compete(url)
                await wait_for_lines(output, REQUESTS * 3 // 4)
                at = time.time()  # rules have been evaluated on the job's data until now
                pages = [await asyncio.to_thread(metrics_page, p) for p in (port, quota_port)]
                assert await asyncio.to_thread(prometheus.targets_up) == set(targets)
                broken_rules = await asyncio.to_thread(rule_problems, prometheus, at)
                async with asyncio.timeout(60):
                    _, said = await job.communicate()
            except BaseException:  # show what the job said
                if job.returncode is None:
                    job.kill()
                print((await job.communicate())[1].decode(), file=sys.stderr)
                raise
        assert job.returncode == EXIT_FAILED, said.decode()  # the line too large for any limit
        rate_limited = await asyncio.to_thread(
            prometheus.query, "sum(throttle_rate_limited_total)", at
        )
        assert float(rate_limited[0]["value"][1]) > 0  # the drained bucket's, at least

        assert await asyncio.to_thread(dashboard_problems, prometheus, at) == []
        assert broken_rules == []
        series = await asyncio.to_thread(prometheus.series, '{job="throttle"}')
    finally:
        await asyncio.to_thread(prometheus.stop)
    values = {value for labels in series for value in labels.values()}
    identities = {labels["identity"] for labels in series if "identity" in labels}
    assert not any(CANARY_KEY[:12] in value for value in values)
    assert not any(CANARY_KEY[:12] in page for page in pages)
    assert identities == {credential_identity(CANARY_KEY)}
