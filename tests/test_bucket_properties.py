"""Property-based test of a key's bucket state under anything a server and a caller can do.

Whatever sequence of admissions, answers (headers as any server may write them, parsed by the
one header parser), refusals, cool-downs and time steps: every answer of ``try_admit`` is a
ticket, a finite non-negative wait, or a ``RequestTooLargeError``; the buckets keep a finite
positive capacity and a finite level no higher than it; the token scale stays in [1, 4] and the
pace in (0, 1].
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle.errors import RequestTooLargeError
from throttle.headers import parse_rate_limit_headers
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.limits import KeyLimits
from throttle.pacing import Refusal
from throttle.reservation import Cost, Ticket

pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

header_values = st.one_of(
    st.sampled_from(["-1", "0", "1", "60", "5999", "150000", "1e400", "nan", "inf", "", "abc"]),
    st.sampled_from(["6m0s", "1s", "12ms", "16m17.764s", "300", "0"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**6), max_value=10**7).map(str),
)
header_names = st.sampled_from(
    [
        f"{prefix}-{field}-{kind}"
        for prefix in ("x-ratelimit", "x-rate-limit")
        for field in ("limit", "remaining", "reset")
        for kind in ("requests", "tokens")
    ]
)
costs = st.builds(
    Cost,
    tokens=st.integers(min_value=0, max_value=2_000_000),
    requests=st.integers(min_value=0, max_value=3),
)
steps = st.one_of(
    st.tuples(st.just("admit"), costs),
    st.tuples(st.just("answer"), st.dictionaries(header_names, header_values, max_size=6)),
    st.tuples(st.just("refuse"), st.sampled_from(list(Refusal))),
    st.tuples(st.just("fail"), st.booleans()),
    st.tuples(st.just("cool"), st.floats(min_value=0, max_value=120)),
    st.tuples(st.just("wait"), st.floats(min_value=0, max_value=600)),
)
ceilings = st.one_of(
    st.just(Limits()),
    st.builds(
        Limits,
        rpm=st.one_of(st.none(), st.floats(min_value=1, max_value=1e6)),
        tpm=st.one_of(st.none(), st.floats(min_value=1, max_value=1e8)),
    ),
)


def assert_sound(limits: KeyLimits, now: float) -> None:
    """The invariants of the module docstring."""
    for bucket in (limits.requests, limits.tokens):
        if bucket is not None:
            assert math.isfinite(bucket.capacity)
            assert bucket.capacity > 0
            assert math.isfinite(bucket.level)
            assert bucket.level <= bucket.capacity
            assert math.isfinite(bucket.window)
            assert bucket.window > 0
    assert 1.0 <= limits.token_scale <= 4.0
    assert 0.0 < limits.pace.at(now) <= 1.0
    assert limits.in_flight >= 0


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ceilings, st.lists(steps, max_size=40))
def test_bucket_state_stays_sound_whatever_happens(
    ceiling: Limits, script: list[tuple[str, object]]
) -> None:
    """Any script of steps leaves the key sound, and every admission answer is usable."""
    limits = KeyLimits(ceiling, AdmissionPolicy(probe_concurrency=4))
    now = 0.0
    held: list[Ticket] = []
    for step, value in script:
        if step == "admit":
            assert isinstance(value, Cost)
            try:
                answer = limits.try_admit(value, now)
            except RequestTooLargeError:
                continue  # a documented refusal: the cost exceeds a whole known bucket
            if isinstance(answer, Ticket):
                held.append(answer)
            else:
                assert math.isfinite(answer)
                assert answer > 0
        elif step == "answer" and held:
            assert isinstance(value, dict)
            snapshot = parse_rate_limit_headers(value)
            limits.complete(held.pop(0), snapshot, now, answered=True, succeeded=True)
        elif step == "fail" and held:
            limits.complete(held.pop(0), None, now, answered=bool(value), succeeded=False)
        elif step == "refuse" and held:
            assert isinstance(value, Refusal)
            limits.refused(held.pop(0), value, now)
        elif step == "cool":
            assert isinstance(value, float)
            limits.cool_down(now + value)
        elif step == "wait":
            assert isinstance(value, float)
            now += value
        assert_sound(limits, now)
