"""`throttle run` under faults: a full disk, lines nothing expected. Every line ends once."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from throttle.run_options import RunOptions
from throttle.runner import EXIT_FAILED, EXIT_OK, EXIT_USAGE, JobRunner
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig

LINES = 300
ROOMY = SimulatorConfig(latency=0.01, default_limits=ModelLimits(rpm=10**7, tpm=10**9))


def chat(i: int) -> dict[str, object]:
    """A small chat request."""
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"{i}"}],
    }


def indices(path: Path) -> list[int]:
    """The indices of the whole result lines of a results file."""
    return sorted(json.loads(line)["index"] for line in path.read_text().splitlines())


def small_files() -> None:
    """In the child: files may grow to 8 KB; a larger write fails (EFBIG) instead of killing."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


async def test_a_full_disk_stops_the_job_and_a_rerun_finishes_every_line_once(
    tmp_path: Path,
) -> None:
    """The first failed write stops sending, exits 2 saying what to do; the rerun completes."""
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(LINES)))
    async with SimulatedAPI(ROOMY) as sim:
        command = [sys.executable, "-m", "throttle", "run", str(requests), "-o", str(output)]
        command += ["--url", f"{sim.base_url}/chat/completions", "--max-concurrency", "8"]
        command += ["--no-progress"]
        env = {**os.environ, "OPENAI_API_KEY": "sk-disk"}
        full = await asyncio.to_thread(
            subprocess.run,
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=small_files,
        )
        sent_while_full = sim.stats.received
        rerun = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
        )
    assert full.returncode == EXIT_USAGE, full.stderr
    assert "cannot write results" in full.stderr
    assert "run the same command again" in full.stderr
    assert "Task exception was never retrieved" not in full.stderr
    assert sent_while_full < LINES // 2  # it stopped sending: not the whole job billed
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert indices(output) == list(range(LINES))


async def test_a_line_nothing_expected_still_gets_its_result(tmp_path: Path) -> None:
    """A body nested too deep, or a max_tokens too big to count: an error result, exit 1."""
    nested: object = "deep"
    for _ in range(50_000):
        nested = [nested]
    odd = [
        {**chat(0), "messages": [{"role": "user", "content": nested}]},
        {**chat(1), "max_tokens": 10**400},
    ]
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 60_000))
    lines = [json.dumps(line) for line in odd] + [json.dumps(chat(i)) for i in range(2, 6)]
    requests.write_text("\n".join(lines) + "\n")
    async with SimulatedAPI(ROOMY) as sim:
        options = RunOptions(requests, output, f"{sim.base_url}/chat/completions", "sk-odd")
        status = await JobRunner(options, show_progress=False).run()
    records = {
        json.loads(line)["index"]: json.loads(line) for line in output.read_text().splitlines()
    }
    assert status == EXIT_FAILED
    assert sorted(records) == list(range(6))
    assert "error" in records[0]
    assert "error" in records[1]
    assert all("response" in records[i] for i in range(2, 6))


async def test_run_timeout_abandons_a_hung_attempt_and_retries_it(tmp_path: Path) -> None:
    """--timeout 0.5: an answer held 5 s is abandoned after 0.5 s and the retry succeeds."""
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_text(json.dumps(chat(0)) + "\n")
    async with SimulatedAPI(ROOMY) as sim:
        sim.inject("spike", 1)  # the first attempt's answer comes 5 s late
        command = [sys.executable, "-m", "throttle", "run", str(requests), "-o", str(output)]
        command += ["--url", f"{sim.base_url}/chat/completions", "--no-progress"]
        command += ["--timeout", "0.5"]
        env = {**os.environ, "OPENAI_API_KEY": "sk-hung"}
        started = asyncio.get_running_loop().time()
        done = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
        )
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(0.1)  # the server notices the abandoned answer's client left
        abandoned = sim.stats.abandoned
    assert done.returncode == EXIT_OK, done.stderr
    assert "error" not in json.loads(output.read_text())
    assert abandoned == 1
    assert elapsed < 4.5  # not the 5 s the hung answer took
