"""The benchmarks' reference client keeps refilling its copy of a bucket, whatever it learned."""

from __future__ import annotations

import pytest

from benchmarks.reference_client import OTHERS_AT_MOST, MirrorBucket


def test_surprises_beyond_the_whole_refill_leave_the_copy_refilling() -> None:
    """The limit halves under it: the server reports far less than the copy holds, twice.

    What others take is learned at most up to its bound, so the copy refills at a tenth of
    the limit's rate, and the wait it names ends with the tokens there (before the bound, the
    copy stopped refilling and every wait it named was followed by another).
    """
    bucket = MirrorBucket(capacity=60_000.0, level=60_000.0, at=0.0, since=0.0)
    bucket.correct(60_000.0, 1.0)  # the first second: no surprise yet
    bucket.correct(0.0, 1.5)  # 60,000 tokens the copy thought were there are gone
    bucket.correct(0.0, 2.6)  # summed over the second: "others take" 60,000 tokens/s
    assert bucket.others == OTHERS_AT_MOST * 60_000 / 60
    wait = bucket.wait_for(100.0, 2.6)
    assert wait == pytest.approx(1.0)  # 100 tokens missing, at a tenth of 1,000 tokens/s
    assert bucket.level_at(2.6 + wait) == pytest.approx(100.0)
