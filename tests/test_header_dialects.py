"""Tests for the rate-limit header dialects servers really send, each from a captured header set.

Every capture is written as the server sent it: a plain dict, names in whatever case it used,
with the unrelated headers around the rate-limit ones.
"""

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle import (
    AdmissionPolicy,
    Limits,
    RateLimitError,
    RequestTooLargeError,
    RetryPolicy,
    Verdict,
    classify_response,
    parse_rate_limit_headers,
)
from throttle.bucket import Bucket
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.limits import KeyLimits, Phase
from throttle.reservation import Cost, Ticket
from throttle.retry import Finish

# hypothesis's failure report touches mypy_extensions.TypedDict, whose DeprecationWarning
# (an error under filterwarnings = error) would turn a falsifying example into INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

NO_RESERVE = AdmissionPolicy(reserve_fraction=0.0)

# Azure OpenAI chat completions, hyphenated dialect, resets as plain numbers of seconds.
AZURE_HYPHENATED = {
    "Cache-Control": "no-cache, must-revalidate",
    "Content-Type": "application/json",
    "apim-request-id": "5d0c6f2e-8a41-4e1b-9c3a-2f7d1e6b9a04",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload",
    "x-ms-region": "East US 2",
    "X-Rate-Limit-Limit-Requests": "1440",
    "X-Rate-Limit-Remaining-Requests": "1439",
    "X-Rate-Limit-Reset-Requests": "10",
    "x-rate-limit-limit-tokens": "240000",
    "x-rate-limit-remaining-tokens": "238976",
    "x-rate-limit-reset-tokens": "300",
    "x-request-id": "6e1f0b7c-3d29-4a8e-b5c4-91a07f2d6c13",
    "x-ms-client-request-id": "5d0c6f2e-8a41-4e1b-9c3a-2f7d1e6b9a04",
    "azureml-model-session": "d031-20251104101522",
    "Date": "Tue, 04 Nov 2025 10:31:07 GMT",
}

# Azure OpenAI sending only the remaining pair (no limit, no reset).
AZURE_REMAINING_ONLY = {
    "cache-control": "no-cache, must-revalidate",
    "content-length": "842",
    "content-type": "application/json",
    "apim-request-id": "0b9e4c71-2f6a-4d83-a1e5-7c3b8d0f2e96",
    "x-ms-region": "North Central US",
    "x-ratelimit-remaining-requests": "79",
    "x-ratelimit-remaining-tokens": "61353",
    "x-request-id": "c4a7e2d9-1b60-4f3e-8d25-a9f06b7c3e18",
    "azureml-model-session": "d008-20240215231538",
    "date": "Sat, 02 Mar 2024 21:35:09 GMT",
}

# Azure's hyphenated name for requests next to the plain one for tokens, both remaining only.
AZURE_MIXED_REMAINING_ONLY = {
    "Content-Type": "application/json",
    "x-rate-limit-remaining-requests": "9",
    "x-ratelimit-remaining-tokens": "9216",
    "x-ms-region": "Sweden Central",
}

# Azure OpenAI Responses API: placeholders where the numbers should be.
AZURE_RESPONSES_PLACEHOLDERS = {
    "Content-Type": "application/json",
    "X-RateLimit-Limit-Tokens": "-1",
    "X-RateLimit-Remaining-Tokens": "-1",
    "X-RateLimit-Reset-Tokens": "0",
    "x-ratelimit-limit-requests": "-1",
    "x-ratelimit-remaining-requests": "-1",
    "x-ratelimit-reset-requests": "0",
    "apim-request-id": "a3f18c05-6d2b-47e9-b0c4-5e92d1a7f368",
    "x-ms-region": "West Europe",
}

