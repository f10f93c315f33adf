"""Tests for the `throttle` command line, run as real subprocesses."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

import throttle
from throttle.cli import main
from throttle.limit_settings import default_max_in_flight


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


NO_SUCH_KEY = "THROTTLE_TEST_NO_SUCH_KEY"  # an unset variable: the run stops before sending


def _throttle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "throttle", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _option_entries(help_text: str) -> dict[str, str]:
    """Each option of a ``--help`` text, its wrapped lines joined, keyed by its first flag."""
    options = help_text.split("\noptions:\n", 1)[1]
    entries: dict[str, str] = {}
    flag = ""
    for line in options.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line
        elif flag:
            entries[flag] += line
    return {flag: " ".join(text.split()) for flag, text in entries.items()}


def test_version_flag_prints_the_package_version() -> None:
    """`throttle --version` prints throttle.__version__ and exits 0."""
    result = _throttle("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"throttle {throttle.__version__}"


@pytest.mark.parametrize("command", ["run", "demo", "simulate"])
def test_subcommand_help_shows_every_default_without_markup(command: str) -> None:
    """Every optional option of a subcommand's --help states its default; no ``markup``."""
    result = _throttle(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "`" not in result.stdout
    entries = _option_entries(result.stdout)
    assert "--log-level" in entries
    for flag, text in entries.items():
        if flag not in ("-h", "--url"):  # --help has no default; --url is required
            assert "(default" in text, text


def test_run_help_states_the_defaults_of_run_options() -> None:
    """`throttle run --help` names the actual default values of run's options."""
    entries = _option_entries(_throttle("run", "--help").stdout)
    assert "(default: 6)" in entries["--max-attempts"]
    assert f"(default: {default_max_in_flight()})" in entries["--max-concurrency"]
    assert "(default: OPENAI_API_KEY)" in entries["--api-key-env"]
    assert "(default: fail_closed)" in entries["--redis-failure-policy"]
    assert "(default: REQUESTS_results.jsonl)" in entries["-o"]
    assert "(default: WARNING" in entries["--log-level"]


def test_log_level_after_the_run_subcommand_is_accepted() -> None:
    """`throttle run ... --log-level DEBUG` parses, and turns on debug logging."""
    args = ("run", os.devnull, "--url", "http://127.0.0.1:9/v1", "--api-key-env", NO_SUCH_KEY)
    quiet = _throttle(*args)
    loud = _throttle(*args, "--log-level", "debug")
    assert loud.returncode == quiet.returncode == 2  # the missing key, not a usage error
    assert "set the API key" in loud.stderr
    assert "DEBUG" not in quiet.stderr
    assert "DEBUG asyncio" in loud.stderr  # the event loop's first debug line


def test_log_level_after_the_subcommand_overrides_the_top_level_one() -> None:
    """Given both before and after `run`, the --log-level after the subcommand wins."""
    args = ("run", os.devnull, "--url", "http://127.0.0.1:9/v1")
    result = _throttle(
        "--log-level",
        "DEBUG",
        *args,
        "--api-key-env",
        NO_SUCH_KEY,
        "--log-level",
        "ERROR",
    )
    assert result.returncode == 2
    assert "DEBUG" not in result.stderr
