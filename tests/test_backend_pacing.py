"""The pace every backend keeps: refusals cut it, time restores it (``throttle.pacing``).

Contract tests, run on the in-memory backend and on a real redis-server. The key here is
blind (no headers) at 600 RPM: 10 requests a second, so one request takes 0.1 s of its full
rate; after a cut to 0.7 admissions are spaced 0.1 / 0.7 s apart, one second's burst ahead.
"""

from __future__ import annotations

import math

import pytest

from tests import backends
from tests.admit_one import admit_one
from tests.backends import KEY, MakeBackend, answered, ticket
from throttle import LimitBackend, Limits
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.pacing import BURST_SECONDS, RATE_LIMITED, SLOWED_DOWN, Refusal
from throttle.reservation import Cost, Ticket
from throttle.testing import ManualClock

make_backend = backends.make_backend  # the fixture: every test here runs on each backend
SPACING = 0.1 / RATE_LIMITED.cut  # seconds between admissions at 0.7 of 10 a second


async def blind_key_with_a_full_bucket(
    make_backend: MakeBackend,
) -> tuple[LimitBackend, ManualClock]:
    """A key at 600 RPM whose server sends no headers, its bucket full after a minute."""
    clock = ManualClock()
    backend = make_backend(lambda _key: Limits(rpm=600), clock)
    await answered(backend, await ticket(backend, KEY, Cost(0)), None)
    await clock.advance(60)
    return backend, clock


def paced_burst(spacing: float) -> set[int]:
    """How many admissions a second's burst at ``spacing`` allows (one more at a float tie)."""
    whole = round(BURST_SECONDS / spacing)
    return (
        {whole, whole + 1}
        if math.isclose(whole * spacing, BURST_SECONDS)
        else {int(BURST_SECONDS / spacing) + 1}
    )


async def admitted_now(backend: LimitBackend, asked: int = 40) -> tuple[int, float]:
    """Ask for ``asked`` requests at once; return how many were admitted and the wait after."""
    admissions = await backend.try_admit(KEY, [Cost(0)] * asked)
    return len(admissions.tickets), admissions.wait


async def test_a_refusal_without_headers_spaces_admissions_at_the_cut_pace(
    make_backend: MakeBackend,
) -> None:
    """Cut to 0.7: a second's burst (8 requests), then one every 0.1 / 0.7 s, not 10 a second."""
    backend, _ = await blind_key_with_a_full_bucket(make_backend)
    refused = await ticket(backend, KEY, Cost(0))
    await backend.refused(KEY, refused, Refusal.REQUESTS)
    count, wait = await admitted_now(backend)
    assert count in paced_burst(SPACING)
    assert wait == pytest.approx(count * SPACING - BURST_SECONDS)


async def test_refusals_of_attempts_sent_before_the_cut_do_not_cut_again(
    make_backend: MakeBackend,
) -> None:
    """Ten attempts in flight all refused: one cut, not 0.7 ** 10."""
    backend, _ = await blind_key_with_a_full_bucket(make_backend)
    in_flight: list[Ticket] = list((await backend.try_admit(KEY, [Cost(0)] * 10)).tickets)
    for refused in in_flight:
        await backend.refused(KEY, refused, Refusal.REQUESTS)
    count, _ = await admitted_now(backend)
    assert count in paced_burst(SPACING)


async def test_each_new_refusal_cuts_again(make_backend: MakeBackend) -> None:
    """An attempt admitted after the first cut and refused too: the pace is 0.49."""
    backend, clock = await blind_key_with_a_full_bucket(make_backend)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.REQUESTS)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.REQUESTS)
    await clock.advance(10)  # the spacing so far is long past; the pace grew 0.2 meanwhile
    count, wait = await admitted_now(backend)
    spacing = 0.1 / (RATE_LIMITED.cut**2 + 10 * RATE_LIMITED.growth_per_second)
    assert count in paced_burst(spacing)
    assert wait == pytest.approx(count * spacing - BURST_SECONDS)


