"""Waiting for room in the buckets: FIFO within a priority, one pump per key, no polling.

When a key has room and nobody waits on it, an attempt is admitted by one backend call from the
caller's own task: no waiter, no future, no pump (the fast path; on a shared backend the call
still is one round trip, shielded by ``shielded_admission`` so that what it admits for a caller
who left meanwhile is handed back). Otherwise it queues. Each key has a heap of waiters and,
while it is not empty, one pump task. The pump asks the backend for the waiters at the head, up
to :data:`ADMIT_AT_ONCE` in one call (one round trip to a shared backend, however many are
admitted), and sleeps exactly as long as the backend says, or until something changes (an
answer corrected the buckets, a more urgent waiter arrived). A waiter costs one small object
and one future.

An admitted attempt is held until it is handed back, its lease renewed meanwhile
(``held_tickets``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from throttle.backend import LimitBackend
from throttle.clock import Clock
from throttle.errors import ClosedError, ThrottleError
from throttle.headers import RateLimitSnapshot
from throttle.held_tickets import HeldTickets
from throttle.keys import BucketKey
from throttle.pacing import Refusal
from throttle.reservation import Cost, Ticket
from throttle.shielded_admission import ShieldedAdmissions

logger = logging.getLogger(__name__)
ADMIT_AT_ONCE = 32  # waiters asked for in one backend call


class _Waiter(NamedTuple):
    """A queued attempt; a named tuple so the heap compares ``(priority, seq)`` in C.

    ``seq`` is unique, so a comparison never reaches ``cost``.
    """

    priority: int
    seq: int
    cost: Cost
    future: asyncio.Future[Ticket]


@dataclass(frozen=True, slots=True)
class KeyLoad:
    """How busy one key is: attempts waiting for admission, and admitted ones not answered."""

    queued: int
    in_flight: int


class _KeyQueue:
    def __init__(self) -> None:
        self.heap: list[_Waiter] = []
        self.asking: list[_Waiter] = []  # taken from the heap while the backend decides
        self.wakeup = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None


class Admission:
    """Admits attempts to their keys' buckets in order, at most ``max_in_flight`` at a time.

    Args:
        backend: where the buckets live.
        clock: time source.
        max_in_flight: attempts admitted and not yet answered, over all keys.
    """

    def __init__(self, backend: LimitBackend, clock: Clock, max_in_flight: int) -> None:
        self._backend = backend
        self._clock = clock
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queues: dict[BucketKey, _KeyQueue] = {}
        self._held = HeldTickets(backend, clock)
        self._shielded = ShieldedAdmissions(backend, self.wake)  # fast path, shared backend
        self._closed = False

    def __repr__(self) -> str:
        waiting = {str(k): n for k, q in self._queues.items() if (n := _queued(q))}
        return f"Admission(waiting={waiting})"

    def waiting(self) -> int:
        """Return how many attempts are queued over all keys."""
        return sum(_queued(q) for q in self._queues.values())

    def load(self) -> dict[BucketKey, KeyLoad]:
        """Return each key's load (keys with nothing queued or in flight are left out).

        Safe from another thread (a metrics server's): it reads copies taken in one step.
        """
        loads = {key: KeyLoad(n, 0) for key, q in list(self._queues.items()) if (n := _queued(q))}
        for key, in_flight in self._held.counts().items():
            loads[key] = KeyLoad(loads[key].queued if key in loads else 0, in_flight)
        return loads

    async def admit(self, key: BucketKey, cost: Cost, priority: int, seq: int) -> Ticket:
        """Wait until ``key``'s buckets have room for ``cost``, then return the ticket.

        Args:
            key: the buckets to draw from.
            cost: what the attempt draws.
            priority: smaller goes first; equal priorities go in ``seq`` order.
            seq: the request's submission order (kept across retries, so a retry goes first).

        Raises:
            RequestTooLargeError: the cost exceeds a whole bucket.
            QuotaExhaustedError: the key's credential ran out of quota while waiting.
            ClosedError: admission was closed before or while waiting.
        """
        if self._closed:
            raise ClosedError("this Throttle is closed; no request is sent")
        queue = self._queues.get(key)
        known_wait = 0.0  # what the fast path just heard: the pump need not ask again at once
        if (queue is None or not _queued(queue)) and not self._slots.locked():
            admitted = await self._admit_now(key, cost)
            if self._closed:  # closed while a shared backend decided: nothing more goes out
                if isinstance(admitted, Ticket):
                    await self.release(key, admitted, None, answered=False, succeeded=False)
                raise ClosedError("the Throttle was closed while this request waited")
            if isinstance(admitted, Ticket):
                return admitted
            known_wait = admitted
            queue = self._queues.get(key)  # the call may have let others queue meanwhile
        if queue is None:
            queue = self._queues[key] = _KeyQueue()
        waiter = _Waiter(priority, seq, cost, asyncio.get_running_loop().create_future())
        heapq.heappush(queue.heap, waiter)
        if queue.heap[0] is waiter and (not queue.asking or waiter < queue.asking[0]):
            queue.wakeup.set()  # more urgent than the head: the pump asks for it now
        if queue.pump is None:
            if known_wait > 0:
                queue.wakeup.clear()  # set for this very waiter, whose wait is known
            queue.pump = asyncio.create_task(
                self._pump(key, queue, known_wait), name=f"throttle-pump-{key}"
            )
        try:
            # Not shielded: a caller who leaves cancels its future, which the pump then skips.
            return await waiter.future
        except asyncio.CancelledError:
            if self._was_admitted(waiter):  # just as the caller gave up: hand the charge back
                await self.release(
                    key, waiter.future.result(), None, answered=False, succeeded=False
                )
            raise

    @staticmethod
    def _was_admitted(waiter: _Waiter) -> bool:
        future = waiter.future
        return future.done() and not future.cancelled() and future.exception() is None

    async def _admit_now(self, key: BucketKey, cost: Cost) -> Ticket | float:
        """Admit ``cost`` at once with one backend call (the fast path), or say how long to wait.

        The wait is 0 unless the backend answers at once: on a shared one, things may have
        changed during the call, and the pump asks again.
        """
        await self._slots.acquire()  # never suspends: a free slot was seen just before
        try:
            if self._backend.answers_at_once:
                admissions = await self._backend.try_admit(key, [cost])
            else:
                admissions = await self._shielded.try_admit(key, cost)
        except BaseException:
            self._slots.release()
            raise
        if not admissions.tickets:
            self._slots.release()
            return admissions.wait if self._backend.answers_at_once else 0.0
        ticket = admissions.tickets[0]
        self._held.hold(key, ticket)
        return ticket

    async def release(
        self,
        key: BucketKey,
        ticket: Ticket,
        snapshot: RateLimitSnapshot | None,
        *,
        answered: bool,
        succeeded: bool,
    ) -> bool:
        """Hand back a ticket (see :meth:`LimitBackend.complete`) and wake the key's queue."""
        self._slots.release()
        self._held.drop(key, ticket)
        try:
            return await self._backend.complete(
                key, ticket, snapshot, answered=answered, succeeded=succeeded
            )
        finally:
            self.wake(key)

    async def cool_down(self, key: BucketKey, seconds: float) -> None:
        """Admit nothing on ``key`` for ``seconds`` from now."""
        await self._backend.cool_down(key, seconds)

    async def refused(self, key: BucketKey, ticket: Ticket, refusal: Refusal) -> None:
        """The server refused ``ticket``'s attempt for speed (see the backend)."""
        await self._backend.refused(key, ticket, refusal)

    def wake(self, key: BucketKey | None = None) -> None:
        """Make ``key``'s pump (every pump for ``None``) look at its head waiter again."""
        queues = self._queues.values() if key is None else [self._queues.get(key)]
        for queue in queues:
            if queue is not None:
                queue.wakeup.set()

    def fail_waiting(
        self, matches: Callable[[BucketKey], bool], error_for: Callable[[], ThrottleError]
    ) -> int:
        """Fail every queued attempt on keys that ``matches``; return how many."""
        failed = 0
        for key, queue in self._queues.items():
            if not matches(key):
                continue
            for waiter in [*queue.asking, *queue.heap]:
                if not waiter.future.done():
                    waiter.future.set_exception(error_for())
                    failed += 1
            queue.heap.clear()
            queue.wakeup.set()
        return failed

    async def close(self) -> None:
        """Refuse new attempts, fail queued ones with :class:`ClosedError`, stop every pump."""
        self._closed = True
        self.fail_waiting(
            lambda _key: True,
            lambda: ClosedError("the Throttle was closed while this request waited"),
        )
        pumps = [q.pump for q in self._queues.values() if q.pump is not None]
        renewer = self._held.renewer()
        if renewer is not None:
            pumps.append(renewer)
        for pump in pumps:
            pump.cancel()
        # gather, not suppress(CancelledError): a cancellation of close() itself goes on.
        await asyncio.gather(*pumps, return_exceptions=True)
        await self._shielded.finish()

    async def _pump(self, key: BucketKey, queue: _KeyQueue, first_wait: float = 0.0) -> None:
        try:
            if first_wait > 0:
                await self._clock.wait(queue.wakeup, first_wait)
            while queue.heap:
                head = queue.heap[0]
                if head.future.done():
                    heapq.heappop(queue.heap)
                    continue
                queue.wakeup.clear()
                await self._slots.acquire()
                if not queue.heap or queue.heap[0].future.done():
                    self._slots.release()  # failed or cancelled while this pump waited: look again
                    continue
                queue.asking = await self._take_heads(queue.heap)
                try:
                    wait = await self._admit_heads(key, queue.asking)
                finally:
                    for waiter in queue.asking:  # not admitted: back in line, in order
                        self._slots.release()
                        if not waiter.future.done():
                            heapq.heappush(queue.heap, waiter)
                    queue.asking = []
                if wait > 0:
                    await self._clock.wait(queue.wakeup, wait)
        finally:
            queue.pump = None

    async def _take_heads(self, heap: list[_Waiter]) -> list[_Waiter]:
        """Take the most urgent waiters from ``heap``, one in-flight slot each (one is held).

        Only slots free right now are taken (``acquire`` of an unlocked semaphore never waits).
        """
        heads = [heapq.heappop(heap)]
        while len(heads) < ADMIT_AT_ONCE and heap and not self._slots.locked():
            waiter = heapq.heappop(heap)
            if not waiter.future.done():
                await self._slots.acquire()
                heads.append(waiter)
        return heads

    async def _admit_heads(self, key: BucketKey, asking: list[_Waiter]) -> float:
        """Admit what the backend admits of ``asking`` (removed from it); return the wait."""
        try:
            admissions = await self._backend.try_admit(key, [w.cost for w in asking])
        except Exception as error:
            if not isinstance(error, ThrottleError):
                logger.exception("bucket backend failed admitting on %s", key)
            head = asking.pop(0)
            self._slots.release()
            if not head.future.done():
                head.future.set_exception(error)
            return 0.0
        admitted, asking[:] = asking[: len(admissions.tickets)], asking[len(admissions.tickets) :]
        for waiter, ticket in zip(admitted, admissions.tickets, strict=True):
            if waiter.future.done():
                # The caller left while the backend was deciding: hand the charge straight back.
                await self.release(key, ticket, None, answered=False, succeeded=False)
            else:
                waiter.future.set_result(ticket)
                self._held.hold(key, ticket)
        return max(admissions.wait, math.ulp(1.0)) if asking else 0.0


def _queued(queue: _KeyQueue) -> int:
    return len(queue.heap) + len(queue.asking)