# The daily quota: Azure says so only through the size of the delay.
AZURE_DAILY_HEADERS = {
    "Content-Length": "375",
    "Content-Type": "application/json",
    "Retry-After": "86400",
    "retry-after-ms": "86400000",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-remaining-tokens": "0",
    "apim-request-id": "e7d2a96b-0c4f-4b18-93e5-d1c86f2a7b40",
    "x-ms-region": "East US",
    "Date": "Tue, 04 Nov 2025 10:31:07 GMT",
}
AZURE_DAILY_BODY = {
    "error": {
        "code": "429",
        "message": (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-02-01 have exceeded call rate limit of your current OpenAI S0 pricing tier. "
            "Please retry after 86400 seconds. Please go here: https://aka.ms/oai/quotaincrease "
            "if you would like to further increase the default rate limit."
        ),
    }
}
OPENAI_RPD_BODY = {
    "error": {
        "message": (
            "Rate limit reached for gpt-4o in organization org-Y on requests per day (RPD): "
            "Limit 50, Used 50, Requested 1. Please try again in 28m48s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more."
        ),
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def learned(headers: dict[str, str], ceiling: Limits | None = None) -> KeyLimits:
    """A key whose first answer carried ``headers``."""
    state = KeyLimits(ceiling or Limits(), NO_RESERVE)
    answered(state, headers)
    return state


def admitted(state: KeyLimits, now: float = 0) -> Ticket:
    """Admit one small request on ``state`` and insist it was admitted."""
    ticket = state.try_admit(Cost(10), now)
    assert isinstance(ticket, Ticket), ticket
    return ticket


def answered(state: KeyLimits, headers: dict[str, str], ticket: Ticket | None = None) -> bool:
    """Hand ``ticket`` (or a new small request) back on ``state``, answered with ``headers``."""
    snapshot = parse_rate_limit_headers(headers)
    ticket = ticket or admitted(state)
    return state.complete(ticket, snapshot, 0, answered=True, succeeded=True)


def buckets(state: KeyLimits) -> tuple[Bucket | None, Bucket | None]:
    """Copies of the key's requests and tokens buckets, to compare before and after."""
    return (
        None if state.requests is None else replace(state.requests),
        None if state.tokens is None else replace(state.tokens),
    )


def test_azure_hyphenated_names_are_learned_like_openai_names() -> None:
    """`x-rate-limit-*` gives the same snapshot as `x-ratelimit-*`, plain resets in seconds."""
    snapshot = parse_rate_limit_headers(AZURE_HYPHENATED)
    assert snapshot == RateLimitSnapshot(
        requests=LimitReading(1440, 1439, 10.0), tokens=LimitReading(240000, 238976, 300.0)
    )
    as_openai = {
        name.lower().replace("x-rate-limit-", "x-ratelimit-"): value
        for name, value in AZURE_HYPHENATED.items()
    }
    assert parse_rate_limit_headers(as_openai) == snapshot
    state = learned(AZURE_HYPHENATED)
    assert state.phase is Phase.LEARNED
    assert state.tokens is not None
    assert state.requests is not None
    assert (state.requests.capacity, state.tokens.capacity) == (1440, 240000)


def test_remaining_without_limit_is_not_taken_for_a_limit() -> None:
    """Only `remaining-*` (either spelling) gives no reading: a level is not a capacity."""
    assert parse_rate_limit_headers(AZURE_REMAINING_ONLY) is None
    assert parse_rate_limit_headers(AZURE_MIXED_REMAINING_ONLY) is None


def test_remaining_without_limit_leaves_a_learned_key_as_it_was() -> None:
    """A remaining-only answer after full headers changes neither capacity nor level."""
    state = learned(AZURE_HYPHENATED)
    ticket = admitted(state)
    before = buckets(state)
    assert not answered(state, AZURE_REMAINING_ONLY, ticket)
    assert buckets(state) == before
    assert state.phase is Phase.LEARNED


def test_remaining_without_limit_never_invents_a_bucket() -> None:
    """An unknown key answered with remaining only runs on its configured limits, or none."""
    configured = learned(AZURE_REMAINING_ONLY, Limits(rpm=100, tpm=80_000))
    assert configured.phase is Phase.BLIND
    assert configured.requests is not None
    assert configured.tokens is not None
    assert (configured.requests.capacity, configured.tokens.capacity) == (100, 80_000)
    unconfigured = learned(AZURE_REMAINING_ONLY)
    assert (unconfigured.requests, unconfigured.tokens) == (None, None)
    admitted(unconfigured, 1)


def test_azure_responses_placeholders_are_ignored() -> None:
    """Limit -1, remaining -1, reset 0 give no reading, in either spelling of the names."""
    assert parse_rate_limit_headers(AZURE_RESPONSES_PLACEHOLDERS) is None
    hyphenated = {
        name.lower().replace("x-ratelimit-", "x-rate-limit-"): value
        for name, value in AZURE_RESPONSES_PLACEHOLDERS.items()
    }
    assert parse_rate_limit_headers(hyphenated) is None


def test_placeholders_leave_a_learned_key_as_it_was() -> None:
    """After placeholders a learned key keeps its buckets and admits with a finite wait."""
    state = learned(AZURE_HYPHENATED)
    ticket = admitted(state)
    before = buckets(state)
    assert not answered(state, AZURE_RESPONSES_PLACEHOLDERS, ticket)
    assert buckets(state) == before
    wait = state.try_admit(Cost(1000), 0)
    assert isinstance(wait, Ticket) or (math.isfinite(wait) and wait >= 0)


@pytest.mark.parametrize("limit", ["0", "-1", "-0", " 0 ", "0.0"])
def test_a_zero_or_negative_limit_never_makes_a_bucket(limit: str) -> None:
    """A limit of 0 or less is a placeholder: no bucket of capacity 0, no division by zero."""
    headers = {
        "x-rate-limit-limit-tokens": limit,
        "x-rate-limit-remaining-tokens": "0",
        "x-rate-limit-reset-tokens": "0",
    }
    assert parse_rate_limit_headers(headers) is None
    state = learned(headers)
    assert state.tokens is None
    admitted(state, 1)


def test_placeholders_in_one_dialect_do_not_hide_real_values_in_the_other() -> None:
    """-1 under the OpenAI names and real numbers under Azure's: the real numbers are read."""
    snapshot = parse_rate_limit_headers({**AZURE_RESPONSES_PLACEHOLDERS, **AZURE_HYPHENATED})
    assert snapshot == RateLimitSnapshot(
        requests=LimitReading(1440, 1439, 10.0), tokens=LimitReading(240000, 238976, 300.0)
    )


def test_reset_zero_on_a_bucket_that_is_not_full_is_unknown() -> None:
    """A reset of 0 ("full now") while tokens are missing is a placeholder, not a reset time."""
    snapshot = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-tokens": "240000",
            "x-ratelimit-remaining-tokens": "1000",
            "x-ratelimit-reset-tokens": "0",
            "x-ratelimit-limit-requests": "1440",
            "x-ratelimit-remaining-requests": "1440",
            "x-ratelimit-reset-requests": "0s",
        }
    )
    assert snapshot == RateLimitSnapshot(
        requests=LimitReading(1440, 1440, 0.0), tokens=LimitReading(240000, 1000, None)
    )


