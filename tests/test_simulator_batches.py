"""The simulated Files and Batch APIs, driven by the real openai SDK: real shapes, real rules."""

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import openai
import pytest
from openai.types import Batch, FileObject

from throttle import ConfigurationError
from throttle.testing import (
    BatchSettings,
    ManualClock,
    ModelLimits,
    SimulatedAPI,
    SimulatorConfig,
)
from throttle.testing.sim_batch_timeline import BatchTimeline

CHAT: Final = "/v1/chat/completions"
# One simulated second per clock second, so a test moves batches on in plain seconds:
# 10 s validating, one line per second, 5 s finalizing (and cancelling).
SLOW = BatchSettings(
    time_scale=1.0, validating_seconds=10, lines_per_second=1, finalizing_seconds=5
)


def request(custom_id: str, model: str = "gpt-4o-mini", url: str = CHAT, **body: Any) -> str:
    """One JSONL line of a batch file (a chat request unless told otherwise)."""
    if url == CHAT:
        body.setdefault("messages", [{"role": "user", "content": f"say {custom_id}"}])
        body.setdefault("max_tokens", 5)
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": model, **body}}
    )


def chat_lines(count: int) -> list[str]:
    """``count`` chat requests, custom_ids ``r0``, ``r1``, ..."""
    return [request(f"r{i}") for i in range(count)]


def jsonl(text: str) -> list[dict[str, Any]]:
    """The records of a downloaded JSONL file."""
    return [json.loads(line) for line in text.splitlines()]


@asynccontextmanager
async def served(
    settings: BatchSettings = SLOW, clock: ManualClock | None = None, **config: Any
) -> AsyncIterator[tuple[SimulatedAPI, openai.AsyncOpenAI]]:
    """A simulator with these batch settings, and an SDK client (no SDK retries) aimed at it."""
    options: dict[str, Any] = {"latency": 0, "batch": settings, **config}
    tick = clock.now if clock is not None else ManualClock().now
    async with (
        SimulatedAPI(SimulatorConfig(**options), batch_clock=tick) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-batch", max_retries=0) as client,
    ):
        yield sim, client


async def upload(client: openai.AsyncOpenAI, lines: Sequence[str]) -> FileObject:
    """Upload ``lines`` as a batch input file."""
    content = "\n".join(lines).encode()
    return await client.files.create(file=("input.jsonl", content), purpose="batch")


async def submit(client: openai.AsyncOpenAI, lines: Sequence[str], url: str = CHAT) -> Batch:
    """Upload ``lines`` and create a batch of them."""
    uploaded = await upload(client, lines)
    return await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=url,  # type: ignore[arg-type]  # one of the SDK's endpoint literals
        completion_window="24h",
    )


async def test_sdk_uploads_reads_lists_and_deletes_a_batch_file() -> None:
    """files.create/retrieve/content/list/delete parse into the SDK's typed models."""
    lines = chat_lines(3)
    async with served() as (_, client):
        uploaded = await upload(client, lines)
        again = await client.files.retrieve(uploaded.id)
        content = await client.files.content(uploaded.id)
        listed = [f.id async for f in client.files.list(purpose="batch")]
        deleted = await client.files.delete(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(uploaded.id)
    assert uploaded.id.startswith("file-")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "batch", "processed")
    assert (uploaded.filename, uploaded.bytes) == ("input.jsonl", len(content.content))
    assert again == uploaded
    assert content.text.splitlines() == lines
    assert listed == [uploaded.id]
    assert (deleted.id, deleted.deleted, deleted.object) == (uploaded.id, True, "file")


async def test_sdk_creates_retrieves_and_pages_through_batches() -> None:
    """batches.create/retrieve/list parse into typed Batch objects; list pages by `after`."""
    async with served() as (_, client):
        uploaded = await upload(client, chat_lines(2))
        created = [
            await client.batches.create(
                input_file_id=uploaded.id,
                endpoint=CHAT,
                completion_window="24h",
                metadata={"job": f"j{n}"},
            )
            for n in range(3)
        ]
        first_page = await client.batches.list(limit=2)
        every = [b.id async for b in client.batches.list(limit=2)]
        again = await client.batches.retrieve(created[0].id)
    batch = created[0]
    assert batch.id.startswith("batch_")
    assert (batch.object, batch.status, batch.endpoint) == ("batch", "validating", CHAT)
    assert (batch.input_file_id, batch.completion_window) == (uploaded.id, "24h")
    assert batch.metadata == {"job": "j0"}
    assert batch.model == "gpt-4o-mini"
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.output_file_id is None
    assert again.id == batch.id
    assert [b.id for b in first_page.data] == [created[2].id, created[1].id]
    assert first_page.has_more
    assert every == [b.id for b in reversed(created)]


