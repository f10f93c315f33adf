"""Property tests: every parser keeps its contract on arbitrary input (hypothesis).

Each parser either answers with a finite, non-negative number (or ``None``) or raises only the
exception its docstring names; ``classify_response`` and the header readers never raise.
"""

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle import InvalidRequestError, classify_response, estimate_tokens, parse_duration
from throttle.classify import Classification, decode_body, retry_delay_from_message
from throttle.errors import APIStatusError, RequestTooLargeError
from throttle.estimate import TokenEstimate
from throttle.headers import (
    LimitReading,
    parse_rate_limit_headers,
    parse_retry_after,
    parse_should_retry,
)
from throttle.tokenizer import EncodingCache, default_encodings

# hypothesis's failure report touches mypy_extensions.TypedDict, whose DeprecationWarning
# (an error under filterwarnings = error) would turn a falsifying example into INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

THOROUGH = settings(
    max_examples=1000,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository; failures print their example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HEADER_NAMES = [
    f"x-ratelimit-{field}-{family}{kind}{suffix}"
    for field in ("limit", "remaining", "reset")
    for family in ("", "project-")
    for kind in ("requests", "tokens")
    for suffix in ("", "_usage_based")
] + ["retry-after", "retry-after-ms", "x-should-retry", "x-request-id", "Retry-After"]

# Digit runs of 300 to 420 digits overflow a float: the inputs that used to become inf.
huge_digits = st.integers(300, 420).map(lambda n: "9" * n)
digits = st.one_of(st.integers(0, 10**6).map(str), huge_digits)
numbers_as_text = st.one_of(
    st.integers().map(str),
    st.floats().map(str),
    huge_digits,
    st.sampled_from(["-1", "inf", "-inf", "nan", "1e400", "1_000", " 7 ", "", "true"]),
)
components = st.tuples(
    digits,
    st.sampled_from(["", ".", ".5", ".764"]),
    st.sampled_from(["ms", "us", "µs", "ns", "h", "m", "s", "x", ""]),
    st.sampled_from(["", " "]),
)
durations_as_text = st.one_of(
    st.text("0123456789.hmsun µ", max_size=30),
    st.lists(components, min_size=1, max_size=4).map(
        lambda parts: "".join("".join(part) for part in parts)
    ),
    numbers_as_text,
)
header_values = st.one_of(durations_as_text, st.text(max_size=20))
counts = st.one_of(st.integers(0, 10**6).map(str), numbers_as_text)
# A whole bucket (limit, remaining, reset) as often as not: only then is its reset read.
buckets: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "x-ratelimit-limit-tokens": counts,
            "x-ratelimit-remaining-tokens": counts,
            "x-ratelimit-reset-tokens": header_values,
        }
    ),
)
headers = st.builds(
    lambda bucket, extra: {**bucket, **extra},
    buckets,
    st.dictionaries(
        st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=10)), header_values, max_size=6
    ),
)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


# Lists nested up to 1,500 deep: past Python's recursion limit, the inputs that used to escape.
deep_lists = st.integers(0, 1500).map(lambda depth: _nest([], depth))
any_json = st.one_of(json_values, deep_lists)

messages_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        "{}Limit {}, Requested {}{}".format,
        st.sampled_from(["Request too large for gpt-4o. ", "Rate limit reached: ", ""]),
        st.one_of(st.text("0123456789,", max_size=12), huge_digits),
        st.one_of(st.text("0123456789, ", max_size=12), huge_digits),
        st.text(max_size=10),
    ),
    st.builds("Please try again in {}.".format, durations_as_text),
    st.builds("Please retry after {} seconds.".format, numbers_as_text),
    st.builds(
        "on {} per {}: {}".format,
        st.sampled_from(["tokens", "requests", "x"]),
        st.sampled_from(["min", "day", "y"]),
        st.text(max_size=20),
    ),
)
error_bodies = st.builds(
    lambda message, kind, code, extra: {
        "error": {"message": message, "type": kind, "code": code, **extra}
    },
    st.one_of(messages_text, json_scalars),
    st.one_of(st.sampled_from(["tokens", "requests", "insufficient_quota"]), json_scalars),
    st.one_of(st.sampled_from(["rate_limit_exceeded", "insufficient_quota"]), deep_lists),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=2),
)
statuses = st.one_of(st.sampled_from([200, 400, 408, 409, 429, 500, 503, 529]), st.integers())


def _finite_wait(seconds: float | None) -> bool:
    return seconds is None or (math.isfinite(seconds) and seconds >= 0)


