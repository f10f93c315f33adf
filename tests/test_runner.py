"""End-to-end tests of the job runner against the simulated API."""

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.scripted_server import COMPLETION, NOT_FOUND, serve
from throttle.job_gc import CONTAINERS_PER_LINE, young_collections_for
from throttle.job_stop import LineTasks
from throttle.run_options import RunOptions
from throttle.runner import EXIT_FAILED, EXIT_OK, EXIT_USAGE, JobRunner
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.ports import free_port


def chat_line(i: int, max_tokens: int = 20) -> str:
    """One request line with metadata."""
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"row {i}"}],
            "metadata": {"row": i},
        }
    )


def write_requests(path: Path, lines: list[str]) -> Path:
    """Write an input file."""
    path.write_text("\n".join(lines) + "\n")
    return path


def results(path: Path) -> list[dict[str, Any]]:
    """The result records of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def options(tmp_path: Path, base_url: str, **overrides: Any) -> RunOptions:
    """Run options for requests.jsonl in tmp_path, chat completions at `base_url`."""
    values: dict[str, Any] = {
        "input": tmp_path / "requests.jsonl",
        "output": tmp_path / "results.jsonl",
        "url": f"{base_url}/chat/completions",
        "api_key": "sk-run",
        "max_attempts": 3,
    }
    values.update(overrides)
    return RunOptions(**values)


def fast(**overrides: Any) -> SimulatorConfig:
    """A quick simulator."""
    values: dict[str, Any] = {"latency": 0.01}
    values.update(overrides)
    return SimulatorConfig(**values)


async def test_every_line_gets_exactly_one_result_with_its_metadata(tmp_path: Path) -> None:
    """A clean run: exit 0, one line per index, metadata carried, never sent."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(40)])
    async with SimulatedAPI(fast()) as sim:
        status = await JobRunner(options(tmp_path, sim.base_url), show_progress=False).run()
    records = results(tmp_path / "results.jsonl")
    assert status == EXIT_OK
    assert sorted(r["index"] for r in records) == list(range(40))
    assert all(r["metadata"] == {"row": r["index"]} for r in records)
    assert all("metadata" not in r["request"] for r in records)
    assert all(r["response"]["object"] == "chat.completion" for r in records)


async def test_bad_lines_get_error_results_and_the_job_goes_on(tmp_path: Path) -> None:
    """Broken JSON, non-objects and wrong types fail alone; exit 1."""
    lines = [
        chat_line(0),
        "{broken",
        "[1, 2]",
        json.dumps({"model": "m", "messages": 5}),
        "",
        chat_line(4),
    ]
    write_requests(tmp_path / "requests.jsonl", lines)
    async with SimulatedAPI(fast()) as sim:
        status = await JobRunner(options(tmp_path, sim.base_url), show_progress=False).run()
    by_index = {r["index"]: r for r in results(tmp_path / "results.jsonl")}
    assert status == EXIT_FAILED
    assert set(by_index) == {0, 1, 2, 3, 4}
    assert by_index[1]["error"]["code"] == "invalid_json"
    assert by_index[1]["line"] == "{broken"
    assert by_index[2]["error"]["code"] == "not_an_object"
    assert by_index[3]["error"]["type"] == "InvalidRequestError"
    assert "messages" in by_index[3]["error"]["message"]
    assert "response" in by_index[0]
    assert "response" in by_index[4]
    assert sim.stats.received == 2