async def test_status_advances_with_simulated_time() -> None:
    """validating, in_progress (counts rising), finalizing, completed, with their timestamps."""
    clock = ManualClock()
    async with served(clock=clock) as (_, client):
        batch = await submit(client, chat_lines(4))
        seen = [batch]
        for seconds in (9, 2, 2, 3, 2, 1):  # validating 10 s, 4 lines at 1/s, finalizing 5 s
            await clock.advance(seconds)
            seen.append(await client.batches.retrieve(batch.id))
    statuses = [b.status for b in seen]
    assert statuses == [
        "validating",
        "validating",
        "in_progress",
        "in_progress",
        "finalizing",
        "finalizing",
        "completed",
    ]
    counts = [
        (b.request_counts.completed, b.request_counts.total) for b in seen if b.request_counts
    ]
    assert counts == [(0, 0), (0, 0), (1, 4), (3, 4), (4, 4), (4, 4), (4, 4)]
    done = seen[-1]
    assert done.in_progress_at == done.created_at + 10
    assert done.finalizing_at == done.created_at + 14
    assert done.completed_at == done.created_at + 19
    assert done.output_file_id is not None
    assert done.error_file_id is None
    assert done.usage is not None
    assert done.usage.output_tokens == 4 * 5


async def test_default_speed_finishes_a_batch_in_well_under_a_second() -> None:
    """At the default 1,000x time a 1,000-line batch completes within a second of wall time."""
    config = SimulatorConfig(latency=0)
    async with (
        SimulatedAPI(config) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-batch") as client,
    ):
        batch = await submit(client, chat_lines(1000))
        for _ in range(100):
            if batch.status == "completed":
                break
            await asyncio.sleep(0.02)
            batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.completed_at is not None
    assert batch.completed_at - batch.created_at >= 60 + 20 + 60  # simulated seconds


async def test_output_is_unordered_and_joins_one_line_per_custom_id() -> None:
    """The output file is shuffled, and every input custom_id appears in it exactly once."""
    clock = ManualClock()
    async with served(BatchSettings(time_scale=1.0), clock) as (_, client):
        batch = await submit(client, chat_lines(200))
        await clock.advance(3600)
        done = await client.batches.retrieve(batch.id)
        assert done.output_file_id is not None
        output = jsonl((await client.files.content(done.output_file_id)).text)
    order = [record["custom_id"] for record in output]
    assert sorted(order) == sorted(f"r{i}" for i in range(200))
    assert order != [f"r{i}" for i in range(200)]
    assert len({record["id"] for record in output}) == 200
    record = output[0]
    assert record["id"].startswith("batch_req_")
    assert record["error"] is None
    assert record["response"]["status_code"] == 200
    assert record["response"]["request_id"].startswith("req_")
    assert record["response"]["body"]["object"] == "chat.completion"


async def test_batch_answer_equals_the_online_answer() -> None:
    """An embeddings line's vector is the one the online endpoint answers for the same input."""
    clock = ManualClock()
    body = {"model": "text-embedding-3-small", "input": ["alpha", "beta"], "dimensions": 4}
    line = json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": body})
    async with served(SLOW, clock) as (_, client):
        batch = await submit(client, [line], url="/v1/embeddings")
        await clock.advance(60)
        done = await client.batches.retrieve(batch.id)
        assert done.output_file_id is not None
        output = jsonl((await client.files.content(done.output_file_id)).text)
        online = await client.embeddings.create(
            model="text-embedding-3-small", input=["alpha", "beta"], dimensions=4
        )
    answer = output[0]["response"]["body"]
    assert [item["embedding"] for item in answer["data"]] == [
        item.embedding for item in online.data
    ]
    assert answer["usage"]["prompt_tokens"] == online.usage.prompt_tokens


