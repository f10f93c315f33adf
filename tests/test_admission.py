"""Tests for the admission queue, on a hand-driven clock (no real sleeping)."""

import asyncio
from collections.abc import Sequence

import pytest

from throttle import BucketKey, MemoryBackend, QuotaExhaustedError
from throttle.admission import Admission
from throttle.errors import ErrorDetails
from throttle.headers import LimitReading, RateLimitSnapshot
from throttle.limit_settings import AdmissionPolicy
from throttle.reservation import Admissions, Cost, Ticket
from throttle.testing import ManualClock

KEY = BucketKey("key-test", "gpt-4o")


class CountingBackend(MemoryBackend):
    """The real in-memory backend, counting how often admission asks it."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(policy=AdmissionPolicy(reserve_fraction=0.0), clock=clock)
        self.asked = 0

    async def try_admit(self, key: BucketKey, costs: Sequence[Cost]) -> Admissions:
        """Count, then delegate."""
        self.asked += 1
        return await super().try_admit(key, costs)


async def learned_admission(
    rpm: float,
    *,
    max_in_flight: int = 100,
) -> tuple[Admission, CountingBackend, ManualClock]:
    """An admission whose key learned `rpm` requests per minute and has none left."""
    clock = ManualClock()
    backend = CountingBackend(clock)
    admission = Admission(backend, clock, max_in_flight)
    probe = await admission.admit(KEY, Cost(0), 0, -1)
    snapshot = RateLimitSnapshot(requests=LimitReading(rpm, 0))
    await admission.release(KEY, probe, snapshot, answered=True, succeeded=True)
    return admission, backend, clock


async def admit_in_order(
    admission: Admission, clock: ManualClock, waiters: list[tuple[int, int]], seconds: int
) -> list[int]:
    """Queue (priority, seq) waiters, run the clock second by second, return admission order."""
    order: list[int] = []

    async def admit(priority: int, seq: int) -> None:
        await admission.admit(KEY, Cost(0), priority, seq)
        order.append(seq)

    tasks = [asyncio.create_task(admit(p, s)) for p, s in waiters]
    await clock.advance(0)
    for _ in range(seconds):
        await clock.advance(1)
    await asyncio.gather(*tasks)
    return order


async def test_waiters_are_admitted_first_come_first_served() -> None:
    """Within one priority, admission follows submission order."""
    admission, _, clock = await learned_admission(rpm=60)
    order = await admit_in_order(admission, clock, [(0, s) for s in range(5)], seconds=5)
    assert order == [0, 1, 2, 3, 4]


async def test_smaller_priority_goes_first() -> None:
    """Priority 0 waiters pass priority 1 waiters queued before them."""
    admission, _, clock = await learned_admission(rpm=60)
    order = await admit_in_order(admission, clock, [(1, 0), (1, 1), (0, 2), (0, 3)], seconds=4)
    assert order == [2, 3, 0, 1]


async def test_waiters_at_the_head_are_asked_for_in_one_backend_call() -> None:
    """Ten waiters queued behind a probe: when room comes, one call admits them, in order."""
    clock = ManualClock()
    backend = CountingBackend(clock)
    admission = Admission(backend, clock, max_in_flight=100)
    probe = await admission.admit(KEY, Cost(0), 0, -1)  # limits unknown: the rest queue
    tasks = [asyncio.create_task(admission.admit(KEY, Cost(0), 0, s)) for s in range(10)]
    await clock.advance(0)
    assert admission.waiting() == 10
    asked_before = backend.asked
    roomy = RateLimitSnapshot(requests=LimitReading(1000, 1000))
    await admission.release(KEY, probe, roomy, answered=True, succeeded=True)
    await clock.advance(0)
    tickets = [task.result() for task in tasks]
    assert backend.asked - asked_before == 1
    assert [ticket.seq for ticket in tickets] == sorted(ticket.seq for ticket in tickets)


async def test_with_room_and_nobody_waiting_admission_is_one_call_and_no_task() -> None:
    """The fast path: no pump task, no waiter left behind, one backend call per admission."""
    clock = ManualClock()
    backend = CountingBackend(clock)
    admission = Admission(backend, clock, max_in_flight=100)
    probe = await admission.admit(KEY, Cost(0), 0, -1)
    roomy = RateLimitSnapshot(requests=LimitReading(1000, 1000))
    await admission.release(KEY, probe, roomy, answered=True, succeeded=True)
    tasks_before, asked_before = len(asyncio.all_tasks()), backend.asked
    tickets = [await admission.admit(KEY, Cost(0), 0, s) for s in range(5)]
    assert len(asyncio.all_tasks()) == tasks_before
    assert backend.asked - asked_before == 5
    assert admission.load()[KEY].in_flight == 5
    for ticket in tickets:
        await admission.release(KEY, ticket, None, answered=True, succeeded=True)
    assert admission.waiting() == 0


async def test_a_batch_takes_only_the_in_flight_places_that_are_free() -> None:
    """With 3 places, 5 waiters: 3 admitted at once, the others when places come back."""
    clock = ManualClock()
    admission = Admission(MemoryBackend(clock=clock), clock, max_in_flight=3)
    tasks = [asyncio.create_task(admission.admit(KEY, Cost(0), 0, s)) for s in range(5)]
    await clock.advance(0)
    probe = tasks[0].result()  # unknown limits: one probe first
    roomy = RateLimitSnapshot(requests=LimitReading(1000, 1000))
    await admission.release(KEY, probe, roomy, answered=True, succeeded=True)
    await clock.advance(0)
    assert [task.done() for task in tasks] == [True, True, True, True, False]
    await admission.release(KEY, tasks[1].result(), None, answered=True, succeeded=True)
    await clock.advance(0)
    assert tasks[4].done()
    assert admission.waiting() == 0


async def test_admission_waits_exactly_as_long_as_the_bucket_needs() -> None:
    """At 60 RPM with an empty bucket the first waiter is admitted after one second."""
    admission, _, clock = await learned_admission(rpm=60)
    task = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 0))
    await clock.advance(0.99)
    assert not task.done()
    await clock.advance(0.02)
    assert isinstance(task.result(), Ticket)


async def test_waiting_does_not_poll() -> None:
    """A waiter due in 30 s costs one backend call, not one per tick."""
    admission, backend, clock = await learned_admission(rpm=2)
    asked_before = backend.asked
    task = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 0))
    for _ in range(29):
        await clock.advance(1)
    assert backend.asked - asked_before == 1
    await clock.advance(1)
    assert task.done()
    assert backend.asked - asked_before == 2


async def test_cancelled_waiter_does_not_block_or_consume() -> None:
    """A caller that gives up leaves the queue; the next waiter takes its turn."""
    admission, _, clock = await learned_admission(rpm=60)
    quitter = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 0))
    stayer = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 1))
    await clock.advance(0.5)
    quitter.cancel()
    await clock.advance(0.6)
    assert quitter.cancelled()
    assert isinstance(stayer.result(), Ticket)


async def test_in_flight_cap_holds_admission_until_a_release() -> None:
    """With max_in_flight=2 the third attempt waits for one of the first two to finish."""
    clock = ManualClock()
    admission = Admission(MemoryBackend(clock=clock), clock, max_in_flight=2)
    first = await admission.admit(KEY, Cost(0), 0, 0)
    await admission.release(
        KEY,
        first,
        RateLimitSnapshot(requests=LimitReading(1e6, 1e6)),
        answered=True,
        succeeded=True,
    )
    held = [await admission.admit(KEY, Cost(0), 0, s) for s in (1, 2)]
    third = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 3))
    await clock.advance(0)
    assert not third.done()
    await admission.release(KEY, held[0], None, answered=True, succeeded=True)
    await clock.advance(0)
    assert isinstance(third.result(), Ticket)


async def test_fail_waiting_fails_every_queued_attempt_of_matching_keys() -> None:
    """Opening a breaker fails the queue at once with the breaker's error."""
    admission, _, clock = await learned_admission(rpm=1)
    details = ErrorDetails(429, "insufficient_quota", "insufficient_quota", "no money")
    tasks = [asyncio.create_task(admission.admit(KEY, Cost(0), 0, s)) for s in range(3)]
    await clock.advance(0)
    failed = admission.fail_waiting(
        lambda key: key.identity == KEY.identity, lambda: QuotaExhaustedError(details)
    )
    assert failed == 3
    for task in tasks:
        with pytest.raises(QuotaExhaustedError, match="no money"):
            await task
    assert admission.waiting() == 0


