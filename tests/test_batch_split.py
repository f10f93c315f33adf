"""Tests for cutting a job's lines into Batch API input files."""

import itertools
import json
import random

import pytest

from throttle.batch_split import (
    FileLimits,
    FileSplitter,
    SplitLine,
    custom_id_for,
    embedding_inputs,
    encode_line,
    index_of,
    line_problem,
    split_lines,
)

EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"


def line(index: int, *, size: int = 10, inputs: int = 1, tokens: int = 5) -> SplitLine:
    """A line of ``size`` bytes."""
    return SplitLine(index, b"x" * (size - 1) + b"\n", inputs, tokens)


def test_custom_ids_name_the_line_and_map_back() -> None:
    """``t-<index>`` is unique per line and maps back; other ids map to nothing."""
    assert custom_id_for(42) == "t-42"
    assert [index_of(custom_id_for(i)) for i in (0, 7, 123456)] == [0, 7, 123456]
    for other in ("42", "t-", "t-4x", "t--1", "u-1", None, 42, "t-٣"):
        assert index_of(other) is None


def test_encoded_line_is_a_batch_request_with_the_executors_custom_id() -> None:
    """The file line carries ``t-<index>``, POST, the endpoint and the body, unchanged."""
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo"}]}
    data = encode_line(3, CHAT, body)
    assert data.endswith(b"\n")
    assert json.loads(data) == {"custom_id": "t-3", "method": "POST", "url": CHAT, "body": body}


def test_embedding_inputs_count_each_text_of_a_list() -> None:
    """A list of texts (or of token lists) counts each; one text or one token list counts 1."""
    assert embedding_inputs(EMBEDDINGS, {"input": "a"}) == 1
    assert embedding_inputs(EMBEDDINGS, {"input": ["a", "b", "c"]}) == 3
    assert embedding_inputs(EMBEDDINGS, {"input": [1, 2, 3]}) == 1
    assert embedding_inputs(EMBEDDINGS, {"input": [[1, 2], [3]]}) == 2
    assert embedding_inputs(CHAT, {"messages": []}) == 0


def test_a_file_is_cut_at_max_requests() -> None:
    """Five lines at three per file make a full file and a partial one."""
    files = split_lines([("m", CHAT, line(i)) for i in range(5)], FileLimits(max_requests=3))
    assert [plan.indexes for plan in files] == [[0, 1, 2], [3, 4]]


def test_a_file_is_cut_at_max_embedding_inputs_across_the_file() -> None:
    """Inputs add up across a file's lines; the line that would go over starts the next."""
    lines = [("m", EMBEDDINGS, line(i, inputs=n)) for i, n in enumerate([4, 4, 3, 1, 5])]
    files = split_lines(lines, FileLimits(max_embedding_inputs=8))
    assert [plan.indexes for plan in files] == [[0, 1], [2, 3], [4]]
    assert [plan.inputs for plan in files] == [8, 4, 5]


def test_a_file_is_cut_at_max_bytes() -> None:
    """A file never holds more bytes than allowed."""
    lines = [("m", CHAT, line(i, size=40)) for i in range(5)]
    files = split_lines(lines, FileLimits(max_bytes=100))
    assert [plan.indexes for plan in files] == [[0, 1], [2, 3], [4]]
    assert all(len(plan.content()) <= 100 for plan in files)


def test_a_file_is_cut_at_the_models_token_cap() -> None:
    """With a known enqueued limit, a model's files stay under it; other models do not care."""
    lines = [("a", CHAT, line(i, tokens=40)) for i in range(4)]
    lines += [("b", CHAT, line(i, tokens=40)) for i in range(4, 6)]
    files = split_lines(lines, FileLimits(), {"a": 100})
    assert [plan.indexes for plan in files] == [[0, 1], [2, 3], [4, 5]]


def test_lines_are_grouped_by_model_and_endpoint() -> None:
    """Each file holds one model and one endpoint."""
    lines = [
        ("a", CHAT, line(0)),
        ("b", CHAT, line(1)),
        ("a", EMBEDDINGS, line(2)),
        ("a", CHAT, line(3)),
    ]
    files = split_lines(lines, FileLimits())
    assert {(p.model, p.endpoint): p.indexes for p in files} == {
        ("a", CHAT): [0, 3],
        ("b", CHAT): [1],
        ("a", EMBEDDINGS): [2],
    }


def test_line_too_large_for_any_file_is_named() -> None:
    """A line over the byte or input limit on its own can never be batched."""
    limits = FileLimits(max_embedding_inputs=10, max_bytes=50)
    assert line_problem(line(0, size=50), limits) is None
    assert "51 bytes" in (line_problem(line(0, size=51), limits) or "")
    assert "11 embedding inputs" in (line_problem(line(0, inputs=11), limits) or "")


def test_splitter_reports_pending_lines_and_flushes_partial_files() -> None:
    """Lines wait in open files until flushed; a cut returns the full file."""
    splitter = FileSplitter(FileLimits(max_requests=2))
    assert splitter.add("m", CHAT, line(0)) is None
    assert splitter.add("m", CHAT, line(1)) is None
    cut = splitter.add("m", CHAT, line(2))
    assert cut is not None
    assert cut.indexes == [0, 1]
    assert splitter.pending == 1
    assert [plan.indexes for plan in splitter.flush()] == [[2]]
    assert splitter.pending == 0


@pytest.mark.parametrize("seed", range(20))
def test_random_lines_each_land_in_exactly_one_file_within_the_limits(seed: int) -> None:
    """Property: every line once, order kept per group, limits held, no file cut early."""
    draw = random.Random(seed)  # noqa: S311 - seeded test data, not secrets
    limits = FileLimits(
        max_requests=draw.randint(1, 8),
        max_embedding_inputs=draw.randint(5, 20),
        max_bytes=draw.randint(60, 200),
    )
    caps = {"a": draw.randint(30, 120)}
    lines = []
    for index in range(draw.randint(0, 120)):
        model, endpoint = draw.choice([("a", EMBEDDINGS), ("b", EMBEDDINGS), ("a", CHAT)])
        lines.append(
            (
                model,
                endpoint,
                line(
                    index,
                    size=draw.randint(5, 60),
                    inputs=draw.randint(1, 5),
                    tokens=draw.randint(1, 30),
                ),
            )
        )
    files = split_lines(lines, limits, caps)
    by_index = {split.index: split for _, _, split in lines}
    placed = sorted(i for plan in files for i in plan.indexes)
    assert placed == [split.index for _, _, split in lines]
    for plan in files:
        group = [s.index for m, e, s in lines if (m, e) == (plan.model, plan.endpoint)]
        assert plan.indexes == [i for i in group if i in set(plan.indexes)]
        assert len(plan.indexes) <= limits.max_requests
        assert plan.inputs <= limits.max_embedding_inputs
        assert plan.size <= limits.max_bytes
        cap = caps.get(plan.model)
        assert cap is None or plan.tokens <= cap or len(plan.indexes) == 1
    for first, second in itertools.pairwise(files):
        if (first.model, first.endpoint) == (second.model, second.endpoint):
            next_line = by_index[second.indexes[0]]
            assert not first.fits(next_line, limits, caps.get(first.model))