async def test_enqueued_token_limit_fails_the_batch_that_would_exceed_it() -> None:
    """Two batches over the model's limit: the second fails token_limit_exceeded at validation.

    Once the first finishes, the same file fits again.
    """
    clock = ManualClock()
    lines = chat_lines(10)  # 10 x (2 prompt + 4 framing + 5 max_tokens) = 110 tokens
    settings = BatchSettings(
        time_scale=1.0, validating_seconds=10, lines_per_second=1, enqueued_tokens=150
    )
    async with served(settings, clock) as (_, client):
        first = await submit(client, lines)
        second = await submit(client, lines)
        await clock.advance(10)
        first, second = [await client.batches.retrieve(b.id) for b in (first, second)]
        await clock.advance(3600)
        third = await submit(client, lines)
        await clock.advance(10)
        third = await client.batches.retrieve(third.id)
    assert (first.status, second.status, third.status) == ("in_progress", "failed", "in_progress")
    assert second.failed_at == second.created_at + 10
    assert second.errors is not None
    assert second.errors.object == "list"
    assert second.errors.data is not None
    error = second.errors.data[0]
    assert error.code == "token_limit_exceeded"
    assert error.message is not None
    assert error.message.startswith("Enqueued token limit reached for gpt-4o-mini in organization")
    assert "Limit: 150 enqueued tokens. Please try again once some in_progress batches" in (
        error.message
    )


async def test_expired_lines_come_back_with_batch_expired_and_the_batch_expires() -> None:
    """With an expired share, some lines land in the error file as batch_expired."""
    clock = ManualClock()
    settings = BatchSettings(time_scale=1.0, expired_share=0.3, seed=7)
    async with served(settings, clock) as (_, client):
        batch = await submit(client, chat_lines(100))
        await clock.advance(3600)
        done = await client.batches.retrieve(batch.id)
        assert done.error_file_id is not None
        assert done.output_file_id is not None
        errors = jsonl((await client.files.content(done.error_file_id)).text)
        output = jsonl((await client.files.content(done.output_file_id)).text)
    assert done.status == "expired"
    assert done.expired_at is not None
    assert done.completed_at is None
    assert 15 <= len(errors) <= 45
    assert all(e["response"] is None for e in errors)
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert errors[0]["error"]["message"] == (
        "This request could not be executed before the completion window expired."
    )
    assert done.request_counts is not None
    counts = done.request_counts
    assert (counts.completed, counts.failed) == (len(output), len(errors))
    assert {r["custom_id"] for r in output + errors} == {f"r{i}" for i in range(100)}


async def test_lines_not_reached_within_the_window_expire() -> None:
    """A batch too slow for its 24 h window answers what it reached; the rest expire."""
    clock = ManualClock()
    settings = BatchSettings(time_scale=1.0, validating_seconds=0, lines_per_second=2 / 86_400)
    async with served(settings, clock) as (_, client):
        batch = await submit(client, chat_lines(5))
        await clock.advance(2 * 86_400)
        done = await client.batches.retrieve(batch.id)
    assert done.status == "expired"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)


async def test_failed_lines_come_back_as_500_responses_in_the_error_file() -> None:
    """A failed share answers some lines 500 server_error, in the error file, response set."""
    clock = ManualClock()
    settings = BatchSettings(time_scale=1.0, failed_share=0.5, seed=1)
    async with served(settings, clock) as (_, client):
        batch = await submit(client, [*chat_lines(40), request("bad", messages=None)])
        await clock.advance(3600)
        done = await client.batches.retrieve(batch.id)
        assert done.error_file_id is not None
        errors = jsonl((await client.files.content(done.error_file_id)).text)
    assert done.status == "completed"
    by_status = {e["response"]["status_code"] for e in errors if e["custom_id"] != "bad"}
    assert by_status == {500}
    assert all(e["error"] is None for e in errors)
    assert errors[0]["response"]["body"]["error"]["type"] in (
        "server_error",
        "invalid_request_error",
    )
    refused = next(e for e in errors if e["custom_id"] == "bad")
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "messages"
    assert done.request_counts is not None
    assert done.request_counts.failed == len(errors)