async def test_running_again_sends_nothing_that_already_has_a_result(tmp_path: Path) -> None:
    """Resume: a finished job run again sends no request and exits 0."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(10)])
    async with SimulatedAPI(fast()) as sim:
        await JobRunner(options(tmp_path, sim.base_url), show_progress=False).run()
        again = await JobRunner(options(tmp_path, sim.base_url), show_progress=False).run()
    assert again == EXIT_OK
    assert sim.stats.received == 10
    assert len(results(tmp_path / "results.jsonl")) == 10


async def test_retry_failed_reruns_only_error_lines_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain rerun says how many errors it keeps and how to retry them; --retry-failed does."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(6)])
    async with SimulatedAPI(fast()) as sim:
        sim.inject("server_error", 9)  # the first three requests fail all 3 attempts
        first = JobRunner(options(tmp_path, sim.base_url, max_concurrency=1), show_progress=False)
        assert await first.run() == EXIT_FAILED
        plain = await JobRunner(options(tmp_path, sim.base_url), show_progress=False).run()
        retried = await JobRunner(
            options(tmp_path, sim.base_url, retry_failed=True), show_progress=False
        ).run()
    records = results(tmp_path / "results.jsonl")
    assert (plain, retried) == (EXIT_FAILED, EXIT_OK)
    assert "3 lines of" in caplog.text
    assert "add --retry-failed to retry them" in caplog.text
    assert sorted(r["index"] for r in records) == list(range(6))
    assert all("response" in r for r in records)


async def test_a_torn_last_result_is_repaired_and_redone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash mid-write leaves half a line: it is cut and its request runs again."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(3)])
    output = tmp_path / "results.jsonl"
    output.write_text(json.dumps({"index": 0, "response": {}}) + "\n" + '{"index": 1, "resp')
    async with SimulatedAPI(fast()) as sim:
        status = await JobRunner(options(tmp_path, sim.base_url), show_progress=False).run()
    assert status == EXIT_OK
    assert sorted(r["index"] for r in results(output)) == [0, 1, 2]
    assert "torn by a crash" in caplog.text
    assert sim.stats.received == 2


async def test_quota_error_mid_run_records_every_unfinished_line_quickly(tmp_path: Path) -> None:
    """Quota mid-run: every line recorded within seconds, exit 1, rerunnable with retry."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(500)])
    async with SimulatedAPI(fast(latency=0.05, quota_tokens=1500)) as sim:
        started = time.monotonic()
        status = await JobRunner(
            options(tmp_path, sim.base_url, max_concurrency=8), show_progress=False
        ).run()
        elapsed = time.monotonic() - started
    records = results(tmp_path / "results.jsonl")
    quota = [r for r in records if "error" in r]
    assert status == EXIT_FAILED
    assert elapsed < 10
    assert sorted(r["index"] for r in records) == list(range(500))
    assert quota
    assert {r["error"]["type"] for r in quota} == {"QuotaExhaustedError"}
    assert sim.stats.received_after_quota <= 8
    async with SimulatedAPI(fast()) as billing_fixed:
        status = await JobRunner(
            options(tmp_path, billing_fixed.base_url, retry_failed=True), show_progress=False
        ).run()
    assert status == EXIT_OK
    assert billing_fixed.stats.received == len(quota)
    assert all("response" in r for r in results(tmp_path / "results.jsonl"))


