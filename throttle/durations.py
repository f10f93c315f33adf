"""Parsing the duration formats that rate-limit headers and error messages use."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
# Longest units first, so "ms" is never read as "m" followed by garbage.
_COMPONENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|us|µs|μs|ns|h|m|s)", re.ASCII)
_PLAIN_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")


def parse_duration(text: str) -> float:
    """Parse a rate-limit reset or retry duration into seconds.

    Accepts Go-style durations (``12ms``, ``1s``, ``17.28s``, ``6m0s``, ``16m17.764s``,
    ``1h2m3s``, also with spaces: ``6m 11.52s``) and plain non-negative numbers, which are
    seconds (Azure, ``retry-after``).

    Args:
        text: the header value or message fragment.

    Returns:
        The duration in seconds.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: ``text`` is empty, negative, not finite or not a duration.
    """
    if not isinstance(text, str):
        raise TypeError(f"duration must be a string, got {type(text).__name__}")
    plain = _PLAIN_NUMBER.fullmatch(text)
    if plain:
        seconds = float(plain.group(1))
        # 310 digits parse as inf: an infinite wait is no wait a caller can act on.
        if not math.isfinite(seconds):
            raise ValueError(f"not a duration: {text!r}")
        return seconds
    total = 0.0
    position = 0
    stripped = text.rstrip()
    for match in _COMPONENT.finditer(stripped):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(stripped) or not math.isfinite(total):
        raise ValueError(f"not a duration: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Format seconds the way OpenAI's headers do (``12ms``, ``1.146s``, ``6m0s``, ``1h2m3s``).

    Args:
        seconds: a non-negative duration.

    Returns:
        A Go-style duration string that :func:`parse_duration` reads back.
    """
    seconds = round(seconds, 3)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{secs_text}s"
    if minutes >= 1:
        return f"{int(minutes)}m{secs_text}s"
    return f"{secs_text}s"
