"""Tests for the batch journal: durable records, replay, and what a rerun makes of them."""

import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from throttle.batch_files import Step, tracked_from_journal
from throttle.batch_journal import (
    BatchJournal,
    JournalState,
    from_ranges,
    journal_path_for,
    read_journal,
    to_ranges,
)
from throttle.errors import ConfigurationError

EMBEDDINGS = "/v1/embeddings"


def upload(name: str, lines: list[int], tokens: int = 10) -> dict[str, Any]:
    """An upload intent record."""
    return {
        "type": "upload",
        "name": name,
        "model": "m",
        "endpoint": EMBEDDINGS,
        "lines": to_ranges(lines),
        "tokens": tokens,
    }


def state_of(*records: dict[str, Any]) -> JournalState:
    """The state the records replay to."""
    state = JournalState()
    for record in records:
        state.apply(record)
    return state


def test_journal_lives_beside_the_results_file() -> None:
    """``results.jsonl`` keeps its batches in ``results.jsonl.batches.jsonl``."""
    assert journal_path_for(Path("/x/out.jsonl")) == Path("/x/out.jsonl.batches.jsonl")


@pytest.mark.parametrize("seed", range(10))
def test_ranges_give_back_the_indexes_in_order(seed: int) -> None:
    """Property: any list of indexes survives to_ranges/from_ranges, order and all."""
    draw = random.Random(seed)  # noqa: S311 - seeded test data, not secrets
    indexes = sorted(draw.sample(range(1000), draw.randint(0, 200)))
    if seed % 2:
        draw.shuffle(indexes)
    assert list(from_ranges(to_ranges(indexes))) == indexes
    assert to_ranges(range(5, 50_005)) == [[5, 50_005]]


def test_replay_follows_a_file_from_upload_to_its_ended_batch() -> None:
    """Upload, uploaded, created, ended: the file, its batch and its lines are known."""
    state = state_of(
        {"type": "job", "id": "j1", "api_root": "http://h/v1"},
        upload("f1", [0, 1, 2]),
        {"type": "uploaded", "name": "f1", "file_id": "file-1", "created_at": 5},
        {"type": "created", "file_id": "file-1", "batch_id": "batch_1"},
        {"type": "ended", "batch_id": "batch_1", "status": "completed", "output_file_id": "o"},
        {"type": "limit", "model": "m", "tokens": 99},
    )
    assert (state.job_id, state.api_root, state.limits) == ("j1", "http://h/v1", {"m": 99})
    journal_file = state.files["f1"]
    assert (journal_file.file_id, journal_file.uploaded_at, journal_file.batch_ids) == (
        "file-1",
        5,
        ["batch_1"],
    )
    assert state.batches["batch_1"].status == "completed"
    assert state.line_file == {0: "f1", 1: "f1", 2: "f1"}
    assert state.open_batches() == []
    assert state.file_by_id("file-1") is journal_file


def test_a_line_belongs_to_the_last_file_that_names_it() -> None:
    """A retried line moves to its new file; a dropped file lets go of its lines."""
    state = state_of(upload("f1", [0, 1, 2]), upload("f2", [1]), {"type": "dropped", "name": "f1"})
    assert state.line_file == {1: "f2"}
    assert state.files["f1"].dropped


def test_appended_records_are_on_disk_and_replayed_by_a_new_journal(tmp_path: Path) -> None:
    """Each record is written (and fsynced) at once; reopening replays the same state."""
    path = tmp_path / "out.jsonl.batches.jsonl"
    journal = BatchJournal(path)
    journal.append(upload("f1", [0, 1]))
    journal.append({"type": "uploaded", "name": "f1", "file_id": "file-1"})
    assert len(path.read_text().splitlines()) == 2  # before close
    journal.close()
    again = BatchJournal(path)
    assert again.state.files["f1"].file_id == "file-1"
    assert again.state.line_file == {0: "f1", 1: "f1"}


def test_a_record_torn_by_a_crash_is_cut_off_before_the_next_append(tmp_path: Path) -> None:
    """Replay ignores the torn tail; the next record starts on a line of its own."""
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(upload("f1", [0])) + "\n" + '{"type": "uploaded", "na')
    journal = BatchJournal(path)
    assert journal.state.files["f1"].file_id is None
    journal.append({"type": "uploaded", "name": "f1", "file_id": "file-1"})
    journal.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert read_journal(path).files["f1"].file_id == "file-1"


