"""Tests for ``Batches``: many tasks' operations share script calls, one call at a time."""

from __future__ import annotations

import asyncio

import pytest

from throttle.redis_backend.batches import Batches, Operation


class Server:
    """Answers each batch with its operations' arguments joined, after ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.failing: Exception | None = None

    async def send(self, identity: str, batch: list[Operation]) -> list[str]:
        """One round trip."""
        self.calls.append([operation.name for operation in batch])
        await self.release.wait()
        if self.failing is not None:
            raise self.failing
        return [f"{identity}/{operation.group}:{','.join(operation.args)}" for operation in batch]


async def test_operations_asked_in_one_turn_go_in_one_call_in_order() -> None:
    """Each operation gets its own reply; the call carries them in the order asked."""
    server = Server()
    batches = Batches(server.send)
    replies = [batches.run("key-a", "gpt-4o", f"op{n}", [str(n)]) for n in range(3)]
    assert await asyncio.gather(*replies) == [f"key-a/gpt-4o:{n}" for n in range(3)]
    assert server.calls == [["op0", "op1", "op2"]]


async def test_what_is_asked_during_a_call_goes_together_in_the_next() -> None:
    """One call on its way per identity; meanwhile operations queue for the next one."""
    server = Server()
    server.release.clear()
    batches = Batches(server.send)
    first = batches.run("key-a", "g", "first", [])
    await asyncio.sleep(0)
    later = [batches.run("key-a", "g", f"later{n}", []) for n in range(3)]
    elsewhere = batches.run("key-b", "g", "other identity", [])
    await asyncio.sleep(0)
    assert server.calls == [["first"], ["other identity"]]
    server.release.set()
    await asyncio.gather(first, elsewhere, *later)
    assert server.calls[2:] == [["later0", "later1", "later2"]]


async def test_a_call_holds_at_most_its_share_of_operations() -> None:
    """250 operations with a limit of 100 per call take three calls."""
    server = Server()
    batches = Batches(server.send, most=100)
    await asyncio.gather(*(batches.run("key-a", "g", "op", []) for _ in range(250)))
    assert [len(call) for call in server.calls] == [100, 100, 50]


async def test_a_failed_call_fails_its_operations_and_not_the_next() -> None:
    """Every operation of the call gets its error; operations asked later still go."""
    server = Server()
    server.failing = ConnectionError("redis went away")
    batches = Batches(server.send)
    replies = [batches.run("key-a", "g", "op", [str(n)]) for n in range(2)]
    for reply in replies:
        with pytest.raises(ConnectionError, match="redis went away"):
            await reply
    server.failing = None
    assert await batches.run("key-a", "g", "op", ["again"]) == "key-a/g:again"


async def test_an_operation_whose_caller_left_is_not_sent() -> None:
    """A caller cancelled before its call went leaves nothing to run."""
    server = Server()
    batches = Batches(server.send)
    left = batches.run("key-a", "g", "left", [])
    stays = batches.run("key-a", "g", "stays", [])
    left.cancel()
    await stays
    assert server.calls == [["stays"]]


async def test_closing_fails_what_is_queued_on_its_way_and_asked_later() -> None:
    """Nobody waits forever on a closed backend: each operation fails with the given error."""
    server = Server()
    server.release.clear()
    batches = Batches(server.send)
    on_its_way = batches.run("key-a", "g", "sent", [])
    await asyncio.sleep(0)
    queued = batches.run("key-a", "g", "queued", [])
    await batches.close(RuntimeError("closed"))
    later = batches.run("key-a", "g", "later", [])
    for reply in (on_its_way, queued, later):
        with pytest.raises(RuntimeError, match="closed"):
            await reply
