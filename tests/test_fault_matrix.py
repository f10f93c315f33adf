"""The fault matrix: 2,000 requests through each client, against a faulty server, end once each.

Per attempt the simulator answers 5% 500s, 2% 503s, drops 1% of connections, cuts 1% of
streams halfway and delays 1% by a latency spike twice the client's per-attempt timeout. Each
logical request names itself in the body's ``user`` field, so the server's ledger
(``answered_by_user``) ties every attempt to its request. Each test asserts that every request
succeeded with an answer the server really gave to that request, that the server answered each
at least once, that every fault kind the client can meet was met (so no test passes
vacuously), and, for ``throttle run``, exactly one result line per input line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

import throttle
from tests.polling import wait_until
from throttle import RetryPolicy, StreamTruncatedError, Throttle
from throttle.online_executor import OnlineExecutor
from throttle.run_options import RunOptions
from throttle.runner import EXIT_OK, JobRunner
from throttle.testing import Faults, ModelLimits, SimulatedAPI, SimulatorConfig, SimulatorStats
from throttle.testing.sim_bodies import embeddings

pytestmark = pytest.mark.slow

REQUESTS = 2_000
TIMEOUT = 0.5  # seconds one attempt may take, client side
FAULTS = Faults(
    server_error=0.05,
    overloaded=0.02,
    drop=0.01,
    truncate=0.01,
    spike=0.01,
    spike_seconds=2 * TIMEOUT,
    seed=12,
)
# One attempt in ten meets a fault, so a request exhausts 8 attempts with probability 1e-8:
# the budget never runs out by chance here, and what is tested is that nothing is lost or
# doubled. Short backoffs keep the file fast.
RETRY = RetryPolicy(max_attempts=8, initial_backoff=0.02, max_backoff=0.2)
# Client and server share one event loop on a shared machine: a modest number in flight keeps
# an ordinary attempt far below the per-attempt timeout, so only spikes time out.
IN_FLIGHT = 64
CHAT_MODEL, EMBEDDING_MODEL, DIMENSIONS = "gpt-4o-mini", "text-embedding-3-small", 8
NOT_STREAMED = frozenset({"server_error", "overloaded", "drop", "spike"})


def simulator() -> SimulatedAPI:
    """A fast simulator with the fault matrix and limits far above what the tests send."""
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=100_000_000, tpm=10_000_000_000),
        latency=0.005,
        faults=FAULTS,
    )
    return SimulatedAPI(config)


def user(i: int) -> str:
    """The marker naming logical request ``i`` in its body, kept across its retries."""
    return f"request-{i}"


def chat_body(i: int) -> dict[str, Any]:
    """A small chat request, marked as request ``i``."""
    return {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": f"say something about {i}"}],
        "max_tokens": 8,
        "user": user(i),
    }


def embedding_body(i: int) -> dict[str, Any]:
    """A small embeddings request, marked as request ``i``."""
    return {
        "model": EMBEDDING_MODEL,
        "input": f"row {i}",
        "dimensions": DIMENSIONS,
        "encoding_format": "float",
        "user": user(i),
    }


def expected_vector(i: int) -> list[float]:
    """The vector the simulator computes for request ``i``'s input (it hashes the input)."""
    answer = embeddings(EMBEDDING_MODEL, [f"row {i}"], 0, DIMENSIONS)
    vector: list[float] = answer["data"][0]["embedding"]
    return vector


def answered_by_server(stats: SimulatorStats, i: int, completion_id: str) -> bool:
    """Whether ``completion_id`` names an answer the server sent, complete, to request ``i``."""
    answers = stats.answered_by_user.get(user(i), [])
    return completion_id.removeprefix("chatcmpl-") in answers


def failures(outcomes: Sequence[object]) -> list[str]:
    """The requests that raised instead of answering, described, for an assertion message."""
    return [f"{i}: {o!r}" for i, o in enumerate(outcomes) if isinstance(o, BaseException)]


async def assert_served_and_faulted(stats: SimulatorStats, kinds: Collection[str]) -> None:
    """The server answered every request, and met it with every fault kind in ``kinds``.

    A spiked answer is counted abandoned when the server next looks (every 20 ms) after its
    client left: a spike among the job's last requests may not be counted yet when the job
    ends, so the server is given the spike's length to see every client gone.
    """
    with contextlib.suppress(TimeoutError):  # then the assertion below says what is missing
        await wait_until(lambda: stats.abandoned >= stats.injected["spike"], FAULTS.spike_seconds)
    assert set(stats.answered_by_user) == {user(i) for i in range(REQUESTS)}
    never = [kind for kind in kinds if stats.injected[kind] == 0]
    assert never == [], f"never injected: {never}; injected {dict(stats.injected)}"
    # Every fault cost its request one more attempt, and none was its request's last.
    assert stats.received >= REQUESTS + sum(stats.injected.values())
    # Each spike outlasted the client's timeout: its answer was ready after its client left.
    assert stats.abandoned >= stats.injected["spike"]


