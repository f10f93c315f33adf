"""Tests for parsing and formatting reset durations."""

import pytest

from throttle import parse_duration
from throttle.durations import format_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12ms", 0.012),
        ("425ms", 0.425),
        ("1s", 1.0),
        ("17.28s", 17.28),
        ("6m0s", 360.0),
        ("16m17.764s", 977.764),
        ("1h2m3s", 3723.0),
        ("6m 11.52s", 371.52),
        ("20s", 20.0),
        ("28m48s", 1728.0),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("1.5µs", 1.5e-6),
        ("10", 10.0),
        ("300", 300.0),
        ("0.5", 0.5),
        (" 7 ", 7.0),
    ],
)
def test_parse_duration_reads_every_known_format(text: str, seconds: float) -> None:
    """Go-style durations (with or without spaces) and Azure's plain numbers are seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_does_not_misread_minutes_followed_by_seconds() -> None:
    """`16m17.764s` is 977.764 s, the case a naive digits-then-unit regex gets wrong."""
    assert parse_duration("16m17.764s") == pytest.approx(16 * 60 + 17.764)


@pytest.mark.parametrize("text", ["", "-1", "-5s", "abc", "1x", "s", "1s garbage", "inf", "nan"])
def test_parse_duration_rejects_garbage_with_a_value_error(text: str) -> None:
    """Anything that is not a non-negative duration raises ValueError naming the text."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_duration_rejects_non_strings() -> None:
    """A number instead of a string is a TypeError naming the type."""
    with pytest.raises(TypeError, match="must be a string, got int"):
        parse_duration(12)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0.0, 0.012, 1.146, 59.9999, 360.0, 977.764, 3723.0])
def test_format_duration_round_trips_through_parse(seconds: float) -> None:
    """What the simulator writes, throttle reads back to the millisecond."""
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


def test_format_duration_writes_openai_style() -> None:
    """Minutes carry an explicit seconds part, like OpenAI's `6m0s`."""
    assert format_duration(360) == "6m0s"
    assert format_duration(0.012) == "12ms"
    assert format_duration(3723) == "1h2m3s"


@pytest.mark.parametrize("text", ["9" * 310, " " + "9" * 310 + " ", "9" * 310 + ".5"])
def test_parse_duration_rejects_a_plain_number_too_big_for_a_float(text: str) -> None:
    """A plain number that overflows to inf is a ValueError, never an infinite wait."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