async def test_a_rejected_key_stops_the_run_without_losing_lines(tmp_path: Path) -> None:
    """401: exit 2 with a clear message; the lines stay pending for the fixed key."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(50)])
    config = fast(organizations={"sk-good": "org-1"})
    async with SimulatedAPI(config) as sim:
        runner = JobRunner(
            options(tmp_path, sim.base_url, api_key="sk-bad"),
            show_progress=False,
        )
        status = await runner.run()
        assert status == EXIT_USAGE
        assert runner.fatal is not None
        assert "401" in runner.fatal
        assert "invalid_api_key" in runner.fatal
        assert sim.stats.received <= 3  # the cautious probes; the queue was never sent
        fixed = await JobRunner(
            options(tmp_path, sim.base_url, api_key="sk-good"), show_progress=False
        ).run()
    assert fixed == EXIT_OK
    assert len(results(tmp_path / "results.jsonl")) == 50


def run_command(args: list[str], **kwargs: Any) -> "subprocess.Popen[str]":
    """Start `throttle run` as a real process."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-cli"}
    return subprocess.Popen(
        [sys.executable, "-m", "throttle", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def line_count(path: Path) -> int:
    """Lines in a file that may not exist yet."""
    return len(path.read_text().splitlines()) if path.exists() else 0


async def wait_for_lines(path: Path, count: int) -> int:
    """Wait (at most a minute) until the results file has `count` lines; return how many."""
    async with asyncio.timeout(60):
        # Another process writes the file: there is nothing to wait on but the file itself.
        while (lines := await asyncio.to_thread(line_count, path)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return lines


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
async def test_a_killed_run_resumes_to_exactly_one_result_per_line(
    tmp_path: Path, signum: int
) -> None:
    """Killed halfway and rerun: one success per line, server calls <= total + in flight."""
    total, concurrency = 150, 8
    write_requests(tmp_path / "requests.jsonl", [chat_line(i, 200) for i in range(total)])
    config = fast(latency=0.1, default_limits=ModelLimits(rpm=6000, tpm=600_000))
    output = tmp_path / "results.jsonl"
    async with SimulatedAPI(config) as sim:
        url = f"{sim.base_url}/chat/completions"
        args = [
            str(tmp_path / "requests.jsonl"),
            "--url",
            url,
            "-o",
            str(output),
            "--no-progress",
            "--max-concurrency",
            str(concurrency),
        ]
        with run_command(args) as first:
            await wait_for_lines(output, total // 3)
            first.send_signal(signum)
            code = await asyncio.to_thread(first.wait, 30)
            written_at_stop = line_count(output)
            answered_at_stop = sim.stats.succeeded
        with run_command(args) as second:
            second_code = await asyncio.to_thread(second.wait, 60)
    records = results(output)
    assert sorted(r["index"] for r in records) == list(range(total))
    assert all("response" in r for r in records)
    assert second_code == 0
    assert sim.stats.succeeded <= total + concurrency
    if signum == signal.SIGTERM:
        assert code == 130
        assert written_at_stop == answered_at_stop  # in-flight answers were all written
        assert sim.stats.succeeded == total
    else:
        assert code == -signal.SIGKILL


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl", "--url", "http://127.0.0.1:9/v1/chat/completions"], "cannot read"),
        (["--url", "http://127.0.0.1:9/v1/chat/completions"], "required"),
    ],
)
def test_usage_and_input_file_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """An unreadable input or a malformed command exits 2 naming the problem."""
    with run_command(args, cwd=tmp_path) as process:
        _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert message in err


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    """Without the key variable the run refuses to start, naming the variable."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(0)])
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "throttle",
            "run",
            str(tmp_path / "requests.jsonl"),
            "--url",
            "http://127.0.0.1:9/v1/chat/completions",
            "--api-key-env",
            "MY_KEY",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "$MY_KEY" in done.stderr


async def test_azure_deployment_urls_work_with_their_query_string(tmp_path: Path) -> None:
    """An Azure URL: the deployment is the model, api-version rides along, api-key header."""
    write_requests(
        tmp_path / "requests.jsonl",
        [
            json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
            for _ in range(3)
        ],
    )
    async with SimulatedAPI(fast()) as sim:
        url = f"{sim.azure_url('my-4o')}/chat/completions?api-version=2024-10-21"
        status = await JobRunner(
            options(tmp_path, sim.base_url, url=url), show_progress=False
        ).run()
    records = results(tmp_path / "results.jsonl")
    assert status == EXIT_OK
    assert [r["response"]["model"] for r in records] == ["my-4o"] * 3


async def test_a_wrong_endpoint_stops_the_job_before_it_burns_the_file(tmp_path: Path) -> None:
    """404 on the first answers and nothing succeeded: exit 2 naming the URL, no result lines."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(200)])
    server, base_url, _answered = await serve([NOT_FOUND])
    try:
        runner = JobRunner(options(tmp_path, base_url), show_progress=False)
        assert await runner.run() == EXIT_USAGE
    finally:
        await server.cleanup()
    assert runner.fatal is not None
    assert "404" in runner.fatal
    assert f"{base_url}/chat/completions" in runner.fatal
    assert line_count(tmp_path / "results.jsonl") == 0  # a rerun after the fix runs them all


async def test_no_server_at_the_url_stops_the_job_quickly(tmp_path: Path) -> None:
    """Connection refused on every attempt: one line's retries, then exit 2, no results."""
    closed_port = free_port()  # nothing listens there
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(200)])
    started = time.monotonic()
    runner = JobRunner(
        options(tmp_path, f"http://127.0.0.1:{closed_port}/v1", max_attempts=2),
        show_progress=False,
    )
    assert await runner.run() == EXIT_USAGE
    assert time.monotonic() - started < 15
    assert runner.fatal is not None
    assert "no answer from the server" in runner.fatal
    assert line_count(tmp_path / "results.jsonl") == 0


