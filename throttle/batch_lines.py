"""A job's line indexes kept as runs: which lines a file holds, and which file holds a line.

A batch job may hold millions of lines, and its journal names them all (each file's lines,
and, for a rerun, the file each line went to last). Kept one by one, that is a Python int per
line in a list and an entry per line in a dict: about 100 bytes a line, 100 MB for a million,
for facts the journal states in a handful of ``[start, stop)`` runs. Kept as runs, the memory
follows the runs (the job's files, and the lines retried out of order), not the lines; a look-up
bisects. Pure: no I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import overload


class LineRuns(Sequence[int]):
    """A file's line indexes, in file order, as ``[start, stop)`` runs (a list to read).

    Args:
        runs: the runs, in file order (as :func:`throttle.batch_journal.to_ranges` gives).

    Raises:
        ValueError: a run is empty or reversed.
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self, runs: Iterable[Iterable[int]]) -> None:
        self._starts = array("q")
        self._ends = array("q")  # lines in the runs up to this one, this one included
        total = 0
        for start, stop in runs:
            if stop <= start:
                raise ValueError(f"an empty or reversed run of lines: [{start}, {stop})")
            self._starts.append(start)
            total += stop - start
            self._ends.append(total)

    def __repr__(self) -> str:
        return f"LineRuns({len(self):,} lines in {len(self._starts):,} runs)"

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, position: int) -> int: ...

    @overload
    def __getitem__(self, position: slice) -> list[int]: ...

    def __getitem__(self, position: int | slice) -> int | list[int]:
        if isinstance(position, slice):
            return list(self)[position]
        size = len(self)
        if position < 0:
            position += size
        if not 0 <= position < size:
            raise IndexError(f"line position {position} of {size}")
        run = bisect_right(self._ends, position)
        before = self._ends[run - 1] if run else 0
        return self._starts[run] + position - before

    def __iter__(self) -> Iterator[int]:
        before = 0
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, start + end - before)
            before = end

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which do not hash

    def runs(self) -> Iterator[tuple[int, int]]:
        """Yield the ``(start, stop)`` runs, in file order."""
        before = 0
        for start, end in zip(self._starts, self._ends, strict=True):
            yield start, start + end - before
            before = end


class LineOwners(Mapping[int, str]):
    """Each line's index -> the name of the file that holds it, as disjoint sorted runs.

    A file that names a line takes it from any other (:meth:`assign`); a dropped file lets go
    of the lines it still holds (:meth:`release`), which then belong to none.
    """

    __slots__ = ("_names", "_starts", "_stops")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        self._names: list[str] = []

    def __repr__(self) -> str:
        return f"LineOwners({len(self):,} lines in {len(self._starts):,} runs)"

    def __getitem__(self, index: int) -> str:
        run = bisect_right(self._starts, index) - 1
        if run >= 0 and index < self._stops[run]:
            return self._names[run]
        raise KeyError(index)

    def __len__(self) -> int:
        return sum(stop - start for start, stop in zip(self._starts, self._stops, strict=True))

    def __iter__(self) -> Iterator[int]:
        for start, stop in zip(self._starts, self._stops, strict=True):
            yield from range(start, stop)

    def assign(self, runs: Iterable[tuple[int, int]], name: str) -> None:
        """The lines of ``runs`` (disjoint) belong to ``name`` now, whichever file held them.

        One pass over the runs they overlap: a file of scattered lines (retried out of
        order) costs its runs once, not once per run.
        """
        new = sorted(runs)
        if not new:
            return
        first = max(0, bisect_right(self._starts, new[0][0]) - 1)
        last = bisect_left(self._starts, max(stop for _, stop in new), lo=first)
        kept: list[tuple[int, int, str]] = []
        ahead = 0  # the first new run that may overlap the old run at hand
        for run in range(first, last):
            begin, end, owner = self._starts[run], self._stops[run], self._names[run]
            while ahead < len(new) and new[ahead][1] <= begin:
                ahead += 1
            at, taken = begin, ahead
            while taken < len(new) and new[taken][0] < end:
                if new[taken][0] > at:
                    kept.append((at, new[taken][0], owner))
                at = max(at, new[taken][1])
                taken += 1
            if at < end:
                kept.append((at, end, owner))
        merged = sorted(kept + [(start, stop, name) for start, stop in new])
        self._starts[first:last] = [start for start, _, _ in merged]
        self._stops[first:last] = [stop for _, stop, _ in merged]
        self._names[first:last] = [owner for _, _, owner in merged]

    def release(self, name: str) -> None:
        """The lines ``name`` holds belong to no file now."""
        keep = [run for run, owner in enumerate(self._names) if owner != name]
        self._starts = [self._starts[run] for run in keep]
        self._stops = [self._stops[run] for run in keep]
        self._names = [self._names[run] for run in keep]
