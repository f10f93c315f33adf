"""Tests for the runner's input and results files."""

import json
from pathlib import Path

import pytest

from throttle.errors import ConfigurationError
from throttle.job_input import (
    InvalidLineError,
    count_lines,
    first_object,
    is_batch_line,
    parse_line,
    read_lines,
)
from throttle.jobfile import IndexSet, ResultsFile


def test_index_set_holds_a_million_indices_in_a_bitmap() -> None:
    """Membership is exact and the count is of distinct indices."""
    done = IndexSet()
    for index in (0, 7, 8, 999_999, 7):
        done.add(index)
    assert done.count == 4
    assert 999_999 in done
    assert 6 not in done
    assert 2_000_000 not in done


def test_blank_lines_are_skipped_and_indices_count_non_blank_lines(tmp_path: Path) -> None:
    """`index` is the 0-based number among non-blank lines."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": 2}\n{"c": 3}')
    assert [(line.index, line.text) for line in read_lines(path)] == [
        (0, '{"a": 1}'),
        (1, '{"b": 2}'),
        (2, '{"c": 3}'),
    ]
    assert count_lines(path) == 3


def test_unreadable_input_is_a_configuration_error(tmp_path: Path) -> None:
    """A missing file names itself in the error."""
    with pytest.raises(ConfigurationError, match=r"nope\.jsonl"):
        list(read_lines(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigurationError, match=r"nope\.jsonl"):
        count_lines(tmp_path / "nope.jsonl")


def test_metadata_is_split_off_and_never_part_of_the_request() -> None:
    """The top-level `metadata` object travels to the result, not to the server."""
    request = parse_line('{"model": "m", "metadata": {"row": 3}}')
    assert request.body == {"model": "m"}
    assert request.metadata == {"row": 3}
    assert (request.custom_id, request.url) == (None, None)


def test_a_batch_api_line_gives_its_body_custom_id_and_url() -> None:
    """The Batch API's line format: the body is sent, the rest travels beside it."""
    line = {
        "custom_id": "r-1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "m", "input": "x", "metadata": {"kept": True}},
        "metadata": {"row": 1},
    }
    request = parse_line(json.dumps(line))
    assert request.body == line["body"]
    assert (request.custom_id, request.url, request.metadata) == (
        "r-1",
        "/v1/embeddings",
        {"row": 1},
    )


BATCH = {"custom_id": "r-1", "method": "POST", "url": "/v1/chat/completions", "body": {}}


def test_a_lines_client_request_id_is_split_off_in_either_format() -> None:
    """`client_request_id` beside a bare body or a Batch API line is the header, not the body."""
    bare = parse_line('{"model": "m", "client_request_id": "mine-1"}')
    batch = parse_line(json.dumps({**BATCH, "client_request_id": "mine-2"}))
    assert (bare.body, bare.client_request_id) == ({"model": "m"}, "mine-1")
    assert (batch.body, batch.client_request_id) == ({}, "mine-2")
    assert parse_line('{"model": "m"}').client_request_id is None


@pytest.mark.parametrize("bad", ["x" * 513, "caf\u00e9", "", 42])
def test_a_client_request_id_that_cannot_be_sent_is_refused(bad: object) -> None:
    """Too long, not ASCII, empty or not a string: invalid_client_request_id, custom_id kept."""
    with pytest.raises(InvalidLineError, match="client_request_id") as caught:
        parse_line(json.dumps({**BATCH, "client_request_id": bad}))
    assert caught.value.kind == "invalid_client_request_id"
    assert caught.value.custom_id == "r-1"


@pytest.mark.parametrize(
    ("changes", "kind", "named"),
    [
        ({"method": "GET"}, "method_not_allowed", "'GET'"),
        ({"body": None}, "invalid_batch_line", "body"),
        ({"body": [1]}, "invalid_batch_line", "body must be a JSON object"),
        ({"url": 5}, "invalid_batch_line", "url must be an endpoint path"),
        ({"url": "https://evil.example/v1/embeddings"}, "invalid_batch_line", "url must be"),
        ({"url": "//evil.example/v1/embeddings"}, "invalid_batch_line", "url must be"),
        ({"custom_id": 7}, "invalid_batch_line", "custom_id must be a non-empty string"),
        ({"model": "m"}, "invalid_batch_line", "not model"),
    ],
)
def test_an_invalid_batch_api_line_is_named_with_its_custom_id(
    changes: dict[str, object], kind: str, named: str
) -> None:
    """A Batch API line with a field missing, of the wrong type, or not POST is refused."""
    line = {key: value for key, value in {**BATCH, **changes}.items() if value is not None}
    with pytest.raises(InvalidLineError, match=named) as caught:
        parse_line(json.dumps(line))
    assert caught.value.kind == kind
    assert caught.value.custom_id == (None if "custom_id" in changes else "r-1")