def test_a_journal_that_does_not_add_up_is_refused(tmp_path: Path) -> None:
    """A batch for a file the journal never uploaded names the journal and what to do."""
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"type": "created", "file_id": "nope", "batch_id": "b"}) + "\n")
    with pytest.raises(ConfigurationError, match="move it away"):
        read_journal(path)


def test_a_file_name_is_never_journaled_twice() -> None:
    """A second upload under a journaled name is refused: the name finds one file only."""
    state = state_of(upload("f1", [0, 1]))
    with pytest.raises(ValueError, match="journaled already"):
        state.apply(upload("f1", [2, 3]))
    assert state.files["f1"].indexes == [0, 1]
    assert state.line_file == {0: "f1", 1: "f1"}


def test_a_million_line_journal_replays_into_runs_not_lines(tmp_path: Path) -> None:
    """20 files of 50,000 lines each: the state holds kilobytes, not 100 bytes a line."""
    path = tmp_path / "j.jsonl"
    records = [
        upload(f"f{number}", [], 1) | {"lines": [[start, start + 50_000]]}
        for number, start in enumerate(range(0, 1_000_000, 50_000))
    ]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    tracemalloc.start()
    state = read_journal(path)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size < 1_000_000
    assert (len(state.line_file), state.line_file[654_321]) == (1_000_000, "f13")
    assert state.files["f13"].indexes[4_321] == 654_321


def test_a_missing_journal_is_an_empty_one(tmp_path: Path) -> None:
    """A job that never ran in batch mode has no files and no batches."""
    state = read_journal(tmp_path / "none.jsonl")
    assert (state.files, state.batches, state.job_id) == ({}, {}, None)


def test_rerun_looks_up_an_upload_that_has_only_its_intent() -> None:
    """Killed during the upload: the file is found by name before anything is uploaded."""
    state = state_of(upload("f1", [0]))
    tracked = tracked_from_journal(state, state.files["f1"])
    assert tracked is not None
    assert (tracked.step, tracked.intent_unresolved, tracked.maybe_created) == (
        Step.PLANNED,
        True,
        False,
    )


def test_rerun_looks_up_a_batch_before_creating_one_for_an_uploaded_file() -> None:
    """Killed after the upload: its batch may exist; it is looked up, the file kept."""
    state = state_of(upload("f1", [0]), {"type": "uploaded", "name": "f1", "file_id": "file-1"})
    tracked = tracked_from_journal(state, state.files["f1"])
    assert tracked is not None
    assert (tracked.step, tracked.file_id, tracked.maybe_created) == (
        Step.UPLOADED,
        "file-1",
        True,
    )


def test_rerun_polls_an_open_batch_and_reads_an_ended_one() -> None:
    """A created batch is polled (validating until seen); an ended one is read again."""
    records = [
        upload("f1", [0]),
        {"type": "uploaded", "name": "f1", "file_id": "file-1"},
        {"type": "created", "file_id": "file-1", "batch_id": "b1"},
    ]
    state = state_of(*records)
    running = tracked_from_journal(state, state.files["f1"])
    assert running is not None
    assert (running.step, running.batch_id) == (Step.VALIDATING, "b1")
    state.apply({"type": "ended", "batch_id": "b1", "status": "expired", "error_file_id": "e1"})
    ended = tracked_from_journal(state, state.files["f1"])
    assert ended is not None
    assert (ended.step, ended.error_file_id, ended.from_earlier_run) == (Step.ENDED, "e1", True)


def test_rerun_creates_again_a_batch_refused_over_the_token_limit() -> None:
    """Refused over the enqueued limit: the same file goes into a new batch, found or made."""
    state = state_of(
        upload("f1", [0]),
        {"type": "uploaded", "name": "f1", "file_id": "file-1"},
        {"type": "created", "file_id": "file-1", "batch_id": "b1"},
        {"type": "ended", "batch_id": "b1", "status": "failed", "code": "token_limit_exceeded"},
    )
    tracked = tracked_from_journal(state, state.files["f1"])
    assert tracked is not None
    assert (tracked.step, tracked.maybe_created, tracked.known_batches) == (
        Step.UPLOADED,
        True,
        {"b1"},
    )
    state.apply({"type": "dropped", "name": "f1"})
    assert tracked_from_journal(state, state.files["f1"]) is None