def test_negative_zero_remaining_is_read_as_zero() -> None:
    """`-0` is an empty bucket, never a negative zero handed on to a bucket or a metric."""
    snapshot = parse_rate_limit_headers(
        {"x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "-0"}
    )
    assert snapshot is not None
    assert snapshot.tokens is not None
    assert math.copysign(1.0, snapshot.tokens.remaining) == 1.0


def test_azure_daily_quota_fails_instead_of_holding_the_request_a_day() -> None:
    """Azure's "retry after 86400 seconds" is a rate limit too long to wait: it finishes."""
    result = classify_response(429, AZURE_DAILY_HEADERS, AZURE_DAILY_BODY)
    assert result.verdict is Verdict.RATE_LIMITED
    error = result.error
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 86400.0
    assert "retry after 86400 seconds" in str(error)
    policy = RetryPolicy()
    assert error.retry_after > policy.max_server_wait
    assert policy.decide(error, 1) == Finish(error=error)
    assert policy.rate_limit_pause(error, 1) is None


def test_azure_daily_quota_delay_is_read_from_the_message_without_headers() -> None:
    """Without retry-after headers the message's "retry after 86400 seconds" is the delay."""
    error = classify_response(429, {"Content-Type": "application/json"}, AZURE_DAILY_BODY).error
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 86400.0
    assert RetryPolicy().rate_limit_pause(error, 1) is None


def test_openai_requests_per_day_fails_naming_the_daily_limit_and_the_wait() -> None:
    """OpenAI's RPD 429 ("try again in 28m48s") is a daily limit and finishes at once."""
    error = classify_response(429, {"x-request-id": "req_7"}, OPENAI_RPD_BODY).error
    assert isinstance(error, RateLimitError)
    assert (error.limit_type, error.retry_after) == ("requests_per_day", 1728.0)
    assert "per day" in str(error)
    assert "28m48s" in str(error)
    assert RetryPolicy().decide(error, 1) == Finish(error=error)
    assert RetryPolicy().rate_limit_pause(error, 1) is None


def test_mixed_dialects_take_the_bucket_with_less_left() -> None:
    """OpenAI and Azure names disagreeing: each bucket is read whole from the tighter one."""
    snapshot = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "1440",
            "x-ratelimit-remaining-requests": "1200",
            "x-ratelimit-reset-requests": "8.5s",
            "x-ratelimit-limit-tokens": "240000",
            "x-ratelimit-remaining-tokens": "200000",
            "x-ratelimit-reset-tokens": "10s",
            "X-Rate-Limit-Limit-Requests": "1440",
            "X-Rate-Limit-Remaining-Requests": "1300",
            "X-Rate-Limit-Reset-Requests": "10",
            "X-Rate-Limit-Limit-Tokens": "200000",
            "X-Rate-Limit-Remaining-Tokens": "150000",
            "X-Rate-Limit-Reset-Tokens": "300",
        }
    )
    assert snapshot == RateLimitSnapshot(
        requests=LimitReading(1440, 1200, 8.5), tokens=LimitReading(200000, 150000, 300.0)
    )