async def test_after_a_success_an_endpoint_error_is_the_lines_own(tmp_path: Path) -> None:
    """Once a line succeeded the URL works: later 404s are those lines' results, the job ends."""
    write_requests(tmp_path / "requests.jsonl", [chat_line(i) for i in range(4)])
    server, base_url, _answered = await serve(
        [COMPLETION, NOT_FOUND]
    )  # limits unknown: one probe first
    try:
        runner = JobRunner(options(tmp_path, base_url), show_progress=False)
        assert await runner.run() == EXIT_FAILED
    finally:
        await server.cleanup()
    records = results(tmp_path / "results.jsonl")
    assert sorted("error" in record for record in records) == [False, True, True, True]


def batch_line(custom_id: str, url: str, body: dict[str, Any] | None, **fields: Any) -> str:
    """One Batch API line (no body when `body` is None)."""
    line = {"custom_id": custom_id, "method": "POST", "url": url, **fields}
    if body is not None:
        line["body"] = body
    return json.dumps(line)


def chat_body(i: int) -> dict[str, Any]:
    """A small chat completions body."""
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"{i}"}],
    }


EMBEDDING = {"model": "text-embedding-3-small", "input": "a row"}


async def test_a_batch_file_runs_chat_and_embeddings_against_one_base_url(tmp_path: Path) -> None:
    """Batch API lines: --url is the base, each line's url is joined, custom_id is carried."""
    lines = [batch_line(f"chat-{i}", "/v1/chat/completions", chat_body(i)) for i in range(6)]
    lines += [batch_line(f"emb-{i}", "/v1/embeddings", EMBEDDING) for i in range(6)]
    write_requests(tmp_path / "requests.jsonl", lines)
    async with SimulatedAPI(fast()) as sim:
        runner = JobRunner(options(tmp_path, sim.base_url, url=sim.base_url), show_progress=False)
        status = await runner.run()
    records = results(tmp_path / "results.jsonl")
    assert status == EXIT_OK
    assert sorted(r["custom_id"] for r in records) == sorted(
        json.loads(x)["custom_id"] for x in lines
    )
    objects = {r["custom_id"].split("-")[0]: r["response"]["object"] for r in records}
    assert objects == {"chat": "chat.completion", "emb": "list"}
    assert all(r["request"] == json.loads(lines[r["index"]])["body"] for r in records)


async def test_a_bad_batch_line_gets_its_own_error_and_the_others_run(tmp_path: Path) -> None:
    """GET, a missing body, a repeated custom_id and a bare body each fail alone, named."""
    lines = [
        batch_line("ok-0", "/v1/chat/completions", chat_body(0)),
        batch_line("get", "/v1/chat/completions", chat_body(1), method="GET"),
        batch_line("no-body", "/v1/embeddings", None),
        batch_line("ok-0", "/v1/embeddings", EMBEDDING),
        chat_line(4),
        batch_line("ok-5", "/v1/embeddings", EMBEDDING),
    ]
    write_requests(tmp_path / "requests.jsonl", lines)
    async with SimulatedAPI(fast()) as sim:
        runner = JobRunner(options(tmp_path, sim.base_url, url=sim.base_url), show_progress=False)
        status = await runner.run()
    by_index = {r["index"]: r for r in results(tmp_path / "results.jsonl")}
    assert status == EXIT_FAILED
    assert sim.stats.received == 2
    assert {i: r["custom_id"] for i, r in by_index.items()} == {
        0: "ok-0",
        1: "get",
        2: "no-body",
        3: "ok-0",
        4: None,
        5: "ok-5",
    }
    codes = {i: r["error"]["code"] for i, r in by_index.items() if "error" in r}
    assert codes == {
        1: "method_not_allowed",
        2: "invalid_batch_line",
        3: "duplicate_custom_id",
        4: "mixed_line_formats",
    }
    assert "line 0" in by_index[3]["error"]["message"]
    assert "line 4" in by_index[4]["error"]["message"]
    assert all(by_index[i]["request"] is None for i in codes)


