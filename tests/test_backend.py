"""Tests every bucket backend must pass, through the LimitBackend interface only.

Parametrized over the backends: the in-memory one today; a shared one joins the same suite.
Time is the backend's own: each backend here keeps its buckets on a hand-driven clock.
"""

from __future__ import annotations

import asyncio

import pytest

from tests import backends
from tests.admit_one import admit_one
from tests.backends import (
    KEY,
    OTHER,
    POLICY,
    QUOTA,
    MakeBackend,
    answered,
    ticket,
    tokens_left,
    unknown,
)
from tests.heard import Heard
from throttle import (
    BucketKey,
    LimitBackend,
    Limits,
    QuotaExhaustedError,
    RequestTooLargeError,
)
from throttle.pacing import Refusal
from throttle.reservation import Cost, Ticket
from throttle.testing import ManualClock

make_backend = backends.make_backend  # the fixture: every test here runs on each backend


async def test_unknown_limits_admit_one_probe_until_an_answer(make_backend: MakeBackend) -> None:
    """Before any headers a key lets one request through and waits for its answer."""
    backend = make_backend(unknown, ManualClock())
    probe = await ticket(backend, KEY, Cost(10))
    assert await admit_one(backend, KEY, Cost(10)) == POLICY.lease_seconds
    assert await answered(backend, probe, tokens_left(1000, 990))
    await ticket(backend, KEY, Cost(10))


async def test_a_vanished_reservation_frees_its_place_when_its_lease_ends(
    make_backend: MakeBackend,
) -> None:
    """A probe whose worker died never answers: the key admits again after the lease."""
    clock = ManualClock()
    backend = make_backend(unknown, clock)
    await ticket(backend, KEY, Cost(10))  # its worker is SIGKILLed: no answer ever comes
    await clock.advance(POLICY.lease_seconds - 1)
    assert await admit_one(backend, KEY, Cost(10)) == pytest.approx(1.0)
    await clock.advance(1)
    await ticket(backend, KEY, Cost(10))


async def test_a_late_release_of_an_ended_lease_changes_nothing_in_flight(
    make_backend: MakeBackend,
) -> None:
    """The vanished worker's answer after all: the new probe still counts as in flight."""
    clock = ManualClock()
    backend = make_backend(unknown, clock)
    lost = await ticket(backend, KEY, Cost(10))
    await clock.advance(POLICY.lease_seconds)
    current = await ticket(backend, KEY, Cost(10))
    await backend.complete(KEY, lost, None, answered=False, succeeded=False)
    assert await admit_one(backend, KEY, Cost(10)) == pytest.approx(POLICY.lease_seconds)
    await backend.complete(KEY, current, None, answered=False, succeeded=False)
    await ticket(backend, KEY, Cost(10))


async def test_headers_set_the_level_and_admission_waits_for_refill(
    make_backend: MakeBackend,
) -> None:
    """A bucket of 600 tokens/min with 0 left needs 10 s for 100 tokens, on the backend's clock."""
    clock = ManualClock()
    backend = make_backend(unknown, clock)
    await answered(backend, await ticket(backend, KEY, Cost(0)), tokens_left(600, 0))
    assert await admit_one(backend, KEY, Cost(100)) == pytest.approx(10.0)
    await clock.advance(10.0)
    await ticket(backend, KEY, Cost(100))


async def test_an_older_answer_does_not_undo_a_newer_one(make_backend: MakeBackend) -> None:
    """Answers out of order: the headers of an earlier-admitted request are not applied."""
    backend = make_backend(unknown, ManualClock())
    await answered(backend, await ticket(backend, KEY, Cost(0)), tokens_left(6000, 6000))
    early = await ticket(backend, KEY, Cost(10))
    late = await ticket(backend, KEY, Cost(10))
    assert await answered(backend, late, tokens_left(6000, 5000))
    assert not await answered(backend, early, tokens_left(6000, 5000))


async def test_configured_limits_pace_a_server_without_headers(make_backend: MakeBackend) -> None:
    """A headerless success turns the key blind: the configured 60 RPM, starting empty."""
    clock = ManualClock()
    backend = make_backend(lambda _key: Limits(rpm=60), clock)
    await answered(backend, await ticket(backend, KEY, Cost(0)), None)
    assert await admit_one(backend, KEY, Cost(0)) == pytest.approx(1.0)
    await clock.advance(1.0)
    await ticket(backend, KEY, Cost(0))


