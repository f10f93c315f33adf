"""How the simulated server counts: its own buckets and its own character-based tokens.

Deliberately independent of throttle's estimator and bucket code, so that tests measure
throttle against a server that disagrees with it the way the real one does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _text_length(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_text_length(v) for k, v in value.items() if k not in ("model", "role"))
    if isinstance(value, list):
        if value and all(type(v) is int for v in value):
            return len(value) * CHARS_PER_TOKEN  # a token array
        return sum(_text_length(v) for v in value)
    return 0


def prompt_tokens(body: Mapping[str, object]) -> int:
    """Tokens the server counts for a request's input: characters / 4, plus message framing."""
    fields = ("messages", "input", "prompt", "instructions", "tools")
    chars = sum(_text_length(body.get(name)) for name in fields)
    messages = body.get("messages") or body.get("input")
    framing = TOKENS_PER_MESSAGE * len(messages) if isinstance(messages, list) else 0
    return math.ceil(chars / CHARS_PER_TOKEN) + framing


def output_cap(body: Mapping[str, object]) -> int:
    """The output a request may produce: ``n`` x its ``max_*_tokens`` (0 when unset)."""
    caps = [value for f in _OUTPUT_FIELDS if isinstance(value := body.get(f), int)]
    n = body.get("n")
    return (caps[0] if caps else 0) * (n if isinstance(n, int) and n > 0 else 1)


@dataclass(slots=True)
class ServerBucket:
    """A continuously refilling bucket as the server keeps it (units per ``window`` seconds)."""

    capacity: float
    level: float
    at: float
    window: float = 60.0

    def level_at(self, now: float) -> float:
        """Refill up to ``now`` and return the level."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.capacity / self.window)
        self.at = max(self.at, now)
        return self.level

    def seconds_until(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available."""
        missing = amount - self.level_at(now)
        return max(0.0, missing * self.window / self.capacity)

    def seconds_to_full(self, now: float) -> float:
        """Seconds until the bucket is full again (what ``x-ratelimit-reset-*`` reports)."""
        return self.seconds_until(self.capacity, now)

    def set_capacity(self, capacity: float, now: float) -> None:
        """Change the limit; the level never exceeds the new capacity."""
        self.level_at(now)
        self.capacity = capacity
        self.level = min(self.level, capacity)


@dataclass(slots=True)
class Pool:
    """The buckets one organization's model (or shared group) draws from."""

    requests: ServerBucket
    tokens: ServerBucket
    day: ServerBucket | None