def test_any_batch_key_makes_a_batch_api_line_that_needs_all_four() -> None:
    """A body with a stray custom_id is a Batch API line missing method, url and body."""
    with pytest.raises(InvalidLineError, match="needs method, url, body too"):
        parse_line('{"custom_id": "r-1", "model": "m", "messages": []}')
    assert is_batch_line({"url": "/v1/embeddings"})
    assert not is_batch_line({"model": "m", "messages": []})


def test_the_first_json_object_gives_the_files_format(tmp_path: Path) -> None:
    """Unreadable lines before it are skipped; a file without an object has none."""
    path = tmp_path / "in.jsonl"
    path.write_text('{broken\n[1]\n{"custom_id": "a"}\n{"model": "m"}\n')
    assert first_object(path) == (2, {"custom_id": "a"})
    path.write_text("[1]\n")
    assert first_object(path) is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [("{not json", "invalid_json"), ("[1, 2]", "not_an_object"), ('"text"', "not_an_object")],
)
def test_bad_lines_are_named(text: str, kind: str) -> None:
    """A line that is not a JSON object raises InvalidLineError with its kind."""
    with pytest.raises(InvalidLineError) as caught:
        parse_line(text)
    assert caught.value.kind == kind


def write_results(path: Path, records: list[dict[str, object]], tail: bytes = b"") -> None:
    """A results file with the given records and an optional torn tail."""
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_resume_reads_done_indices(tmp_path: Path) -> None:
    """Successes and errors are both done unless errors are to be retried."""
    path = tmp_path / "out.jsonl"
    write_results(path, [{"index": 0, "response": {}}, {"index": 2, "error": {}}])
    resumed = ResultsFile.resume(path, retry_failed=False)
    assert (0 in resumed.done, 1 in resumed.done, 2 in resumed.done) == (True, False, True)
    assert (resumed.succeeded, resumed.failed) == (1, 1)


def test_resume_remembers_each_custom_id_at_its_first_index(tmp_path: Path) -> None:
    """Done Batch API lines keep their custom_id, so a later duplicate is still caught."""
    path = tmp_path / "out.jsonl"
    records: list[dict[str, object]] = [
        {"index": 9, "custom_id": "a", "error": {}},
        {"index": 5, "custom_id": "a", "response": {}},
        {"index": 1, "response": {}},
    ]
    write_results(path, records)
    assert ResultsFile.resume(path, retry_failed=False).custom_ids == {"a": 5}


def test_resume_cuts_a_line_torn_by_a_crash(tmp_path: Path) -> None:
    """A last line without its newline is cut off; the earlier lines stay."""
    path = tmp_path / "out.jsonl"
    write_results(path, [{"index": 0, "response": {}}], tail=b'{"index": 1, "resp')
    resumed = ResultsFile.resume(path, retry_failed=False)
    assert resumed.repaired_bytes == len(b'{"index": 1, "resp')
    assert resumed.done.count == 1
    assert path.read_bytes().endswith(b"}\n")


def test_resume_cuts_a_complete_but_corrupt_last_line(tmp_path: Path) -> None:
    """A last line with a newline but half its JSON is cut as well."""
    path = tmp_path / "out.jsonl"
    write_results(path, [{"index": 0, "response": {}}], tail=b'{"index": 1, "re\n')
    assert ResultsFile.resume(path, retry_failed=False).done.count == 1


def test_retry_failed_rewrites_the_file_without_its_errors(tmp_path: Path) -> None:
    """Errors to be retried leave the file, so a retried index never has two lines."""
    path = tmp_path / "out.jsonl"
    write_results(path, [{"index": 0, "response": {}}, {"index": 1, "error": {}}])
    resumed = ResultsFile.resume(path, retry_failed=True)
    assert 1 not in resumed.done
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [0]


def test_a_file_that_is_not_a_results_file_is_refused(tmp_path: Path) -> None:
    """Pointing -o at some other JSONL gives a clear error instead of silently skipping."""
    path = tmp_path / "out.jsonl"
    path.write_text('{"model": "m"}\n')
    with pytest.raises(ConfigurationError, match="not a throttle results file"):
        ResultsFile.resume(path, retry_failed=False)


