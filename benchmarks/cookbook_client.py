"""The cookbook design: a fixed client-side budget, no header feedback, a pause after a 429.

As the OpenAI cookbook's ``api_request_parallel_processor.py`` works (written from that
description, no code copied): a budget of RPM and TPM given by the user (here the starting
limits), full at start and refilled continuously, taken per request (tiktoken prompt count
with 4 per message and 2 for the reply, plus ``max_tokens``), never corrected by the
server's headers; any error retries the request (5 attempts), and after a 429 nothing is
sent until a fixed pause (15 s) has passed since the last one. The main loop looks for work
every millisecond. No cap on requests in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from benchmarks.baseline_clients import Body, Tally, post_once


class CookbookClient:
    """The cookbook's fixed client-side budget (see the module docstring)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        estimate: Callable[[Body], int],
        *,
        rpm: float,
        tpm: float,
        pause_seconds: float = 15.0,
        attempts: int = 5,
    ):
        self.session, self.url, self.estimate = session, url, estimate
        self.rpm, self.tpm, self.pause_seconds, self.attempts = rpm, tpm, pause_seconds, attempts
        self.last_rate_limit = -float("inf")
        self.tally = Tally()

    def __repr__(self) -> str:
        return f"CookbookClient(rpm={self.rpm}, tpm={self.tpm}, pause={self.pause_seconds})"

    async def run(self, bodies: list[Body]) -> Tally:
        """Send every body; return how they ended."""
        fresh = deque(bodies)
        retries: deque[tuple[Body, int]] = deque()
        requests, tokens, checked = self.rpm, self.tpm, time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        pending: tuple[Body, int] | None = None
        while fresh or retries or tasks or pending:
            if pending is None and (retries or fresh):
                pending = retries.popleft() if retries else (fresh.popleft(), self.attempts)
            now = time.monotonic()
            requests = min(self.rpm, requests + (now - checked) * self.rpm / 60)
            tokens = min(self.tpm, tokens + (now - checked) * self.tpm / 60)
            checked = now
            if pending is not None:
                cost = self.estimate(pending[0])
                if requests >= 1 and tokens >= cost:
                    requests, tokens = requests - 1, tokens - cost
                    task = asyncio.create_task(self._send(*pending, retries))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    pending = None
            await asyncio.sleep(0.001)
            cooling = self.pause_seconds - (time.monotonic() - self.last_rate_limit)
            if cooling > 0:
                await asyncio.sleep(cooling)
        return self.tally

    async def _send(self, body: Body, attempts_left: int, retries: deque[tuple[Body, int]]) -> None:
        status, _ = await post_once(self.session, self.url, body)
        if status == 200:
            self.tally.success()
            return
        if status == 429:
            self.last_rate_limit = time.monotonic()
        if attempts_left > 1:
            retries.append((body, attempts_left - 1))
        else:
            self.tally.failed += 1
            self.tally.errors[str(status)] += 1