@pytest.mark.parametrize(
    ("lines", "code", "param"),
    [
        ([request("a"), "{not json"], "invalid_json_line", None),
        ([json.dumps({"custom_id": "a", "method": "POST", "url": CHAT})], None, "body"),
        ([request("a"), request("b", model="gpt-4o")], "mismatched_model", "body.model"),
        ([request("a"), request("a")], "duplicate_custom_id", "custom_id"),
        (chat_lines(4), "too_many_requests", None),
        ([request("a", url="/v1/embeddings", input=["x"] * 6)], "too_many_inputs", None),
        ([request("a", url="/v1/moderations", input="x")], "invalid_value", "url"),
        ([request("a", content="x" * 2000)], "file_too_large", None),
    ],
    ids=[
        "bad-json",
        "missing-body",
        "two-models",
        "duplicate-id",
        "too-many-lines",
        "too-many-inputs",
        "unserved-url",
        "too-large",
    ],
)
async def test_invalid_file_is_refused_with_a_400_naming_the_problem(
    lines: list[str], code: str | None, param: str | None
) -> None:
    """The upload is refused: a 400 invalid_request_error naming the line and the rule."""
    settings = BatchSettings(max_requests=3, max_embedding_inputs=5, max_file_bytes=1000)
    async with served(settings) as (sim, client):
        with pytest.raises(openai.BadRequestError) as refused:
            await upload(client, lines)
        listed = [f async for f in client.files.list()]
    error = refused.value
    assert error.type == "invalid_request_error"
    assert error.code == (code or "missing_required_parameter")
    assert error.param == param
    assert error.message
    assert listed == []
    assert sim.stats.batch.refused == 1


async def test_cancel_mid_way_keeps_the_answered_lines_and_drops_the_rest() -> None:
    """Cancelled while in progress: cancelling, then cancelled; only answered lines come back."""
    clock = ManualClock()
    async with served(clock=clock) as (_, client):
        batch = await submit(client, chat_lines(10))
        await clock.advance(10 + 4)  # four lines answered
        cancelling = await client.batches.cancel(batch.id)
        await clock.advance(5)
        cancelled = await client.batches.retrieve(batch.id)
        assert cancelled.output_file_id is not None
        output = jsonl((await client.files.content(cancelled.output_file_id)).text)
        with pytest.raises(openai.ConflictError):
            await client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at == cancelling.created_at + 14
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at == cancelled.created_at + 19
    assert cancelled.request_counts is not None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (4, 0)
    assert len(output) == 4
    assert cancelled.error_file_id is None


async def test_batches_do_not_use_the_online_limits() -> None:
    """With the online buckets drained, batches still run, and charge no online request."""
    clock = ManualClock()
    drained = {"start_level": 0.0, "default_limits": ModelLimits(rpm=1, tpm=10)}
    async with served(SLOW, clock, **drained) as (sim, client):
        batch = await submit(client, chat_lines(3))
        await clock.advance(60)
        done = await client.batches.retrieve(batch.id)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    assert done.status == "completed"
    assert sim.stats.received == 1  # the online call, not the batch traffic
    assert sim.stats.charged_tokens == 0
    assert sim.stats.batch.total_requests == 3


async def test_stats_count_files_batches_and_requests_to_each_endpoint() -> None:
    """Uploads, batches and each Files/Batch endpoint's requests are counted."""
    async with served() as (sim, client):
        batch = await submit(client, chat_lines(2))
        await client.batches.retrieve(batch.id)
        await client.batches.retrieve(batch.id)
        await client.batches.list()
    stats = sim.stats.batch
    assert (stats.files_uploaded, stats.lines_uploaded, stats.batches_created) == (1, 2, 1)
    assert stats.requests == {
        "POST /v1/files": 1,
        "POST /v1/batches": 1,
        "GET /v1/batches/{id}": 2,
        "GET /v1/batches": 1,
    }
    assert sim.stats.as_dict()["batch"]["total_requests"] == 5


async def test_another_organization_sees_neither_files_nor_batches() -> None:
    """Files and batches belong to the organization whose key created them."""
    async with served() as (sim, client):
        batch = await submit(client, chat_lines(1))
        async with openai.AsyncOpenAI(
            base_url=sim.base_url, api_key="sk-other", max_retries=0
        ) as other:
            with pytest.raises(openai.NotFoundError):
                await other.batches.retrieve(batch.id)
            with pytest.raises(openai.NotFoundError):
                await other.files.retrieve(batch.input_file_id)
            assert [b async for b in other.batches.list()] == []


