"""Line indexes kept as runs: the same answers as a list and a dict, at a run's cost."""

import random
import tracemalloc

import pytest

from throttle.batch_journal import to_ranges
from throttle.batch_lines import LineOwners, LineRuns


@pytest.mark.parametrize("seed", range(20))
def test_line_runs_read_like_the_list_of_their_indexes(seed: int) -> None:
    """Property: length, positions, iteration, slices and equality are the list's."""
    draw = random.Random(seed)  # noqa: S311 - seeded test data, not secrets
    indexes = draw.sample(range(500), draw.randint(0, 120))
    if seed % 2:
        indexes.sort()
    runs = LineRuns(to_ranges(indexes))
    assert len(runs) == len(indexes)
    assert list(runs) == indexes
    assert runs == indexes
    assert [runs[i] for i in range(-len(indexes), len(indexes))] == indexes + indexes
    assert runs[2:5] == indexes[2:5]
    with pytest.raises(IndexError):
        runs[len(indexes)]
    assert [list(range(a, b)) for a, b in runs.runs()] == [
        list(range(a, b)) for a, b in to_ranges(indexes)
    ]


def test_line_runs_refuse_an_empty_run() -> None:
    """``[5, 5)`` is no run: a journal holding one does not add up."""
    with pytest.raises(ValueError, match="empty or reversed"):
        LineRuns([[5, 5]])


@pytest.mark.parametrize("seed", range(30))
def test_line_owners_answer_as_a_dict_of_the_last_file_naming_each_line(seed: int) -> None:
    """Property: files naming scattered lines and dropped files leave the dict's answers."""
    draw = random.Random(seed)  # noqa: S311 - seeded test data, not secrets
    owners, model = LineOwners(), dict[int, str]()
    for step in range(40):
        name = f"f{step}"
        if model and draw.random() < 0.2:
            gone = draw.choice(sorted(set(model.values())))
            owners.release(gone)
            model = {index: owner for index, owner in model.items() if owner != gone}
            continue
        start = draw.randint(0, 300)
        lines = draw.sample(range(start, start + 120), draw.randint(1, 60))
        if draw.random() < 0.5:
            lines = list(range(start, start + len(lines)))  # fresh lines, one run
        owners.assign(((a, b) for a, b in to_ranges(lines)), name)
        model.update(dict.fromkeys(lines, name))
    assert owners == model
    assert all(owners.get(index) == model.get(index) for index in range(-5, 450))
    assert len(owners) == len(model)


def test_a_million_lines_in_a_few_runs_cost_kilobytes_not_megabytes() -> None:
    """20 files of 50,000 lines: the owners and the files' runs stay under 100 KB."""
    tracemalloc.start()
    owners = LineOwners()
    files = []
    for number, start in enumerate(range(0, 1_000_000, 50_000)):
        files.append(LineRuns([[start, start + 50_000]]))
        owners.assign(files[-1].runs(), f"f{number}")
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size < 100_000
    assert (owners[999_999], owners.get(1_000_000), files[3][10]) == ("f19", None, 150_010)
