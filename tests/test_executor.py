"""Tests for the executor seam: the runner's files, resume and exit status over any executor.

The executor here answers from the request body itself (no server): it stands for the Batch
API executor to come, and proves the runner needs nothing of the online one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from throttle import BucketKey, ErrorDetails, JobAbortedError
from throttle.admission import KeyLoad
from throttle.errors import APIStatusError, ConfigurationError
from throttle.events import EventHub, EventListener
from throttle.executor import JobLine, LineResult
from throttle.job_input import InputLine, read_lines
from throttle.online_executor import join_line_url
from throttle.run_options import RunOptions
from throttle.runner import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, JobRunner


class BodyExecutor:
    """Answers each line from its body: ``{"fail": true}`` fails, ``{"abort": true}`` aborts."""

    def __init__(self, capacity: int = 4) -> None:
        self.events = EventHub()
        self.executed: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.stopped = False
        self.closed = False
        self._capacity = capacity

    @property
    def capacity(self) -> int:
        """Lines taken at once."""
        return self._capacity

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Listeners get nothing: this executor sends no requests."""
        return self.events.subscribe(listener)

    def load(self) -> Mapping[BucketKey, KeyLoad]:
        """Nothing waits: each line is answered at once."""
        return {}

    async def execute(self, line: JobLine) -> LineResult | None:
        """Answer from the body."""
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001 * (line.index % 3))  # answers come back out of order
        finally:
            self.in_flight -= 1
        if self.stopped:
            return None
        self.executed.append(line.index)
        if line.body.get("abort"):
            error = APIStatusError(ErrorDetails(401, "invalid_api_key"))
            raise JobAbortedError("the key was rejected", error)
        if line.body.get("fail"):
            return LineResult(error=APIStatusError(ErrorDetails(400, "bad")))
        return LineResult(response={"echo": line.body["n"]}, extra={"batch_id": "batch_1"})

    async def stop(self) -> None:
        """Run nothing more."""
        self.stopped = True

    async def aclose(self) -> None:
        """Note the close."""
        self.closed = True


def job(tmp_path: Path, bodies: list[dict[str, Any]]) -> RunOptions:
    """A job over `bodies`; the URL and key are never used by this executor."""
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    return RunOptions(source, tmp_path / "results.jsonl", "http://127.0.0.1:9/unused", None)


def records(options: RunOptions) -> list[dict[str, Any]]:
    """The result records, in file order."""
    return [json.loads(line) for line in options.output.read_text().splitlines()]


async def test_runner_writes_one_result_per_line_of_any_executor(tmp_path: Path) -> None:
    """Results, errors, metadata and the executor's extra fields land once per line."""
    bodies: list[dict[str, Any]] = [{"n": i, "metadata": {"row": i}} for i in range(10)]
    bodies[3]["fail"] = True
    options = job(tmp_path, bodies)
    executor = BodyExecutor()
    status = await JobRunner(options, executor=executor, show_progress=False).run()
    assert status == EXIT_FAILED
    assert executor.closed
    written = sorted(records(options), key=lambda record: record["index"])
    assert [record["index"] for record in written] == list(range(10))
    assert written[0]["response"] == {"echo": 0}
    assert written[0]["batch_id"] == "batch_1"
    assert written[0]["metadata"] == {"row": 0}
    assert written[3]["error"]["status"] == 400


async def test_resume_hands_the_executor_only_unfinished_lines(tmp_path: Path) -> None:
    """A rerun skips lines with results: the executor never sees them again."""
    options = job(tmp_path, [{"n": i} for i in range(6)])
    await JobRunner(options, executor=BodyExecutor(), show_progress=False).run()
    again = BodyExecutor()
    status = await JobRunner(options, executor=again, show_progress=False).run()
    assert status == EXIT_OK
    assert again.executed == []
    assert len(records(options)) == 6


async def test_an_aborting_executor_stops_the_job_and_leaves_lines_for_the_rerun(
    tmp_path: Path,
) -> None:
    """JobAbortedError: exit 2, its message kept, no result for the aborted or unsent lines."""
    bodies: list[dict[str, Any]] = [{"n": i} for i in range(40)]
    bodies[2]["abort"] = True
    options = job(tmp_path, bodies)
    executor = BodyExecutor(capacity=1)
    runner = JobRunner(options, executor=executor, show_progress=False)
    assert await runner.run() == EXIT_USAGE
    assert runner.fatal == "the key was rejected"
    assert executor.stopped
    indices = {record["index"] for record in records(options)}
    assert indices == {0, 1}


