"""The garbage collector during a job: young collections sized to the lines in flight.

Why: CPython collects its youngest generation whenever the containers allocated since the last
collection outnumber those freed by 700. A job keeps up to ``capacity`` lines in flight (1,024
by default), each holding some :data:`CONTAINERS_PER_LINE` containers (its coroutines, futures,
dicts, the HTTP request and answer) for as long as its answer takes; when hundreds of answers
arrive in one turn of the event loop, or hundreds of lines start in one, that count swings by
far more than 700. Every swing triggers a collection that traverses the lines in flight, all
alive (reference counting frees them anyway when they end), and promotes them, so the older
generations traverse them again. On loopback at 1,024 in flight that was about a sixth of
``throttle run``'s CPU, and reclaimed almost nothing: a line's objects form no cycles when it
succeeds.

So during a job the youngest generation's threshold is the containers of ``capacity`` lines in
flight: the swings of a job stay below it, and a collection comes only once that many
containers are left over (garbage in reference cycles, which it still collects). The memory
this can leave uncollected is bounded by ``capacity``, as the lines in flight are. The older
generations' thresholds, and a collector switched off (threshold 0), are left alone; the
old threshold is restored when the job ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

CONTAINERS_PER_LINE = 60  # measured: tracked objects per line in flight, `throttle run` on loopback


@contextlib.contextmanager
def young_collections_for(capacity: int) -> Iterator[None]:
    """Inside the block, collect the youngest generation after ``capacity`` lines' containers.

    Args:
        capacity: the most lines in flight at once.
    """
    young, *older = gc.get_threshold()
    if young > 0:  # 0: the collector is off, and stays off
        gc.set_threshold(max(young, CONTAINERS_PER_LINE * capacity), *older)
    try:
        yield
    finally:
        gc.set_threshold(young, *gc.get_threshold()[1:])
