"""The reference client: a small client that follows the rate-limit headers well.

It keeps a copy of the server's requests and tokens buckets (limit from
``x-ratelimit-limit-*``, refilling at limit / 60 s), takes each request's estimate from it
before sending, and on every answer (429s included) resets the copy to what the server said
was left, less what was sent since that request left and plus what refilled meanwhile; what
the copy keeps finding taken by someone else (another client on the key) it learns as a
slower refill. Until the first headers it sends one request and waits for its answer. A 429
sends the request back to the head of the line; 5xx and dropped connections are retried
after 0.25 s x attempt, 6 attempts at most. It counts tokens as the rate limiter does
(characters / 4, 4 per message: :func:`benchmarks.baseline_clients.character_count`), so
its estimates match the charges and every loss it shows is pacing. No cap on requests in
flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from benchmarks.baseline_clients import RETRYABLE, Body, Tally, post_once

OTHERS_AT_MOST = 0.9
"""The most of a limit others are taken to use: the copy always refills, if slowly. (Learned
without a bound, a burst of surprises when the limit halved once put ``others`` above the
whole refill: the copy never refilled, nothing was sent, no answer came to correct it, and
the client stood still until killed.)"""


@dataclass(slots=True)
class MirrorBucket:
    """A copy of one of the server's buckets, as the headers describe it.

    It refills at limit / 60 s less what others on the key were seen to take (``others``,
    units per second): every correction's surprise (the copy was fuller than the server
    said) is summed over a second and half of it added to ``others``; a copy found too
    empty takes it back the same way.
    """

    capacity: float = 0.0
    level: float = 0.0
    at: float = 0.0
    others: float = 0.0
    surprise: float = 0.0
    since: float = 0.0

    @property
    def rate(self) -> float:
        """Units per second the copy refills at: the limit's, less what others take."""
        return max(0.0, self.capacity / 60 - self.others)

    def level_at(self, now: float) -> float:
        """Refill to ``now`` (capped at the limit) and return the level."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        return self.level

    def correct(self, level: float, now: float) -> None:
        """Take the server's word for the level now; learn what others take."""
        self.surprise += self.level_at(now) - level
        self.level = min(self.capacity, level)
        if now - self.since >= 1.0:
            if self.since:
                learned = self.others + self.surprise / (now - self.since) / 2
                self.others = min(max(0.0, learned), OTHERS_AT_MOST * self.capacity / 60)
            self.surprise, self.since = 0.0, now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is there, at the rate the copy refills."""
        missing = min(amount, self.capacity) - self.level_at(now)
        return max(0.0, missing / self.rate) if self.capacity else 0.0


class ReferenceClient:
    """Paces by the server's own account of its buckets (see the module docstring)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, estimate: Callable[[Body], int]):
        self.session, self.url, self.estimate = session, url, estimate
        self.requests, self.tokens = MirrorBucket(), MirrorBucket()
        self.spent = [0.0, 0.0]  # requests and tokens sent so far, for the corrections
        self.known = False
        self.in_flight = 0
        self.busy = 0  # requests sent and not yet settled (answered, re-queued or failed)
        self.changed = asyncio.Event()
        self.tally = Tally()

    def __repr__(self) -> str:
        return f"ReferenceClient(tokens={self.tokens}, in_flight={self.in_flight})"

    async def run(self, bodies: list[Body]) -> Tally:
        """Send every body; return how they ended."""
        line: deque[tuple[Body, int, int]] = deque((b, self.estimate(b), 1) for b in bodies)
        tasks: set[asyncio.Task[None]] = set()
        while line or self.busy:
            wait: float | None = None  # until an answer changes something
            if line and (self.known or not self.busy):
                body, cost, attempt = line[0]
                now = time.monotonic()
                wait = max(self.requests.wait_for(1, now), self.tokens.wait_for(cost, now))
                if wait <= 0:
                    line.popleft()
                    spent = self._take(cost, now)
                    self.busy += 1
                    task = asyncio.create_task(self._send(body, cost, attempt, spent, line))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    continue
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait)
        return self.tally

    def _take(self, cost: int, now: float) -> tuple[float, float]:
        """Take a request's estimate from the copies; return what was sent, this one included."""
        self.requests.level_at(now)
        self.tokens.level_at(now)
        self.requests.level -= 1
        self.tokens.level -= cost
        self.spent = [self.spent[0] + 1, self.spent[1] + cost]
        return self.spent[0], self.spent[1]

    async def _send(
        self,
        body: Body,
        cost: int,
        attempt: int,
        spent: tuple[float, float],
        line: deque[tuple[Body, int, int]],
    ) -> None:
        sent_at = time.monotonic()
        self.in_flight += 1
        try:
            status, headers = await post_once(self.session, self.url, body)
            self.in_flight -= 1
            self._learn(headers, sent_at, spent)
            if status == 200:
                self.tally.success()
            elif status == 429:
                line.appendleft((body, cost, attempt))
            elif (status in RETRYABLE or status == 0) and attempt < 6:
                await asyncio.sleep(0.25 * attempt)
                line.appendleft((body, cost, attempt + 1))
            else:
                self.tally.failed += 1
                self.tally.errors[str(status)] += 1
        finally:
            self.busy -= 1
            self.changed.set()

    def _learn(self, headers: Mapping[str, str], sent_at: float, spent: tuple[float, ...]) -> None:
        """Reset each copy to the server's remaining, less what was sent after this request."""
        now = time.monotonic()
        for index, (kind, bucket) in enumerate(
            (("requests", self.requests), ("tokens", self.tokens))
        ):
            limit = headers.get(f"x-ratelimit-limit-{kind}")
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if limit is None or remaining is None:
                continue
            self.known = True
            if float(limit) != bucket.capacity:  # a new limit: what others take is unknown
                bucket.capacity, bucket.others, bucket.surprise, bucket.since = (
                    float(limit),
                    0,
                    0,
                    now,
                )
            refilled = (now - sent_at) * bucket.rate
            bucket.correct(float(remaining) + refilled - (self.spent[index] - spent[index]), now)