def test_each_result_is_one_whole_line(tmp_path: Path) -> None:
    """Results are appended as complete JSON lines, unicode intact."""
    results = ResultsFile(tmp_path / "out.jsonl")
    results.write({"index": 0, "response": {"text": "héllo"}})
    results.write({"index": 1, "error": {"type": "X"}})
    results.close()
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1]
    assert "héllo" in lines[0]


def test_a_lone_surrogate_in_a_result_is_written_as_a_replacement_character(
    tmp_path: Path,
) -> None:
    """A result quoting a line that was not UTF-8 still writes a UTF-8 line, U+FFFD in its place."""
    results = ResultsFile(tmp_path / "out.jsonl")
    results.write({"index": 0, "line": "caf\udce9", "error": {"type": "InvalidLineError"}})
    results.write({"index": 1, "response": {"text": "café"}})
    results.close()
    lines = (tmp_path / "out.jsonl").read_bytes().decode("utf-8").splitlines()
    assert json.loads(lines[0])["line"] == "caf\ufffd"
    assert json.loads(lines[1])["response"] == {"text": "café"}


def test_a_line_of_utf8_text_beyond_ascii_is_read_and_parsed(tmp_path: Path) -> None:
    """Non-ASCII UTF-8 is text, not an undecodable byte: the line parses as written."""
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"content": "naïve café ☕"}\n'.encode())
    [line] = read_lines(path)
    assert parse_line(line.text).body == {"content": "naïve café ☕"}


def test_a_line_that_is_not_utf8_is_its_own_error_and_the_lines_around_it_are_read(
    tmp_path: Path,
) -> None:
    """One undecodable byte makes an invalid_utf8 line; the lines before and after still read."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n{"c": 3}\n')
    lines = list(read_lines(path))
    assert [line.index for line in lines] == [0, 1, 2]
    assert count_lines(path) == 3
    assert parse_line(lines[0].text).body == {"a": 1}
    assert parse_line(lines[2].text).body == {"c": 3}
    with pytest.raises(InvalidLineError, match=r"not UTF-8.*0xe9") as caught:
        parse_line(lines[1].text)
    assert caught.value.kind == "invalid_utf8"
    path.write_bytes(b'{"b": "\xff"}\n{"c": 3}\n')
    assert first_object(path) == (1, {"c": 3})


def test_a_lone_carriage_return_stays_inside_its_line_so_indices_never_shift(
    tmp_path: Path,
) -> None:
    r"""Lines end at `\n` only, in reading and counting alike; a `\r\n` ending is dropped."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":\r1}\n{"b": "x\ry"}\r\n \r\n{"c": 3}\r\n\xc2\xa0\n\x0c\n{"d": 4}')
    lines = list(read_lines(path))
    assert [(line.index, line.text) for line in lines] == [
        (0, '{"a":\r1}'),
        (1, '{"b": "x\ry"}'),
        (2, '{"c": 3}'),
        (3, "\xa0"),
        (4, "\x0c"),
        (5, '{"d": 4}'),
    ]
    assert count_lines(path) == len(lines)
    assert parse_line(lines[0].text).body == {"a": 1}


@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "m"}\n{"model": "n"}',
        b"hello\nworld",
        b'{"model": "m"}\n{"index": 1, "resp',
        b'{"index": 0, "response": {}}\n{"model": "m"}',
        b'{"index": 0, "response": {}}\n{"index": 1}\n',
        b'{"index": 0, "response": {}}\n\n{"index": 1, "error": {}}\n',
    ],
)
def test_a_file_that_is_not_a_results_file_is_refused_without_being_modified(
    tmp_path: Path, content: bytes
) -> None:
    """Only a torn last line of a real results file is ever cut; anything else is refused."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=r"out\.jsonl.*not a throttle results file"):
        ResultsFile.resume(path, retry_failed=False)
    assert path.read_bytes() == content


@pytest.mark.parametrize("index", [-1, 2**64, 1.5, "3", True, None])
def test_a_results_file_with_an_impossible_index_is_refused_without_being_modified(
    tmp_path: Path, index: object
) -> None:
    """A negative, huge, fractional, string, bool or null index names its file and line."""
    path = tmp_path / "out.jsonl"
    records: list[dict[str, object]] = [
        {"index": 0, "response": {}},
        {"index": index, "response": {}},
        {"index": 2, "response": {}},
    ]
    write_results(path, records, tail=b'{"index": 3, "resp')
    content = path.read_bytes()
    for retry_failed in (False, True):
        with pytest.raises(ConfigurationError, match=r"out\.jsonl.*line 2\b.*index"):
            ResultsFile.resume(path, retry_failed=retry_failed)
        assert path.read_bytes() == content
