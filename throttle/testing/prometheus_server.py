"""A real ``prometheus`` for the tests, started and stopped by the test itself.

The binary comes from PATH (Debian's ``prometheus`` package, which ``scripts/check`` installs
when it is missing); the tests never use a system service. It listens on 127.0.0.1 only,
scrapes only the loopback targets it is given, every second, keeps its data in a directory
the test owns, and is asked questions through its HTTP API (standard library only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from throttle.testing.ports import free_port

STARTUP_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 10.0
_LOOPBACK = ("127.0.0.1", "localhost")


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (a parse error, an unknown function, a bad argument).

    Args:
        expr: the query as sent.
        error_type: Prometheus's ``errorType`` (``bad_data``, ``execution``, ...).
        message: Prometheus's ``error``.
    """

    def __init__(self, expr: str, error_type: str, message: str) -> None:
        super().__init__(f"Prometheus refused {expr!r}: {error_type}: {message}")
        self.expr = expr
        self.error_type = error_type
        self.message = message


def prometheus_binary() -> str:
    """Return the path of the ``prometheus`` binary on PATH.

    Raises:
        FileNotFoundError: PATH has none (``scripts/check`` installs Debian's package).
    """
    found = shutil.which("prometheus")
    if found is None:
        raise FileNotFoundError(
            "no prometheus on PATH: run scripts/check, or apt-get install prometheus"
        )
    return found


class PrometheusServer:
    """One prometheus process on a free loopback port, scraping ``targets`` every second.

    Args:
        directory: its working directory: configuration, storage and log.
        targets: ``host:port`` addresses to scrape at ``/metrics``, loopback only.
        rule_files: recording or alerting rule files to load, evaluated every second.
        job: the ``job`` label of the scraped series.

    Raises:
        ValueError: a target is not on the loopback interface.
    """

    def __init__(
        self,
        directory: Path,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        job: str = "throttle",
    ) -> None:
        for target in targets:
            if target.rpartition(":")[0] not in _LOOPBACK:
                raise ValueError(f"scrape target {target!r} is not on 127.0.0.1")
        self.directory = directory
        self.targets = tuple(targets)
        self.rule_files = tuple(path.resolve() for path in rule_files)
        self.job = job
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        running = self._process is not None and self._process.poll() is None
        return f"PrometheusServer(port={self.port}, targets={self.targets}, running={running})"

    @property
    def url(self) -> str:
        """The root of the server's HTTP API, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's own log (stdout and stderr)."""
        return self.directory / "prometheus.log"

    def start(self) -> None:
        """Write the configuration, start the server and wait until it is ready.

        Raises:
            RuntimeError: it exited (a bad rule file, say) or was not ready within 30 s; the
                message carries the errors from its log.
        """
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": list(self.targets)}]}
            ],
        }
        config_path = self.directory / "prometheus.yml"
        config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        command = [
            prometheus_binary(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own argv: the server binary
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and self._process.poll() is None:
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in lines if "level=error" in line] or lines[-10:]
        raise RuntimeError(f"prometheus on port {self.port} did not start:\n" + "\n".join(errors))

    def stop(self) -> None:
        """Terminate the server and wait for it (SIGKILL after 10 s)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant query.

        Args:
            expr: PromQL.
            at: evaluation time, Unix seconds; now by default.

        Returns:
            One entry per series: its ``metric`` labels and its ``value`` (``[time, text]``); a
            scalar or a string is one entry with no labels.

        Raises:
            PrometheusQueryError: Prometheus refused the query.
        """
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        data = self._api("query", params, expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, start: float, end: float, step_seconds: float = 1.0
    ) -> list[dict[str, Any]]:
        """Evaluate a range query from ``start`` to ``end`` (Unix seconds).

        Returns:
            The ``result`` list: one entry per series, with ``values``.

        Raises:
            PrometheusQueryError: Prometheus refused the query.
        """
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        result: list[dict[str, Any]] = self._api(
            "query_range", {**params, "step": f"{step_seconds}"}, expr
        )["result"]
        return result

    def series(self, match: str) -> list[dict[str, str]]:
        """Return the label sets of every series ``match`` selects (stale ones included)."""
        found: list[dict[str, str]] = self._api("series", {"match[]": match}, match)
        return found

    def rules(self) -> list[dict[str, Any]]:
        """Return every loaded rule: ``name``, ``query``, ``health``, ``lastError``, ..."""
        groups = self._api("rules", {}, "rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def targets_up(self) -> frozenset[str]:
        """Return the targets whose last scrape succeeded (``host:port``)."""
        active = self._api("targets", {"state": "active"}, "targets")["activeTargets"]
        return frozenset(t["labels"]["instance"] for t in active if t["health"] == "up")

    def _api(self, endpoint: str, params: Mapping[str, str], expr: str) -> Any:
        """GET ``/api/v1/<endpoint>?params``; return its ``data``, or raise Prometheus's error."""
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as answer:  # noqa: S310 - loopback
                body = json.load(answer)
        except urllib.error.HTTPError as exc:  # 400 and 422 carry the error as JSON
            with exc:
                text = exc.read()
            try:
                body = json.loads(text)
            except ValueError:
                raise exc from None
        if body.get("status") != "success":
            raise PrometheusQueryError(expr, body.get("errorType", "?"), body.get("error", "?"))
        return body["data"]

    def _ready(self) -> bool:
        try:
            # 503 until the storage is open and the rules loaded: urlopen raises HTTPError.
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):  # noqa: S310 - loopback
                return True
        except OSError:
            return False