async def test_the_runner_keeps_at_most_capacity_lines_in_flight(tmp_path: Path) -> None:
    """Lines on a few workers: never more in flight than the executor takes, each run once."""
    options = job(tmp_path, [{"n": i} for i in range(200)])
    executor = BodyExecutor(capacity=7)
    status = await JobRunner(options, executor=executor, show_progress=False).run()
    assert status == EXIT_OK
    assert executor.most_in_flight == 7
    assert sorted(executor.executed) == list(range(200))
    assert sorted(record["index"] for record in records(options)) == list(range(200))


async def test_an_input_that_fails_mid_way_stops_the_job_keeping_the_lines_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error after some lines: those lines still get results, then the error is raised."""
    options = job(tmp_path, [{"n": i} for i in range(10)])

    def failing(path: Path) -> Iterator[InputLine]:
        for line in read_lines(path):
            if line.index == 5:
                raise ConfigurationError(f"cannot read {path}: Input/output error")
            yield line

    monkeypatch.setattr("throttle.runner.read_lines", failing)
    executor = BodyExecutor(capacity=2)
    with pytest.raises(ConfigurationError, match="Input/output error"):
        await JobRunner(options, executor=executor, show_progress=False).run()
    assert executor.closed
    written = [record["index"] for record in records(options)]
    assert len(written) == len(set(written))
    assert set(written) <= set(range(5))
    assert len(written) >= 4  # the other worker's line may have been in flight at the stop


async def test_lines_are_checked_in_index_order_whichever_worker_takes_them(
    tmp_path: Path,
) -> None:
    """A worker whose line fails at once takes line 2 before line 1 runs: 1 keeps its custom_id."""

    def batch(custom_id: str, method: str = "POST") -> dict[str, Any]:
        return {"custom_id": custom_id, "method": method, "url": "/v1/x", "body": {"n": 0}}

    options = job(tmp_path, [batch("bad", method="GET"), batch("x"), batch("x")])
    status = await JobRunner(options, executor=BodyExecutor(capacity=2), show_progress=False).run()
    by_index = {record["index"]: record for record in records(options)}
    assert status == EXIT_FAILED
    assert by_index[0]["error"]["code"] == "method_not_allowed"
    assert "response" in by_index[1]
    assert by_index[2]["error"]["code"] == "duplicate_custom_id"
    assert "of line 1" in by_index[2]["error"]["message"]


@pytest.mark.parametrize(
    ("base_url", "line_url", "path"),
    [
        ("http://127.0.0.1:8000/v1", "/v1/chat/completions", "chat/completions"),
        ("https://api.openai.com/v1/", "/v1/embeddings", "embeddings"),
        ("https://api.openai.com/v1", "/chat/completions", "chat/completions"),
        ("http://proxy.local", "/v1/embeddings", "v1/embeddings"),
        ("http://proxy.local/openai", "/v1/embeddings", "v1/embeddings"),
        ("https://n.openai.azure.com/openai/v1", "/v1/chat/completions", "chat/completions"),
        ("https://n.openai.azure.com/openai/deployments/d", "/v1/embeddings", "embeddings"),
        ("https://n.openai.azure.com/openai/deployments/d", "/embeddings", "embeddings"),
        ("http://host/v1", "/v1beta/x", "v1beta/x"),
    ],
)
def test_a_line_url_joins_the_base_url_without_doubling_v1(
    base_url: str, line_url: str, path: str
) -> None:
    """The line's leading /v1 is dropped only where the base already ends in /v1, or is Azure's."""
    assert join_line_url(base_url, line_url) == (path, {})


def test_a_line_urls_query_comes_back_as_parameters() -> None:
    """Azure's api-version in a line's url becomes a query parameter, not part of the path."""
    joined = join_line_url("https://n.openai.azure.com/openai/v1", "/v1/embeddings?api-version=x")
    assert joined == ("embeddings", {"api-version": "x"})


class StoppingExecutor(BodyExecutor):
    """Stops on its own after ``answered`` lines (as a batch job cancelled from elsewhere)."""

    def __init__(self, answered: int) -> None:
        super().__init__(capacity=1)
        self.answered = answered

    async def execute(self, line: JobLine) -> LineResult | None:
        """Answer the first lines, then stop."""
        if len(self.executed) >= self.answered:
            self.stopped = True
        return await super().execute(line)


async def test_lines_an_executor_gives_back_unrun_make_the_job_exit_as_interrupted(
    tmp_path: Path,
) -> None:
    """No signal, but lines left without a result: exit 130, and a rerun finishes them."""
    options = job(tmp_path, [{"n": i} for i in range(6)])
    status = await JobRunner(options, executor=StoppingExecutor(2), show_progress=False).run()
    assert status == EXIT_INTERRUPTED
    assert sorted(record["index"] for record in records(options)) == [0, 1]
    status = await JobRunner(options, executor=BodyExecutor(), show_progress=False).run()
    assert status == EXIT_OK
    assert sorted(record["index"] for record in records(options)) == list(range(6))
