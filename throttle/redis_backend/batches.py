"""Script calls shared by the operations of many tasks: what is asked meanwhile goes next.

A process has at most one call of ``limits.lua`` on its way per identity (the unit the script
works on: one hash slot). Operations its tasks ask for meanwhile (admissions, hand-backs,
renewals) queue, and all go in the next call when it returns, in the order they were asked;
with nothing on its way, an operation goes at once (on the next turn of the event loop, with
whatever else was asked in the same turn). A round trip costs the client far more than the
arithmetic (redis-py encodes and parses each command, the loop schedules each reply), so many
tasks sharing one trip is what lets one Redis admit thousands per second; an operation waits
at most for the call before it.

No library fits: redis-py's pipelines batch commands a caller already holds, not operations
that independent tasks ask for, and each of them needs its own reply.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

MOST_PER_CALL = 128  # operations in one call: a script blocks the server while it runs


@dataclass(slots=True)
class Operation:
    """One operation of the script, its arguments, and where its reply goes.

    Attributes:
        group: the bucket group it works on ("" for the identity's breaker).
        name: the script's operation ("admit", "complete", ...).
        args: its arguments, as the script reads them.
        reply: resolved with its reply, or failed with the call's error.
    """

    group: str
    name: str
    args: list[str]
    reply: asyncio.Future[Any]


Send = Callable[[str, list[Operation]], Awaitable[list[Any]]]


class Batches:
    """Queues operations per identity and sends each queue with ``send``, one call at a time.

    Args:
        send: runs one batch of one identity's operations; returns one reply per operation.
        most: operations in one call at most.
    """

    def __init__(self, send: Send, most: int = MOST_PER_CALL) -> None:
        self._send = send
        self._most = most
        self._queued: dict[str, deque[Operation]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._closed_by: Exception | None = None

    def __repr__(self) -> str:
        queued = {identity: len(ops) for identity, ops in self._queued.items() if ops}
        return f"Batches(queued={queued}, calls_on_their_way={len(self._senders)})"

    def run(self, identity: str, group: str, name: str, args: list[str]) -> asyncio.Future[Any]:
        """Queue one operation; return the future of its reply."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._closed_by is not None:
            reply.set_exception(self._closed_by)
            return reply
        self._queued.setdefault(identity, deque()).append(Operation(group, name, args, reply))
        if identity not in self._senders:
            self._senders[identity] = asyncio.create_task(
                self._send_queued(identity), name=f"throttle-redis-{identity}"
            )
        return reply

    def _take(self, identity: str) -> list[Operation]:
        """The next batch of ``identity``: the oldest operations whose callers still wait."""
        queued = self._queued.get(identity, deque())
        batch: list[Operation] = []
        while queued and len(batch) < self._most:
            operation = queued.popleft()
            if not operation.reply.done():
                batch.append(operation)
        if not queued:
            self._queued.pop(identity, None)
        return batch

    async def _send_queued(self, identity: str) -> None:
        try:
            while batch := self._take(identity):
                try:
                    replies = await self._send(identity, batch)
                except asyncio.CancelledError:
                    _fail(batch, self._closed_by or ConnectionError("the call was cancelled"))
                    raise
                except Exception as error:  # every operation of the call failed with it
                    _fail(batch, error)
                    continue
                for operation, reply in zip(batch, replies, strict=True):
                    if not operation.reply.done():
                        operation.reply.set_result(reply)
        finally:
            del self._senders[identity]

    async def close(self, error: Exception) -> None:
        """Stop sending: queued operations, and later ones, fail with ``error``."""
        self._closed_by = error
        senders = list(self._senders.values())
        for sender in senders:
            sender.cancel()
        # gather, not suppress(CancelledError): a cancellation of close() itself goes on.
        await asyncio.gather(*senders, return_exceptions=True)
        for queued in self._queued.values():
            _fail(queued, error)
        self._queued.clear()


def _fail(batch: Iterable[Operation], error: Exception) -> None:
    for operation in batch:
        if not operation.reply.done():
            operation.reply.set_exception(error)
