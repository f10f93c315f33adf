"""Where one account's state lives in Redis: key names, and the breaker reset that uses them.

``PREFIX{identity}:GROUP:state`` and ``...:leases`` for a bucket key, ``PREFIX{identity}:quota``
for the identity's breaker while it is open. The braces are a hash tag: Redis Cluster keeps an
identity's keys in one slot, so every script call (one identity's operations) touches one slot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis

from throttle.redis_backend.script_io import text


def breaker_key(prefix: str, identity: str) -> str:
    """The key of ``identity``'s quota breaker."""
    return f"{prefix}{{{identity}}}:quota"


def script_keys(prefix: str, identity: str, groups: Sequence[str]) -> list[str]:
    """The script's ``KEYS``: the identity's breaker, then each group's state and leases."""
    tag = f"{prefix}{{{identity}}}"
    names = [breaker_key(prefix, identity)]
    for group in groups:
        names += [f"{tag}:{group}:state", f"{tag}:{group}:leases"]
    return names


async def reset_breakers(
    client: aioredis.Redis, prefix: str, channel: str, identity: str | None
) -> None:
    """Delete the breaker of ``identity`` (every open one for ``None``) and tell every process.

    Raises:
        redis.exceptions.RedisError: Redis did not answer.
    """
    if identity is not None:
        names = [breaker_key(prefix, identity)]
    else:
        names = [text(name) async for name in client.scan_iter(match=f"{prefix}{{*}}:quota")]
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.delete(name)
            owner = name[len(prefix) + 1 : name.rindex("}")]
            pipe.publish(channel, json.dumps(["reset", owner]))
        await pipe.execute()
