"""Tests for the quota breaker: once out of quota, nothing more is sent on a credential."""

import pytest

from throttle import ErrorDetails, QuotaExhaustedError
from throttle.breaker import QuotaBreakers

BILLING = ErrorDetails(429, "insufficient_quota", "insufficient_quota", "no money")


def test_first_trip_opens_and_later_trips_report_it_was_open() -> None:
    """trip() says True only for the answer that opened the breaker."""
    breakers = QuotaBreakers()
    assert breakers.trip("key-a", BILLING) is True
    assert breakers.trip("key-a", BILLING) is False
    assert breakers.is_open("key-a")


def test_breakers_are_per_identity() -> None:
    """One credential out of quota leaves another alone."""
    breakers = QuotaBreakers()
    breakers.trip("key-a", BILLING)
    assert not breakers.is_open("key-b")
    breakers.check("key-b")  # does not raise


def test_refusal_carries_the_servers_words_and_the_attempts() -> None:
    """A refused request's error holds the billing answer and how often it was sent."""
    breakers = QuotaBreakers()
    breakers.trip("key-a", BILLING)
    with pytest.raises(QuotaExhaustedError, match="no money") as caught:
        breakers.check("key-a", attempts=2)
    assert caught.value.details is BILLING
    assert caught.value.attempts == 2


def test_opened_event_is_set_while_open_and_cleared_by_reset() -> None:
    """Sleepers wait on opened(); a reset clears it and lets requests flow again."""
    breakers = QuotaBreakers()
    opened = breakers.opened("key-a")
    assert not opened.is_set()
    breakers.trip("key-a", BILLING)
    assert opened.is_set()
    breakers.reset("key-a")
    assert not opened.is_set()
    assert not breakers.is_open("key-a")


def test_reset_without_identity_closes_every_breaker() -> None:
    """reset() with no identity closes them all."""
    breakers = QuotaBreakers()
    breakers.trip("key-a", BILLING)
    breakers.trip("key-b", BILLING)
    breakers.reset()
    assert not breakers.is_open("key-a")
    assert not breakers.is_open("key-b")