async def test_native_client_ends_every_request_once_through_the_fault_matrix() -> None:
    """Throttle.post: 2,000 chat and embeddings requests all return their own answer."""
    async with (
        simulator() as sim,
        Throttle(
            sim.base_url, "sk-matrix", timeout=TIMEOUT, retry=RETRY, max_in_flight=IN_FLIGHT
        ) as client,
    ):

        async def one(i: int) -> Any:
            if i % 2:
                return await client.post("embeddings", embedding_body(i))
            return await client.post("chat/completions", chat_body(i))

        outcomes = await asyncio.gather(*(one(i) for i in range(REQUESTS)), return_exceptions=True)
    assert failures(outcomes) == []
    answers = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    for i, answer in enumerate(answers):
        if i % 2:
            assert answer["data"][0]["embedding"] == expected_vector(i)
        else:
            assert answered_by_server(sim.stats, i, answer["id"])
    # Throttle.post sends no streams: truncation cannot reach it.
    await assert_served_and_faulted(sim.stats, NOT_STREAMED)


async def test_openai_sdk_adapter_ends_every_request_once_through_the_fault_matrix() -> None:
    """wrap_openai: 2,000 chat, streamed chat and embeddings calls all return their own answer.

    A stream cut after its first chunk raises StreamTruncatedError to the reader (by design:
    part of it was already handed on); the caller starts that stream again. Every truncation
    the server made must surface so, exactly once, and never pass as a whole answer.
    """
    truncated = 0
    async with (
        simulator() as sim,
        Throttle(timeout=TIMEOUT, retry=RETRY, max_in_flight=IN_FLIGHT) as t,
        throttle.wrap_openai(
            openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-matrix"), t
        ) as client,
    ):

        async def streamed(i: int) -> str:
            nonlocal truncated
            for _ in range(3):
                stream = await client.chat.completions.create(
                    **chat_body(i), stream=True, stream_options={"include_usage": True}
                )
                try:
                    chunks = [chunk async for chunk in stream]
                except StreamTruncatedError:
                    truncated += 1
                    continue
                assert chunks[-1].usage is not None
                completion_id: str = chunks[0].id
                return completion_id
            raise AssertionError(f"stream {i} was cut three times")

        async def one(i: int) -> object:
            if i % 4 == 1:
                return await client.embeddings.create(**embedding_body(i))
            if i % 4 == 3:
                return await client.chat.completions.create(**chat_body(i))
            return await streamed(i)

        outcomes = await asyncio.gather(*(one(i) for i in range(REQUESTS)), return_exceptions=True)
    assert failures(outcomes) == []
    for i, answer in enumerate(outcomes):
        if i % 4 == 1:
            assert isinstance(answer, CreateEmbeddingResponse)
            assert answer.data[0].embedding == expected_vector(i)
        else:  # a whole completion, or a whole stream's id
            completion_id = answer.id if isinstance(answer, ChatCompletion) else answer
            assert isinstance(completion_id, str)
            assert answered_by_server(sim.stats, i, completion_id)
    assert truncated == sim.stats.injected["truncate"]
    await assert_served_and_faulted(sim.stats, {*NOT_STREAMED, "truncate"})


def write_job(path: Path) -> None:
    """Write a Batch API file of ``REQUESTS`` lines, chat and embeddings alternating."""
    with path.open("w") as handle:
        for i in range(REQUESTS):
            url, body = (
                ("/v1/embeddings", embedding_body(i))
                if i % 2
                else ("/v1/chat/completions", chat_body(i))
            )
            line = {"custom_id": user(i), "method": "POST", "url": url, "body": body}
            handle.write(json.dumps(line) + "\n")


async def test_throttle_run_writes_every_line_once_through_the_fault_matrix(
    tmp_path: Path,
) -> None:
    """``throttle run`` (its library entry): one success per input line, no duplicates.

    The job's Throttle gets the per-attempt timeout (the command line has no option for it).
    """
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_job(requests)
    async with simulator() as sim:
        options = RunOptions(
            requests, output, sim.base_url, "sk-matrix", max_attempts=RETRY.max_attempts
        )
        job = Throttle(
            sim.base_url, "sk-matrix", timeout=TIMEOUT, retry=RETRY, max_in_flight=IN_FLIGHT
        )
        runner = JobRunner(options, executor=OnlineExecutor(job), show_progress=False)
        status = await runner.run()
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["index"] for record in records) == list(range(REQUESTS))
    assert [record for record in records if "error" in record] == []
    assert status == EXIT_OK
    for record in records:
        i, answer = record["index"], record["response"]
        assert record["custom_id"] == user(i)
        if i % 2:
            assert answer["data"][0]["embedding"] == expected_vector(i)
        else:
            assert answered_by_server(sim.stats, i, answer["id"])
    # throttle run sends no streams: truncation cannot reach it.
    await assert_served_and_faulted(sim.stats, NOT_STREAMED)
