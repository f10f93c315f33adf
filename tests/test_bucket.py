"""Tests for the pure bucket arithmetic."""

import pytest

from throttle.bucket import Bucket


def test_refill_is_continuous_at_capacity_per_window() -> None:
    """60 per 60 s refills one unit a second."""
    bucket = Bucket(capacity=60, window=60, level=0, updated_at=0)
    bucket.refill(10)
    assert bucket.level == pytest.approx(10)


def test_refill_caps_at_capacity() -> None:
    """Idle time never fills beyond capacity."""
    bucket = Bucket(capacity=60, window=60, level=50, updated_at=0)
    bucket.refill(1000)
    assert bucket.level == 60


def test_refill_never_goes_back_in_time() -> None:
    """An earlier `now` changes nothing."""
    bucket = Bucket(capacity=60, window=60, level=5, updated_at=10)
    bucket.refill(3)
    assert (bucket.level, bucket.updated_at) == (5, 10)


def test_seconds_until_is_zero_when_available_else_the_deficit_over_rate() -> None:
    """Waiting time is exactly the missing units divided by the refill rate."""
    bucket = Bucket(capacity=600, window=60, level=5, updated_at=0)
    assert bucket.seconds_until(5, 0) == 0
    assert bucket.seconds_until(25, 0) == pytest.approx(2.0)


def test_take_may_go_into_debt() -> None:
    """Taking more than the level leaves a negative level that refill pays back."""
    bucket = Bucket(capacity=60, window=60, level=1, updated_at=0)
    bucket.take(3, 0)
    assert bucket.level == -2
    assert bucket.seconds_until(1, 0) == pytest.approx(3)


def test_resync_overwrites_capacity_and_level() -> None:
    """Server truth replaces whatever the bucket believed; level never exceeds capacity."""
    bucket = Bucket(capacity=100, window=60, level=100, updated_at=0)
    bucket.resync(capacity=50, level=80, now=5)
    assert (bucket.capacity, bucket.level, bucket.updated_at) == (50, 50, 5)


def test_repr_shows_live_state() -> None:
    """The repr shows level, capacity and rate, for debugging."""
    assert repr(Bucket(60, 60, 30, 0)) == "Bucket(level=30.0/60, rate=1/s, at=0.000)"