def test_usage_based_suffix_in_any_case_is_read() -> None:
    """`_usage_based` names, written with capitals, are read like the lower-case ones."""
    snapshot = parse_rate_limit_headers(
        {
            "Content-Type": "application/json",
            "X-RateLimit-Limit-Tokens_Usage_Based": "40000",
            "X-RateLimit-Remaining-Tokens_Usage_Based": "39000",
            "X-RateLimit-Reset-Tokens_Usage_Based": "1.5s",
        }
    )
    assert snapshot == RateLimitSnapshot(tokens=LimitReading(40000, 39000, 1.5))


def test_values_with_whitespace_and_capitals_are_read() -> None:
    """Padding around numbers and upper-case duration units still read as numbers."""
    snapshot = parse_rate_limit_headers(
        {
            "X-RateLimit-Limit-Requests": " 500 ",
            "X-RateLimit-Remaining-Requests": "\t499",
            "X-RateLimit-Reset-Requests": " 120MS ",
            "X-RateLimit-Limit-Tokens": "30000 ",
            "X-RateLimit-Remaining-Tokens": " 29000",
            "X-RateLimit-Reset-Tokens": "6M0S",
        }
    )
    assert snapshot == RateLimitSnapshot(
        requests=LimitReading(500, 499, 0.12), tokens=LimitReading(30000, 29000, 360.0)
    )


GARBAGE = ["abc", "1e400", "-1e400", "nan", "NaN", "inf", "-Infinity", "", " ", "60, 59", "0x10"]


@pytest.mark.parametrize("value", GARBAGE)
@pytest.mark.parametrize("field", ["limit", "remaining"])
def test_garbage_count_drops_only_its_bucket(field: str, value: str) -> None:
    """A count that is no finite number drops that bucket; the other is still read."""
    headers = {k: v for k, v in AZURE_HYPHENATED.items() if k != f"x-rate-limit-{field}-tokens"}
    headers[f"X-Rate-Limit-{field.title()}-Tokens"] = value
    snapshot = parse_rate_limit_headers(headers)
    assert snapshot == RateLimitSnapshot(requests=LimitReading(1440, 1439, 10.0))


@pytest.mark.parametrize("value", [*GARBAGE, "-1", "-10s", "1d", "9" * 400])
def test_garbage_reset_drops_only_the_reset(value: str) -> None:
    """A reset that is no finite duration is unknown; limit and remaining are kept."""
    headers = {**AZURE_HYPHENATED, "x-rate-limit-reset-tokens": value}
    snapshot = parse_rate_limit_headers(headers)
    assert snapshot is not None
    assert snapshot.tokens == LimitReading(240000, 238976, None)


NAMES = [
    f"{prefix}-{field}-{family}{kind}{suffix}"
    for prefix in ("x-ratelimit", "x-rate-limit")
    for field in ("limit", "remaining", "reset")
    for family in ("", "project-")
    for kind in ("requests", "tokens")
    for suffix in ("", "_usage_based")
]
names = st.builds(
    lambda name, case: getattr(name, case)(),
    st.sampled_from(NAMES),
    st.sampled_from(["lower", "upper", "title"]),
)
values = st.one_of(
    st.sampled_from([*GARBAGE, "-1", "0", "-0", "1440", "240000", "10", "300", "6m0s", " 7 "]),
    st.floats().map(str),
    st.integers(-(10**6), 10**6).map(str),
    st.text(" 0123456789.-eEinfNahmsu", max_size=12),
)


@settings(
    max_examples=1000,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository; failures print their example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.dictionaries(names, values, max_size=12), st.dictionaries(names, values, max_size=12))
def test_any_mix_of_dialects_keeps_the_buckets_sound(
    first: dict[str, str], second: dict[str, str]
) -> None:
    """Whatever two answers say, readings and buckets stay finite, positive and consistent."""
    state = KeyLimits(Limits(), NO_RESERVE)
    for now, headers in ((0.0, first), (1.0, second)):
        snapshot = parse_rate_limit_headers(headers)
        for reading in (snapshot.requests, snapshot.tokens) if snapshot else ():
            if reading is not None:
                numbers = (reading.limit, reading.remaining, reading.reset_seconds or 0.0)
                assert all(math.isfinite(n) and math.copysign(1, n) > 0 for n in numbers)
                assert reading.limit > 0
                assert reading.remaining <= reading.limit
        try:
            ticket = state.try_admit(Cost(1), now)
        except RequestTooLargeError:
            return
        if isinstance(ticket, Ticket):
            state.complete(ticket, snapshot, now, answered=True, succeeded=True)
        for bucket in (state.requests, state.tokens):
            if bucket is not None:
                assert math.isfinite(bucket.capacity)
                assert bucket.capacity > 0
                assert math.isfinite(bucket.level)
        assert math.isfinite(state.token_scale)
