"""Tests for counting texts: the encoder's own counts, short texts remembered, length fallback."""

import math

import pytest
import tiktoken

from throttle import text_counter
from throttle.text_counter import SHORT_TEXT_CHARS, LengthCounter, TextCounter


class CountingEncoder:
    """An encoder of one token per character that counts how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    def encode_ordinary(self, text: str) -> list[int]:
        """One token per character."""
        self.calls += 1
        return [0] * len(text)


def test_a_short_text_is_encoded_once_and_its_count_remembered() -> None:
    """A role met in every request costs one encoding, and its count never changes."""
    encoder = CountingEncoder()
    count = TextCounter(encoder)
    assert [count("assistant") for _ in range(5)] == [9] * 5
    assert encoder.calls == 1


def test_a_long_text_is_encoded_every_time() -> None:
    """Texts past SHORT_TEXT_CHARS are nearly all different: no lookup, no memory."""
    encoder = CountingEncoder()
    count = TextCounter(encoder)
    text = "x" * (SHORT_TEXT_CHARS + 1)
    assert count(text) == count(text) == SHORT_TEXT_CHARS + 1
    assert encoder.calls == 2


def test_a_full_memory_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past REMEMBERED_SHORT_TEXTS the memory is emptied; counts stay the encoder's own."""
    monkeypatch.setattr(text_counter, "REMEMBERED_SHORT_TEXTS", 3)
    encoder = CountingEncoder()
    count = TextCounter(encoder)
    assert [count(text) for text in ["a", "bb", "ccc", "dddd", "a"]] == [1, 2, 3, 4, 1]
    assert encoder.calls == 5  # "a" was forgotten when "dddd" came
    assert count("dddd") == 4
    assert encoder.calls == 5


@pytest.mark.parametrize("text", ["plain text", "lone \ud800 surrogate", "<|endoftext|> as text"])
def test_counts_equal_tiktokens_encode_ordinary(text: str) -> None:
    """Calling tiktoken's core directly counts exactly as its public method, surrogates too."""
    encoding = tiktoken.get_encoding("o200k_base")
    assert TextCounter(encoding)(text * 20) == len(encoding.encode_ordinary(text * 20))
    assert TextCounter(encoding)(text) == len(encoding.encode_ordinary(text))


def test_the_length_fallback_counts_bytes_by_three_and_is_not_exact() -> None:
    """Without an encoding, a token per 3 UTF-8 bytes, rounded up, marked inexact."""
    count = LengthCounter()
    assert count("héllo") == math.ceil(len("héllo".encode()) / 3)
    assert not count.exact
    assert TextCounter(CountingEncoder()).exact
