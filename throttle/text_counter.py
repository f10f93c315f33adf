"""Counting the tokens of texts with one encoding, or by length when there is none.

One counter serves every request of its encoding, so it is built once per process. Short
texts recur in nearly every request (roles, names, tool names, a job's short instructions),
so a counter remembers their counts: a remembered count is the encoder's own answer, so it
never differs from counting again. Longer texts are nearly all different, so they are counted
every time without a lookup (hashing them would cost time for nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

FALLBACK_BYTES_PER_TOKEN = 3
"""The character-based fallback charges one token for every this many UTF-8 bytes."""

SHORT_TEXT_CHARS = 64
"""Texts up to this many characters have their counts remembered."""

REMEMBERED_SHORT_TEXTS = 4096
"""Most short texts one counter remembers (under 2 MB); when it is full, it starts over."""


class Encoder(Protocol):
    """The one method of ``tiktoken.Encoding`` that throttle uses."""

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text``, treating special-token strings as plain text."""
        ...


class TextCounter:
    """Counts the tokens of texts with one tiktoken encoding, remembering short texts.

    Args:
        encoder: the encoding.

    Attributes:
        exact: ``True``: texts are counted by the tokenizer.
    """

    __slots__ = ("_encode", "_encoder", "_short_counts")

    exact = True

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        # tiktoken's encode_ordinary only wraps its core's, mending lone surrogates when the
        # core refuses them: calling the core saves a Python call per text.
        core = getattr(encoder, "_core_bpe", None)
        self._encode: Callable[[str], list[int]] = getattr(
            core, "encode_ordinary", encoder.encode_ordinary
        )
        self._short_counts: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        """Return the number of tokens in ``text``."""
        if len(text) <= SHORT_TEXT_CHARS:
            known = self._short_counts.get(text)
            return known if known is not None else self._remember(text)
        try:
            return len(self._encode(text))
        except UnicodeEncodeError:  # a lone surrogate: tiktoken's own method mends it
            return len(self._encoder.encode_ordinary(text))

    def _remember(self, text: str) -> int:
        if len(self._short_counts) >= REMEMBERED_SHORT_TEXTS:
            self._short_counts.clear()  # what recurs comes right back; the rest is forgotten
        try:
            count = len(self._encode(text))
        except UnicodeEncodeError:
            count = len(self._encoder.encode_ordinary(text))
        self._short_counts[text] = count
        return count


class LengthCounter(TextCounter):
    """Counts UTF-8 bytes / :data:`FALLBACK_BYTES_PER_TOKEN`: the fallback without an encoding.

    It overestimates English text (about 4 bytes a token) and stays close for CJK (3 bytes a
    character, about a token each), so it errs on the side of sending slower.

    Attributes:
        exact: ``False``: texts are counted by length.
    """

    __slots__ = ()

    exact = False

    def __init__(self) -> None:
        """A counter needs no encoding to count by length."""

    def __call__(self, text: str) -> int:
        """Return the tokens ``text`` is charged by length."""
        return math.ceil(len(text.encode("utf-8", "replace")) / FALLBACK_BYTES_PER_TOKEN)