async def test_cool_down_holds_the_key_for_its_duration(make_backend: MakeBackend) -> None:
    """After cool_down(5 s) the key answers the seconds left, then admits."""
    clock = ManualClock()
    backend = make_backend(unknown, clock)
    await backend.cool_down(KEY, 5.0)
    await clock.advance(2.0)
    assert await admit_one(backend, KEY, Cost(0)) == pytest.approx(3.0)
    await clock.advance(3.0)
    await ticket(backend, KEY, Cost(0))


async def test_several_costs_are_admitted_in_order_while_they_fit(
    make_backend: MakeBackend,
) -> None:
    """Asked at once, costs go in order; the first that must wait stops the rest behind it."""
    clock = ManualClock()
    backend = make_backend(unknown, clock)
    await answered(backend, await ticket(backend, KEY, Cost(0)), tokens_left(600, 600))
    admissions = await backend.try_admit(KEY, [Cost(200), Cost(300), Cost(200), Cost(10)])
    assert [t.cost.tokens for t in admissions.tickets] == [200, 300]
    assert admissions.tickets[0].seq < admissions.tickets[1].seq
    assert admissions.wait == pytest.approx(10.0)  # 100 short, at 600 per minute
    await clock.advance(10.0)
    rest = await backend.try_admit(KEY, [Cost(200), Cost(10)])
    assert [t.cost.tokens for t in rest.tickets] == [200]


async def test_a_cost_larger_than_the_bucket_stops_a_batch_then_fails_alone(
    make_backend: MakeBackend,
) -> None:
    """The costs before it are admitted; asked again, the too-large one is refused."""
    backend = make_backend(unknown, ManualClock())
    await answered(backend, await ticket(backend, KEY, Cost(0)), tokens_left(1000, 1000))
    admissions = await backend.try_admit(KEY, [Cost(10), Cost(2000), Cost(10)])
    assert [t.cost.tokens for t in admissions.tickets] == [10]
    assert admissions.wait == 0
    with pytest.raises(RequestTooLargeError):
        await backend.try_admit(KEY, [Cost(2000), Cost(10)])


async def test_request_larger_than_the_whole_bucket_is_refused(make_backend: MakeBackend) -> None:
    """Waiting can never admit 2,000 tokens into a 1,000-token bucket."""
    backend = make_backend(unknown, ManualClock())
    await answered(backend, await ticket(backend, KEY, Cost(0)), tokens_left(1000, 1000))
    with pytest.raises(RequestTooLargeError) as caught:
        await admit_one(backend, KEY, Cost(2000))
    assert caught.value.limit == 1000


async def test_keys_are_independent(make_backend: MakeBackend) -> None:
    """A drained or cooling key does not hold another model's key."""
    backend = make_backend(unknown, ManualClock())
    await backend.cool_down(KEY, 60.0)
    await ticket(backend, OTHER, Cost(10))


def listening_pair(make_backend: MakeBackend) -> tuple[LimitBackend, LimitBackend, Heard]:
    """A backend, a second client of its state, and what the second one hears."""
    backend = make_backend(unknown, ManualClock())
    other = make_backend.peer(backend)
    heard = Heard()
    other.subscribe(heard)
    return backend, other, heard


async def test_a_renewed_lease_keeps_its_place_past_its_first_term(
    make_backend: MakeBackend,
) -> None:
    """A long request renews its lease: it still counts in flight after the first term."""
    clock = ManualClock()
    backend = make_backend(unknown, clock)
    long_request = await ticket(backend, KEY, Cost(10))
    await clock.advance(POLICY.lease_seconds * 2 / 3)
    await backend.renew(KEY, [long_request])
    await clock.advance(POLICY.lease_seconds * 2 / 3)
    assert await admit_one(backend, KEY, Cost(10)) == pytest.approx(POLICY.lease_seconds / 3)
    await clock.advance(POLICY.lease_seconds / 3)
    await ticket(backend, KEY, Cost(10))


async def test_renewing_a_handed_back_lease_does_not_revive_it(make_backend: MakeBackend) -> None:
    """A renewal racing the hand-back leaves the place free."""
    backend = make_backend(unknown, ManualClock())
    sent = await ticket(backend, KEY, Cost(10))
    await backend.complete(KEY, sent, None, answered=False, succeeded=False)
    await backend.renew(KEY, [sent])
    await ticket(backend, KEY, Cost(10))


