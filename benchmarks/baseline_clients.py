"""What the baseline clients of the limit-efficiency benchmark share, and which they are.

The clients throttle is compared with on the simulator, written for these benchmarks:

* ``benchmarks/reference_client.py``: a small client that follows the rate-limit headers well.
* ``benchmarks/cookbook_client.py``: the design of the OpenAI cookbook's
  ``api_request_parallel_processor.py`` (a fixed client-side budget, no header feedback, a
  fixed pause after a 429), written from its description, no code copied.
* the plain openai SDK behind a semaphore (``benchmarks/efficiency_client.py``).

Shared here: how a job ended (:class:`Tally`), sending one request with aiohttp
(:func:`post_once`), and the two ways of estimating a request's tokens: tiktoken's count
(o200k_base, the chat models' encoding), as the cookbook does, and characters / 4, the way
the rate limiter counts (OpenAI's limiter estimates from the character count, not the
tokenizer; the simulator counts the same way).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import tiktoken

Body = dict[str, Any]
RETRYABLE = frozenset({500, 502, 503, 504})


@dataclass(slots=True)
class Tally:
    """How a client's job ended."""

    succeeded: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_success: float = 0.0  # time.time(), comparable across processes

    def success(self) -> None:
        """Count one success, now."""
        self.succeeded += 1
        self.last_success = time.time()


def o200k_encoding() -> tiktoken.Encoding:
    """The chat models' encoding: from tiktoken's cache, else the copy throttle ships."""
    try:
        return tiktoken.get_encoding("o200k_base")
    except Exception:  # no cache and no network: the verified copy throttle ships
        from throttle.bundled_encodings import load_bundled_encoding  # noqa: PLC0415

        loaded = load_bundled_encoding("o200k_base")
        assert isinstance(loaded, tiktoken.Encoding)
        return loaded


def character_count(text: str) -> int:
    """Tokens as the rate limiter counts them: from the characters (4 a token), no tokenizer."""
    return -(-len(text) // 4)


def chat_estimate(count: Callable[[str], int], body: Mapping[str, Any], per_message: int) -> int:
    """Tokens a request will take: its text counted, ``per_message`` framing, its output cap."""
    text = body.get("input")
    if text is not None:  # embeddings
        return count(str(text))
    total = 2
    for message in body["messages"]:
        total += per_message + count(str(message["content"]))
    return total + int(body.get("max_tokens", 0)) * int(body.get("n", 1))


async def post_once(
    session: aiohttp.ClientSession, url: str, body: Body
) -> tuple[int, Mapping[str, str]]:
    """Send ``body``; return the status and headers (status 0: no answer arrived)."""
    try:
        async with session.post(url, json=body) as answer:
            await answer.read()
            return answer.status, answer.headers
    except (aiohttp.ClientError, TimeoutError):
        return 0, {}