async def test_the_pace_grows_back_to_the_full_rate(make_backend: MakeBackend) -> None:
    """0.3 of the full rate regained at 2% a second: 15 s later the key is not paced at all."""
    backend, clock = await blind_key_with_a_full_bucket(make_backend)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.REQUESTS)
    await clock.advance((1 - RATE_LIMITED.cut) / RATE_LIMITED.growth_per_second)
    count, _ = await admitted_now(backend)
    assert count == 40  # the full bucket's worth, unspaced


async def test_with_headers_a_rate_limit_does_not_cut_but_slow_down_does(
    make_backend: MakeBackend,
) -> None:
    """Headers carry the shared level already; ``slow_down`` halves the pace all the same."""
    clock = ManualClock()
    backend = make_backend(lambda _key: Limits(), clock)
    headers = RateLimitSnapshot(requests=LimitReading(600, 600))
    await answered(backend, await ticket(backend, KEY, Cost(0)), headers)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.REQUESTS)
    count, _ = await admitted_now(backend)
    assert count == 40
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.SLOW_DOWN)
    count, wait = await admitted_now(backend)
    spacing = 0.1 / SLOWED_DOWN.cut
    assert count in paced_burst(spacing)
    assert wait == pytest.approx(count * spacing - BURST_SECONDS)


async def test_a_slow_down_ramp_is_not_shortened_by_a_later_rate_limit(
    make_backend: MakeBackend,
) -> None:
    """After ``slow_down`` a rate-limit cut keeps the slow growth: 15 s later still paced."""
    backend, clock = await blind_key_with_a_full_bucket(make_backend)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.SLOW_DOWN)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.REQUESTS)
    await clock.advance(15)
    pace = SLOWED_DOWN.cut * RATE_LIMITED.cut + 15 * SLOWED_DOWN.growth_per_second
    count, _ = await admitted_now(backend)
    assert count in paced_burst(0.1 / pace)


async def test_a_paced_wait_never_outlasts_the_pace_s_recovery(make_backend: MakeBackend) -> None:
    """A large request spaced far ahead: the next one waits only until the pace is full."""
    clock = ManualClock()
    backend = make_backend(lambda _key: Limits(tpm=60_000), clock)  # 1,000 tokens a second
    await answered(backend, await ticket(backend, KEY, Cost(0)), None)
    await clock.advance(60)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.TOKENS)
    await ticket(backend, KEY, Cost(30_000))  # 30 s of the full rate, 43 s at 0.7
    wait = await admit_one(backend, KEY, Cost(10))
    recovery = (1 - RATE_LIMITED.cut) / RATE_LIMITED.growth_per_second
    assert wait == pytest.approx(recovery)  # not 43 s minus the burst


async def test_a_cut_after_a_full_recovery_starts_a_fresh_spacing(
    make_backend: MakeBackend,
) -> None:
    """The spacing of a past cut is forgotten: a new cut admits at once, within its burst."""
    clock = ManualClock()
    backend = make_backend(lambda _key: Limits(tpm=60_000), clock)  # 1,000 tokens a second
    await answered(backend, await ticket(backend, KEY, Cost(0)), None)
    await clock.advance(60)
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.TOKENS)
    await ticket(backend, KEY, Cost(30_000))  # spaced 43 s ahead at 0.7
    await clock.advance(16)  # the pace is full again; the bucket has room
    await backend.refused(KEY, await ticket(backend, KEY, Cost(10)), Refusal.TOKENS)
    assert isinstance(await admit_one(backend, KEY, Cost(10)), Ticket)


async def test_a_slow_down_of_an_attempt_sent_before_a_cut_still_slows_the_ramp(
    make_backend: MakeBackend,
) -> None:
    """slow_down on an attempt admitted before a rate-limit cut: no second cut, slow growth."""
    backend, clock = await blind_key_with_a_full_bucket(make_backend)
    early = await ticket(backend, KEY, Cost(0))
    await backend.refused(KEY, await ticket(backend, KEY, Cost(0)), Refusal.REQUESTS)
    await backend.refused(KEY, early, Refusal.SLOW_DOWN)
    await clock.advance(15)  # a rate-limit ramp would be full by now
    pace = RATE_LIMITED.cut + 15 * SLOWED_DOWN.growth_per_second
    count, _ = await admitted_now(backend)
    assert count in paced_burst(0.1 / pace)
