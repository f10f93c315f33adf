"""Shared by the multi-process benchmarks: request files, ``throttle run`` workers, results, Redis.

The workers are ``python -m throttle run`` subprocesses started with
``asyncio.create_subprocess_exec``, so the parent's event loop keeps serving the simulated API
it runs in-process. Each worker writes its stdout and stderr to files beside its results.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from throttle.testing import ModelLimits, SimulatorConfig
from throttle.testing.demo_requests import demo_request

RPM, TPM, LATENCY = 3_000, 1_000_000, 0.3
API_KEY = "sk-bench"
# Commands the Lua script runs inside the server: INFO commandstats counts them too, but
# they cost no round trip (only the EVALSHA that ran them did).
SCRIPT_COMMANDS = frozenset(
    name.lower()
    for script in files("throttle.redis_backend").iterdir()
    if script.name.endswith(".lua")
    for name in re.findall(r"redis\.p?call\(\s*[\"'](\w+)[\"']", script.read_text())
)


def simulator_config(*, headers: bool) -> SimulatorConfig:
    """One key, RPM 3,000, TPM 1,000,000, 300 ms latency, every bucket empty at start."""
    return SimulatorConfig(
        default_limits=ModelLimits(rpm=RPM, tpm=TPM),
        start_level=0.0,
        latency=LATENCY,
        rate_limit_headers=headers,
    )


def minimum_seconds(charged_tokens: int, requests: int) -> float:
    """The fastest the key can serve this work from an empty bucket, in seconds."""
    return max(charged_tokens / TPM, requests / RPM) * 60


def chat_body(index: int) -> dict[str, object]:
    """A chat request like ``throttle demo``'s: its output cap makes TPM the binding limit."""
    return demo_request(index)


def write_requests(path: Path, first: int, lines: int) -> None:
    """Write ``lines`` chat requests, items ``first`` onwards, one JSON body a line."""
    with path.open("w") as handle:
        handle.writelines(json.dumps(chat_body(first + i)) + "\n" for i in range(lines))


@dataclass(frozen=True, slots=True)
class Worker:
    """One ``throttle run`` subprocess and its files."""

    number: int
    command: tuple[str, ...]
    requests: Path
    results: Path
    lines: int
    process: asyncio.subprocess.Process

    def result_lines(self) -> int:
        """Lines of the results file so far (a torn last line included)."""
        if not self.results.exists():
            return 0
        with self.results.open("rb") as handle:
            return sum(1 for _ in handle)

    def stderr(self) -> str:
        """What the worker printed on stderr (its summary, errors)."""
        return self.requests.with_suffix(".stderr").read_text()


def worker_command(
    requests: Path, results: Path, url: str, redis_url: str | None, *, limits: bool
) -> tuple[str, ...]:
    """The ``throttle run`` argv of one worker; ``limits`` gives it the true RPM and TPM."""
    command = [sys.executable, "-m", "throttle", "run", str(requests)]
    command += ["--url", f"{url}/chat/completions", "-o", str(results), "--no-progress"]
    if redis_url is not None:
        command += ["--redis", redis_url]
    if limits:
        command += ["--rpm", str(RPM), "--tpm", str(TPM)]
    return tuple(command)


async def launch(command: tuple[str, ...], log_stem: Path) -> asyncio.subprocess.Process:
    """Start ``command`` with the benchmark's API key; stdout and stderr go to files."""
    environment = {**os.environ, "OPENAI_API_KEY": API_KEY}
    with (
        log_stem.with_suffix(".stdout").open("ab") as out,
        log_stem.with_suffix(".stderr").open("ab") as err,
    ):
        return await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=err, env=environment
        )


async def start_workers(
    folder: Path, url: str, redis_url: str | None, *, total: int, count: int, limits: bool
) -> list[Worker]:
    """Split ``total`` requests into ``count`` files and start one worker on each."""
    workers = []
    share = total // count
    for number in range(count):
        requests = folder / f"worker{number}.jsonl"
        results = folder / f"worker{number}_results.jsonl"
        write_requests(requests, number * share, share)
        command = worker_command(requests, results, url, redis_url, limits=limits)
        process = await launch(command, requests)
        workers.append(Worker(number, command, requests, results, share, process))
    return workers


@dataclass(frozen=True, slots=True)
class ResultTally:
    """What one or more results files hold, against the lines their inputs had."""

    lines: int
    succeeded: int = 0
    failed: int = 0
    duplicates: int = 0
    missing: int = 0
    unreadable: int = 0

    @property
    def exactly_once(self) -> bool:
        """Every input line has exactly one result line, and nothing else is there."""
        return not (self.duplicates or self.missing or self.unreadable)

    def __add__(self, other: ResultTally) -> ResultTally:
        return ResultTally(
            self.lines + other.lines,
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.duplicates + other.duplicates,
            self.missing + other.missing,
            self.unreadable + other.unreadable,
        )


def read_results(path: Path, lines: int) -> ResultTally:
    """Count the results of a file of ``lines`` inputs: one per index expected."""
    seen: Counter[int] = Counter()
    succeeded = failed = unreadable = 0
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        try:
            record = json.loads(line)
            index = int(record["index"])
        except (ValueError, KeyError, TypeError):
            unreadable += 1
            continue
        seen[index] += 1
        if seen[index] == 1:
            succeeded += "response" in record
            failed += "error" in record
    duplicates = sum(n - 1 for n in seen.values())
    unexpected = sum(1 for index in seen if not 0 <= index < lines)
    missing = sum(1 for index in range(lines) if index not in seen)
    return ResultTally(lines, succeeded, failed, duplicates, missing, unreadable + unexpected)


def tally(workers: list[Worker]) -> ResultTally:
    """The results of every worker, summed."""
    total = ResultTally(0)
    for worker in workers:
        total += read_results(worker.results, worker.lines)
    return total


def command_counts(stats: Mapping[str, Any]) -> Counter[str]:
    """Calls per command in an ``INFO commandstats`` reply, INFO itself left out."""
    counts: Counter[str] = Counter()
    for name, figures in stats.items():
        command = name.removeprefix("cmdstat_")
        if command != "info":
            counts[command] = int(figures["calls"])
    return counts


@dataclass(frozen=True, slots=True)
class RedisTraffic:
    """Commands Redis ran between two ``INFO commandstats`` readings.

    ``commands`` counts everything, the commands scripts ran inside the server included;
    ``round_trips`` only what clients sent (a TIME sent by a client is counted with the
    script's TIMEs, a handful per run).
    """

    by_command: dict[str, int]

    @property
    def commands(self) -> int:
        """Every command counted, inside scripts too."""
        return sum(self.by_command.values())

    @property
    def round_trips(self) -> int:
        """Commands that clients sent."""
        return sum(n for name, n in self.by_command.items() if name not in SCRIPT_COMMANDS)

    def breakdown(self) -> str:
        """The commands, most called first; ``*`` marks those run inside the script."""
        ranked = sorted(self.by_command.items(), key=lambda item: -item[1])
        return " ".join(
            f"{name}{'*' if name in SCRIPT_COMMANDS else ''}={n}" for name, n in ranked if n
        )


def traffic(before: Counter[str], after: Counter[str]) -> RedisTraffic:
    """The commands run between ``before`` and ``after``."""
    return RedisTraffic(dict(after - before))


async def kill_running(workers: list[Worker]) -> None:
    """SIGKILL the workers still running (the benchmark failed or was interrupted)."""
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()


async def wait_all(workers: list[Worker]) -> list[int]:
    """Wait for every worker; return their exit statuses."""
    return list(await asyncio.gather(*(worker.process.wait() for worker in workers)))
