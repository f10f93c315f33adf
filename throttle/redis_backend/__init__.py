"""Shared bucket state in Redis, for several processes on one account's limits.

Needs the ``redis`` extra (``pip install 'throttle-llm[redis]'``); ``import throttle`` never
imports it.
"""

from throttle.redis_backend.backend import RedisBackend

__all__ = ["RedisBackend"]
