"""Where one account's state lives in Redis: key names, and the breaker reset that uses them.

``PREFIX{identity}:GROUP:state`` and ``...:leases`` for a bucket key, ``PREFIX{identity}:quota``
for the identity's breaker while it is open. The braces are a hash tag: Redis Cluster keeps an
identity's keys in one slot, so every script call touches one slot.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from throttle.keys import BucketKey
from throttle.redis_backend.script_io import text


def key_names(prefix: str, key: BucketKey) -> list[str]:
    """The script's ``KEYS`` for ``key``: its state, its leases, its identity's breaker."""
    tag = f"{prefix}{{{key.identity}}}"
    return [f"{tag}:{key.group}:state", f"{tag}:{key.group}:leases", f"{tag}:quota"]


async def reset_breakers(
    client: aioredis.Redis, prefix: str, channel: str, identity: str | None
) -> None:
    """Delete the breaker of ``identity`` (every open one for ``None``) and tell every process.

    Raises:
        redis.exceptions.RedisError: Redis did not answer.
    """
    if identity is not None:
        names = [key_names(prefix, BucketKey(identity, ""))[2]]
    else:
        names = [text(name) async for name in client.scan_iter(match=f"{prefix}{{*}}:quota")]
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.delete(name)
            owner = name[len(prefix) + 1 : name.rindex("}")]
            pipe.publish(channel, json.dumps(["reset", owner]))
        await pipe.execute()