async def test_a_line_url_with_no_endpoint_stops_the_job_though_others_worked(
    tmp_path: Path,
) -> None:
    """The wrong-set-up stop is judged per endpoint: a 404 where nothing succeeded stops it."""
    lines = [batch_line(f"chat-{i}", "/v1/chat/completions", chat_body(i)) for i in range(3)]
    lines += [batch_line(f"emb-{i}", "/v1/embedding", EMBEDDING) for i in range(3)]
    write_requests(tmp_path / "requests.jsonl", lines)
    async with SimulatedAPI(fast()) as sim:
        runner = JobRunner(options(tmp_path, sim.base_url, url=sim.base_url), show_progress=False)
        status = await runner.run()
    assert status == EXIT_USAGE
    assert runner.fatal is not None
    assert f"{sim.base_url}/embedding " in runner.fatal
    assert "'/v1/embedding'" in runner.fatal
    assert all("response" in r for r in results(tmp_path / "results.jsonl"))


async def test_a_wrong_base_url_stops_a_batch_file_before_it_burns_it(tmp_path: Path) -> None:
    """A base URL with no endpoints below it: the first 404 stops the job, no result lines."""
    write_requests(
        tmp_path / "requests.jsonl",
        [batch_line(f"c{i}", "/v1/chat/completions", chat_body(i)) for i in range(50)],
    )
    async with SimulatedAPI(fast()) as sim:
        url = f"{sim.base_url}/chat/completions"  # an endpoint, where a base was wanted
        runner = JobRunner(options(tmp_path, sim.base_url, url=url), show_progress=False)
        assert await runner.run() == EXIT_USAGE
    assert runner.fatal is not None
    assert "the base URL" in runner.fatal
    assert line_count(tmp_path / "results.jsonl") == 0


async def test_a_line_that_is_not_utf8_gets_its_own_error_result_and_the_rest_run(
    tmp_path: Path,
) -> None:
    """An undecodable byte fails its line alone; every other line runs; results stay UTF-8."""
    good = [chat_line(i).encode() for i in range(4)]
    bad = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "caf\xe9"}]}'
    (tmp_path / "requests.jsonl").write_bytes(b"\n".join([*good[:2], bad, *good[2:]]) + b"\n")
    async with SimulatedAPI(fast()) as sim:
        status = await JobRunner(options(tmp_path, sim.base_url), show_progress=False).run()
    output = tmp_path / "results.jsonl"
    records = {r["index"]: r for r in results(output)}
    output.read_bytes().decode("utf-8")
    assert status == EXIT_FAILED
    assert sorted(records) == list(range(5))
    assert records[2]["error"]["code"] == "invalid_utf8"
    assert all("response" in records[i] for i in (0, 1, 3, 4))
    assert sim.stats.received == 4


def test_young_collections_wait_for_the_lines_in_flight_and_come_back_after() -> None:
    """Inside a job the youngest threshold is capacity lines' containers; then it is restored."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        with young_collections_for(1024):
            assert gc.get_threshold() == (CONTAINERS_PER_LINE * 1024, 11, 12)
        assert gc.get_threshold() == (700, 11, 12)
    finally:
        gc.set_threshold(*before)


def test_a_collector_switched_off_stays_off_during_a_job() -> None:
    """A youngest threshold of 0 (no automatic collection) is left as it is."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(0, 10, 10)
        with young_collections_for(1024):
            assert gc.get_threshold()[0] == 0
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)


async def test_a_line_that_raises_is_logged_and_its_worker_takes_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception out of a line's handling loses that line only: the worker goes on."""
    lines = iter(range(6))
    handled: list[int] = []

    async def handle(line: int) -> None:
        await asyncio.sleep(0)
        if line == 2:
            raise RuntimeError("a bug")
        handled.append(line)

    async def stop_sending() -> None:
        return None

    await LineTasks(stop_sending).run(lambda: next(lines, None), handle, workers=1)
    assert handled == [0, 1, 3, 4, 5]
    assert "a line failed unexpectedly" in caplog.text
