"""Shutdown: leaving a Throttle, or a signal to `throttle run`, leaves nothing running or torn.

The simulator runs in a process of its own here, so that every task left in this test's event
loop is one that throttle (or the test) started.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import throttle
from throttle import ClosedError, Throttle
from throttle.admission import KeyLoad
from throttle.keys import BucketKey
from throttle.run_options import RunOptions
from throttle.runner import EXIT_INTERRUPTED, EXIT_OK, JobRunner

LEAKS = ("Task was destroyed", "Unclosed", "unclosed", "Task exception was never retrieved")
URL = re.compile(r"listening on (http://\S+/v1)")


@asynccontextmanager
async def simulator_process(*args: str) -> AsyncIterator[str]:
    """`throttle simulate` in its own process; yields its /v1 base URL."""
    command = [sys.executable, "-m", "throttle", "simulate", "--port", "0", *args]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            while not (found := URL.search((await process.stdout.readline()).decode())):
                pass
        yield found.group(1)
    finally:
        process.kill()  # it would wait out the answers it still holds back
        await process.communicate()


def chat(i: int) -> dict[str, Any]:
    """A small chat request."""
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"{i}"}],
    }


def write_requests(path: Path, count: int) -> Path:
    """An input file of `count` chat lines."""
    path.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(count)))
    return path


def whole_records(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file, each of which must be a whole JSON line."""
    text = path.read_text()
    assert not text or text.endswith("\n"), "the last line is torn"
    return [json.loads(line) for line in text.splitlines()]


async def until(condition: Any, seconds: float = 30) -> None:
    """Wait until `condition()` holds, looking every 20 ms."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - another process's progress, nothing to await
            await asyncio.sleep(0.02)


def in_flight(load: Mapping[BucketKey, KeyLoad]) -> int:
    """Requests sent and not answered, over every key."""
    return sum(key_load.in_flight for key_load in load.values())


def others() -> set[asyncio.Task[Any]]:
    """The tasks of this event loop besides the test's own."""
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_leaving_a_throttle_ends_queued_and_in_flight_requests_at_once() -> None:
    """Queued and sent requests fail with ClosedError at once, unretried; no task is left."""
    events: list[throttle.Event] = []
    async with simulator_process("--latency", "30") as url:
        async with Throttle(url, "sk-stop", max_in_flight=2, on_event=events.append) as t:
            requests = [asyncio.create_task(t.post("chat/completions", chat(i))) for i in range(6)]
            await until(lambda: in_flight(t.load()) > 0)  # the first is sent alone (cold start)
            sent = in_flight(t.load())
            leaving = time.monotonic()
        assert others() <= set(requests)  # the Throttle's own tasks are gone
        ended = await asyncio.gather(*requests, return_exceptions=True)
        took = time.monotonic() - leaving
    assert all(isinstance(e, ClosedError) for e in ended), ended
    assert took < 0.4  # not after a retry's backoff, nor after the 30 s answer
    assert not any(isinstance(e, throttle.RetryScheduled) for e in events)
    finished = [e for e in events if isinstance(e, throttle.RequestFinished)]
    assert sorted(e.attempts for e in finished) == [0] * (6 - sent) + [1] * sent
    assert others() == set()
    gc.collect()  # an unclosed aiohttp session would warn here, and warnings are errors


async def test_a_signal_cancels_lines_still_in_flight_after_the_grace(tmp_path: Path) -> None:
    """SIGTERM: nothing more is sent; lines not answered within the grace are cancelled."""
    requests = write_requests(tmp_path / "requests.jsonl", 20)
    output = tmp_path / "results.jsonl"
    async with simulator_process("--latency", "30") as url:
        options = RunOptions(
            requests, output, f"{url}/chat/completions", "sk-stop", max_concurrency=4
        )
        runner = JobRunner(options, show_progress=False, stop_grace=0.2)
        job = asyncio.create_task(runner.run())
        await until(lambda: in_flight(runner.load()) > 0)
        os.kill(os.getpid(), signal.SIGTERM)  # the runner's handler takes it, not the process
        started = time.monotonic()
        status = await job
        took = time.monotonic() - started
        assert others() == set()
    assert status == EXIT_INTERRUPTED
    assert took < 5  # the grace and the closing, not the 30 s answers
    assert whole_records(output) == []  # nothing was answered: nothing written, nothing torn


def run_command(requests: Path, output: Path, url: str) -> subprocess.Popen[str]:
    """`throttle run` as a real process that shows resource warnings on stderr."""
    command = [sys.executable, "-W", "default", "-m", "throttle", "run", str(requests)]
    command += ["-o", str(output), "--url", f"{url}/chat/completions", "--no-progress"]
    command += ["--max-concurrency", "8"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-stop"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


async def test_sigterm_twice_stops_throttle_run_cleanly_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    """Two SIGTERMs mid-run: exit 130 at once, whole lines, clean stderr; a rerun completes."""
    total = 80
    requests = write_requests(tmp_path / "requests.jsonl", total)
    output = tmp_path / "results.jsonl"
    async with simulator_process("--latency", "0.2") as url:
        with run_command(requests, output, url) as first:
            await until(lambda: output.exists() and len(output.read_bytes().splitlines()) >= 16)
            first.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            first.send_signal(signal.SIGTERM)  # the second one abandons what is in flight
            _, stopped_stderr = await asyncio.to_thread(first.communicate, timeout=30)
        stopped_at = len(whole_records(output))
        with run_command(requests, output, url) as second:
            _, rerun_stderr = await asyncio.to_thread(second.communicate, timeout=90)
    assert first.returncode == EXIT_INTERRUPTED, stopped_stderr
    assert "interrupted; run the same command again" in stopped_stderr
    assert not [leak for leak in LEAKS if leak in stopped_stderr], stopped_stderr
    assert second.returncode == EXIT_OK, rerun_stderr
    assert not [leak for leak in LEAKS if leak in rerun_stderr], rerun_stderr
    records = whole_records(output)
    assert stopped_at < total
    assert sorted(r["index"] for r in records) == list(range(total))  # each exactly once
    assert all("response" in r for r in records)