async def test_an_attempt_held_longer_than_its_lease_keeps_its_place_by_renewing() -> None:
    """A probe still running after 2.5 leases still holds the key: it is renewed, not lost."""
    clock = ManualClock()
    backend = MemoryBackend(policy=AdmissionPolicy(lease_seconds=30.0), clock=clock)
    admission = Admission(backend, clock, 10)
    long_probe = await admission.admit(KEY, Cost(0), 0, 0)
    second = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 1))
    for _ in range(75):
        await clock.advance(1)
    assert not second.done()
    await admission.release(KEY, long_probe, None, answered=True, succeeded=True)
    await clock.advance(0)
    assert isinstance(await second, Ticket)
    await admission.close()


async def test_an_attempt_never_handed_back_frees_its_place_after_one_lease() -> None:
    """Without renewal (its worker vanished), the probe's place returns after the lease."""
    clock = ManualClock()
    backend = MemoryBackend(policy=AdmissionPolicy(lease_seconds=30.0), clock=clock)
    vanished = Admission(backend, clock, 10)
    await vanished.admit(KEY, Cost(0), 0, 0)
    await vanished.close()  # its renewals stop, as a crashed worker's would
    survivor = Admission(backend, clock, 10)
    waiting = asyncio.create_task(survivor.admit(KEY, Cost(0), 0, 1))
    await clock.advance(29)
    assert not waiting.done()
    await clock.advance(1)
    assert isinstance(await waiting, Ticket)
    await survivor.close()


async def test_a_waiter_cancelled_while_its_pump_waits_for_a_slot_is_never_charged() -> None:
    """One place in flight, held; the queued waiter leaves: the backend is not asked for it."""
    admission, backend, clock = await learned_admission(rpm=6000, max_in_flight=1)
    await clock.advance(1)
    held = await admission.admit(KEY, Cost(0), 0, 0)
    leaving = asyncio.create_task(admission.admit(KEY, Cost(0), 0, 1))
    await clock.advance(0)  # queued; its pump waits for the one place
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    asked = backend.asked
    await admission.release(KEY, held, None, answered=True, succeeded=True)
    await clock.advance(0)
    assert backend.asked == asked
    assert admission.waiting() == 0