def _sound_reading(reading: LimitReading | None) -> bool:
    if reading is None:
        return True
    numbers = (reading.limit, reading.remaining)
    return (
        all(math.isfinite(n) for n in numbers)
        and 0 <= reading.remaining <= reading.limit
        and reading.limit > 0
        and _finite_wait(reading.reset_seconds)
    )


@THOROUGH
@given(durations_as_text)
def test_parse_duration_is_finite_and_non_negative_or_a_value_error(text: str) -> None:
    """Any text is a finite, non-negative number of seconds, or a ValueError."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0


@THOROUGH
@given(headers)
def test_header_readers_never_raise_and_never_read_bogus_numbers(
    values: dict[str, str],
) -> None:
    """Any header dict gives sound readings (or none), a sound delay and never an exception."""
    snapshot = parse_rate_limit_headers(values)
    if snapshot is not None:
        assert _sound_reading(snapshot.requests)
        assert _sound_reading(snapshot.tokens)
    assert _finite_wait(parse_retry_after(values))
    assert parse_should_retry(values) in (True, False, None)


@THOROUGH
@given(messages_text)
def test_retry_delay_from_message_is_finite_and_non_negative_or_none(message: str) -> None:
    """Any message names a finite, non-negative delay or none: never inf, NaN or negative."""
    assert _finite_wait(retry_delay_from_message(message))


@THOROUGH
@given(statuses, headers, st.one_of(error_bodies, any_json, st.binary(max_size=40)))
def test_classify_response_never_raises(status: int, values: dict[str, str], body: Any) -> None:
    """Any status, headers and body classify without raising, with only sound delays."""
    if isinstance(body, bytes):
        body = decode_body(body)
    classification = classify_response(status, values, body)
    assert isinstance(classification, Classification)
    error = classification.error
    if isinstance(error, APIStatusError):
        assert _finite_wait(error.retry_after)
    if isinstance(error, RequestTooLargeError):
        assert math.isfinite(error.limit)
        assert math.isfinite(error.requested)
        assert min(error.limit, error.requested) >= 0


endpoints = st.one_of(
    st.sampled_from(
        ["chat/completions", "/v1/responses", "completions", "v1/embeddings", "moderations"]
    ),
    st.text(max_size=30),
)
field_values = st.one_of(
    json_scalars,
    st.integers(min_value=-5, max_value=10**9),
    st.integers(min_value=10**300, max_value=10**420),
)
message_parts = st.one_of(
    st.text(max_size=20),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "input_audio", "file"])},
        optional={"text": json_scalars, "image_url": json_values, "input_audio": json_values},
    ),
    any_json,
)
messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system"])},
            optional={
                "content": st.one_of(st.text(max_size=20), st.lists(message_parts, max_size=3)),
                "name": json_scalars,
                "tool_calls": any_json,
            },
        ),
        any_json,
    ),
    max_size=3,
)
request_bodies = st.one_of(
    any_json,
    st.fixed_dictionaries(
        {
            "model": st.one_of(
                st.sampled_from(["gpt-4o", "gpt-4", "text-embedding-3-small"]), any_json
            )
        },
        optional={
            "messages": st.one_of(messages, any_json),
            "input": st.one_of(messages, any_json),
            "prompt": any_json,
            "tools": any_json,
            "max_tokens": field_values,
            "max_completion_tokens": field_values,
            "n": field_values,
            "extra": any_json,
        },
    ),
)


@THOROUGH
@given(endpoints, request_bodies)
def test_estimate_tokens_is_sound_or_an_invalid_request(endpoint: str, body: Any) -> None:
    """Any body is a sound, bounded estimate or an InvalidRequestError: nothing else escapes."""
    try:
        estimate = estimate_tokens(endpoint, body)
    except InvalidRequestError:
        return
    assert isinstance(estimate, TokenEstimate)
    assert estimate.prompt >= 0
    assert estimate.completion >= 0
    assert math.isfinite(float(estimate.total))


# Its own counters (fresh memories of short texts) over the encodings already loaded.
_other_encodings = EncodingCache(bundled=default_encodings.encoder)


def _outcome(endpoint: str, body: Any, encodings: EncodingCache) -> TokenEstimate | str:
    try:
        return estimate_tokens(endpoint, body, encodings=encodings)
    except InvalidRequestError as error:
        return str(error)


@THOROUGH
@given(endpoints, request_bodies)
def test_estimates_never_depend_on_what_was_counted_before(endpoint: str, body: Any) -> None:
    """Remembered counts change no estimate: the same body gives the same answer anywhere."""
    first = _outcome(endpoint, body, default_encodings)
    assert _outcome(endpoint, body, default_encodings) == first
    assert _outcome(endpoint, body, _other_encodings) == first
