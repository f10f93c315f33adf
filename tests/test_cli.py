"""Tests for the `throttle` command line, run as real subprocesses."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from throttle.cli import main


def test_demo_runs_a_job_against_the_simulator_and_succeeds() -> None:
    """`throttle demo` learns limits, finishes every request, and prints a summary."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "throttle.cli",
            "demo",
            "--requests",
            "60",
            "--tpm",
            "600000",
            "--latency",
            "0.02",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "succeeded 60, failed 0" in result.stdout
    assert "theoretical minimum" in result.stdout
    assert "done, 0 failed" in result.stderr  # periodic progress lines off a terminal


def test_simulate_serves_until_terminated() -> None:
    """`throttle simulate --port P` serves the API and its stats, and stops on SIGTERM."""
    command = [
        sys.executable,
        "-m",
        "throttle.cli",
        "simulate",
        "--port",
        "0",
        "--rpm",
        "100",
        "--model",
        "tiny:10:1000",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert "listening on http://127.0.0.1:" in line
            url = line.split("listening on ")[1].split()[0]
            request = urllib.request.Request(  # noqa: S310 - loopback URL the simulator printed
                f"{url}/chat/completions",
                method="POST",
                data=json.dumps({"model": "tiny", "messages": [], "max_tokens": 5}).encode(),
                headers={"Authorization": "Bearer sk-x", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert response.headers["x-ratelimit-limit-requests"] == "10"
            started = time.monotonic()
            process.terminate()
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - started < 10
        finally:
            process.kill()


def test_bad_arguments_exit_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed model spec or a bad request count is a usage error."""
    with pytest.raises(SystemExit) as caught:
        main(["simulate", "--model", "nonsense"])
    assert caught.value.code == 2
    assert "NAME:RPM:TPM" in capsys.readouterr().err
    assert main(["demo", "--requests", "0"]) == 2
    assert "--requests must be at least 1" in capsys.readouterr().err