async def test_batch_for_another_endpoint_than_its_file_fails_validation() -> None:
    """A chat file submitted as an embeddings batch turns failed with invalid_url."""
    clock = ManualClock()
    async with served(clock=clock) as (_, client):
        uploaded = await upload(client, chat_lines(1))
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        await clock.advance(10)
        failed = await client.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            await client.batches.create(
                input_file_id="file-none", endpoint=CHAT, completion_window="24h"
            )
    assert failed.status == "failed"
    assert failed.errors is not None
    assert failed.errors.data is not None
    assert (failed.errors.data[0].code, failed.errors.data[0].line) == ("invalid_url", 1)


async def test_the_same_seed_gives_the_same_output_file() -> None:
    """Order, ids and fates of a batch's lines repeat with the seed."""
    settings = BatchSettings(time_scale=1.0, failed_share=0.2, seed=5)

    async def output_of_one_batch() -> tuple[str, str]:
        clock = ManualClock()
        async with served(settings, clock) as (_, client):
            batch = await submit(client, chat_lines(30))
            await clock.advance(3600)
            done = await client.batches.retrieve(batch.id)
            assert done.output_file_id is not None
            assert done.error_file_id is not None
            output = await client.files.content(done.output_file_id)
            errors = await client.files.content(done.error_file_id)
            return output.text, errors.text

    first, second = await output_of_one_batch(), await output_of_one_batch()
    assert [r["id"] for r in jsonl(first[0])] == [r["id"] for r in jsonl(second[0])]
    assert [r["custom_id"] for r in jsonl(first[1])] == [r["custom_id"] for r in jsonl(second[1])]


def test_timeline_answers_every_question_from_now_alone() -> None:
    """Status and answered lines are pure functions of the moment asked about."""
    timeline = BatchTimeline(
        created_at=0,
        validated_at=10,
        lines=4,
        lines_per_second=1,
        finalizing_seconds=5,
        window_seconds=86_400,
        accepted=True,
    )
    moments = [0, 10, 12.5, 14, 19]
    assert [timeline.status(t) for t in moments] == [
        "validating",
        "in_progress",
        "in_progress",
        "finalizing",
        "completed",
    ]
    assert [timeline.answered(t) for t in moments] == [0, 0, 2, 4, 4]
    assert timeline.status(12.5) == "in_progress"  # asking again changes nothing


@pytest.mark.parametrize(
    "settings",
    [
        {"expired_share": 0.7, "failed_share": 0.5},
        {"lines_per_second": 0},
        {"time_scale": -1},
        {"enqueued_tokens": 0},
        {"max_requests": 0},
    ],
)
def test_batch_settings_refuse_impossible_values(settings: dict[str, Any]) -> None:
    """Shares over 1, non-positive speeds and limits are configuration errors."""
    with pytest.raises(ConfigurationError):
        BatchSettings(**settings)


def test_simulate_takes_batch_options_and_prints_them() -> None:
    """`throttle simulate --batch-...` prints its batch settings line at start."""
    command = [sys.executable, "-m", "throttle.cli", "simulate", "--port", "0"]
    command += ["--batch-time-scale", "500", "--batch-lines-per-second", "20"]
    command += ["--batch-enqueued-tokens", "90000", "--batch-expired-share", "0.01"]
    command += ["--batch-failed-share", "0.02"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(3)]
            process.terminate()
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
    assert lines[2].startswith("batches: 500x time, 20 lines/s")
    assert "enqueued limit 90,000 tokens, 1% expired, 2% failed" in lines[2]


async def test_an_unserved_method_on_a_batch_path_answers_404_invalid_url() -> None:
    """PUT /v1/files is no endpoint: the real 404, counted with the online requests."""
    async with served() as (sim, client):
        with pytest.raises(openai.NotFoundError) as missing:
            await client.put("/files", cast_to=object)
    assert missing.value.message.endswith("Invalid URL (PUT /v1/files)")
    assert sim.stats.batch.total_requests == 0