async def test_many_concurrent_clients_never_admit_more_than_the_bucket(
    make_backend: MakeBackend,
) -> None:
    """200 admissions raced from 4 clients into a 1,000-token bucket: exactly 100 of 10."""
    backend = make_backend(unknown, ManualClock())
    clients = [backend, *(make_backend.peer(backend) for _ in range(3))]
    probe = await ticket(backend, KEY, Cost(0))
    await answered(backend, probe, tokens_left(1000, 1000))
    replies = await asyncio.gather(*(admit_one(clients[i % 4], KEY, Cost(10)) for i in range(200)))
    tickets = [reply for reply in replies if isinstance(reply, Ticket)]
    assert len(tickets) == 100
    assert len({ticket.seq for ticket in tickets}) == 100


async def test_a_breaker_opened_by_one_client_stops_the_other(make_backend: MakeBackend) -> None:
    """Opened once, for every client: the other hears it and its next admission is refused."""
    backend, other, heard = listening_pair(make_backend)
    await ticket(other, KEY, Cost(10))  # the other client is at work before it opens
    assert await backend.open_breaker(KEY.identity, QUOTA)
    assert not await other.open_breaker(KEY.identity, QUOTA)
    await heard.until(lambda: (KEY.identity, QUOTA) in heard.breakers)
    with pytest.raises(QuotaExhaustedError, match="exceeded your quota") as refused:
        await admit_one(other, OTHER, Cost(10))
    assert refused.value.details == QUOTA
    await ticket(other, BucketKey("key-b", "gpt-4o"), Cost(10))  # other identities go on


async def test_a_breaker_reset_by_one_client_lets_the_other_send(
    make_backend: MakeBackend,
) -> None:
    """Reset once, for every client: the other hears it and admits again."""
    backend, other, heard = listening_pair(make_backend)
    await ticket(other, KEY, Cost(10))
    await backend.open_breaker(KEY.identity, QUOTA)
    await backend.reset_breaker(None)
    await heard.until(lambda: heard.breakers[-1:] == [(KEY.identity, None)])
    await ticket(other, OTHER, Cost(10))


async def test_a_handed_back_probe_is_heard_by_the_other_client(
    make_backend: MakeBackend,
) -> None:
    """Capacity returned through one client reaches the waiters of the other."""
    backend, other, heard = listening_pair(make_backend)
    probe = await ticket(backend, KEY, Cost(10))
    assert isinstance(await admit_one(other, KEY, Cost(10)), float)
    await backend.complete(KEY, probe, None, answered=True, succeeded=True)
    await heard.until(lambda: KEY in heard.capacity)
    await ticket(other, KEY, Cost(10))


async def test_token_429s_without_headers_raise_the_token_scale_once_per_scale(
    make_backend: MakeBackend,
) -> None:
    """The server refuses for tokens, no headers to correct: estimates grow 3% per new scale."""
    clock = ManualClock()
    backend = make_backend(lambda _key: Limits(tpm=600), clock)  # 10 tokens a second
    probe = await ticket(backend, KEY, Cost(0))
    await answered(backend, probe, None)  # no headers: paced by the configured TPM
    await clock.advance(10)
    refused = await ticket(backend, KEY, Cost(100))
    await backend.refused(KEY, refused, Refusal.TOKENS)
    await backend.refused(KEY, refused, Refusal.TOKENS)  # the same refusal again: nothing new
    assert await admit_one(backend, KEY, Cost(100)) == pytest.approx(10.3)
    await clock.advance(10.3)
    again = await ticket(backend, KEY, Cost(100))
    await backend.refused(KEY, again, Refusal.TOKENS)
    assert await admit_one(backend, KEY, Cost(100)) == pytest.approx(100 * 1.03**2 / 10)


async def test_token_429s_change_nothing_once_headers_teach_the_limits(
    make_backend: MakeBackend,
) -> None:
    """With headers the level and the scale come from them, not from refusals."""
    clock = ManualClock()
    backend = make_backend(unknown, clock)
    probe = await ticket(backend, KEY, Cost(0))
    await answered(backend, probe, tokens_left(600, 100))
    refused = await ticket(backend, KEY, Cost(100))
    await backend.refused(KEY, refused, Refusal.TOKENS)
    assert await admit_one(backend, KEY, Cost(100)) == pytest.approx(10.0)
