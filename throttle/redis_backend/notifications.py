"""What the other processes did, heard on one Redis pub/sub channel and told to listeners.

The Lua script publishes when waiters may go sooner (capacity handed back, headers raised a
level) and when a quota breaker opens; a reset is published by :class:`RedisBackend`. Each
process keeps one subscription, whatever its number of keys and waiters, so waking a waiter
in another process costs one message, not a poll. Pub/sub delivers at most once: after the
subscription drops and comes back, every waiting key is told to ask again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from throttle.backend import Listeners
from throttle.keys import BucketKey
from throttle.redis_backend.script_io import details_of

logger = logging.getLogger(__name__)


class Notifications:
    """One subscription to ``channel``, and the listeners it tells.

    Args:
        client: the Redis client (the subscription takes one connection of its own).
        channel: the channel the script publishes on.
        process: this process's id in ``capacity`` messages (its own are skipped).
        reconnect_seconds: the pause between attempts to subscribe again after a drop.
        listeners: who to tell.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        channel: str,
        process: str,
        reconnect_seconds: float,
        listeners: Listeners,
    ) -> None:
        self._client = client
        self.channel = channel
        self._process = process
        self._reconnect = reconnect_seconds
        self._listeners = listeners
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def __repr__(self) -> str:
        return f"Notifications({self.channel!r}, {self._listeners!r})"

    async def start(self) -> None:
        """Subscribe (once); return when subscribed, or at once if Redis is unreachable."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="throttle-redis-notifications")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._reconnect):
                    await self._subscribed.wait()

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            # gather, not suppress(CancelledError): a cancellation of close() itself goes on.
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _listen(self) -> None:
        dropped = False
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        if message is None:
                            continue
                        if message["type"] == "subscribe":
                            self._subscribed.set()
                            if dropped:  # messages may have been lost meanwhile
                                self._listeners.capacity_returned(None)
                        elif message["type"] == "message":
                            self._dispatch(message["data"])
            except (RedisError, OSError) as error:
                logger.debug("Redis subscription dropped (%s); subscribing again", error)
                self._subscribed.clear()
                dropped = True
                await asyncio.sleep(self._reconnect)

    def _dispatch(self, data: bytes | str) -> None:
        try:
            fields = json.loads(data)
            kind, identity = fields[0], fields[1]
        except (ValueError, TypeError, IndexError, KeyError):
            logger.warning("ignoring an unreadable message on %s: %r", self.channel, data)
            return
        if kind == "capacity" and len(fields) == 4 and fields[3] != self._process:
            self._listeners.capacity_returned(BucketKey(identity, fields[2]))
        elif kind == "quota" and len(fields) == 7:
            self._listeners.breaker_changed(identity, details_of(fields[2:7]))
        elif kind == "reset":
            self._listeners.breaker_changed(identity, None)
