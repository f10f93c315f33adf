"""Counting tokens with tiktoken, with a character-based fallback that never fails.

tiktoken downloads its BPE files on first use. Where that is impossible (no network, no cache)
throttle must not crash a job over a tokenizer file: it counts UTF-8 bytes / 3 instead, which
overestimates English text (about 4 bytes a token) and stays close for CJK (3 bytes a character,
about a token each), so the fallback errs on the side of sending slower. It logs a warning once
per encoding, and every estimate made that way is marked ``exact=False`` so metrics can count it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Protocol

import tiktoken

logger = logging.getLogger(__name__)

DEFAULT_ENCODING = "o200k_base"
"""The encoding assumed for models tiktoken does not know (newer OpenAI models all use it)."""

FALLBACK_BYTES_PER_TOKEN = 3
"""The character-based fallback charges one token for every this many UTF-8 bytes."""


class Encoder(Protocol):
    """The one method of ``tiktoken.Encoding`` that throttle uses."""

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text``, treating special-token strings as plain text."""
        ...


EncodingLoader = Callable[[str], Encoder]


class TextCounter:
    """Counts the tokens of text pieces for one request, remembering whether it fell back.

    Attributes:
        exact: ``False`` once any piece was counted by the character fallback.
    """

    __slots__ = ("_encoder", "exact")

    def __init__(self, encoder: Encoder | None) -> None:
        self._encoder = encoder
        self.exact = encoder is not None

    def __call__(self, text: str) -> int:
        """Return the number of tokens in ``text``."""
        if self._encoder is not None:
            return len(self._encoder.encode_ordinary(text))
        return math.ceil(len(text.encode("utf-8", "replace")) / FALLBACK_BYTES_PER_TOKEN)


class EncodingCache:
    """Loads each tiktoken encoding at most once per process, remembering failures too.

    Args:
        loader: returns the encoding of a name; tiktoken's own by default.

    Attributes:
        fallback_estimates: how many requests were counted by the length fallback, for
            metrics (each such estimate is also marked ``exact=False``).
    """

    def __init__(self, loader: EncodingLoader = tiktoken.get_encoding) -> None:
        self._loader = loader
        self._loaded: dict[str, Encoder | None] = {}
        self._lock = threading.Lock()
        self.fallback_estimates = 0

    def __repr__(self) -> str:
        states = {name: "loaded" if enc else "unavailable" for name, enc in self._loaded.items()}
        return f"EncodingCache({states})"

    def encoder(self, encoding_name: str) -> Encoder | None:
        """Return the encoding, or ``None`` (after one warning) when it cannot be loaded."""
        with self._lock:
            if encoding_name not in self._loaded:
                self._loaded[encoding_name] = self._load(encoding_name)
            return self._loaded[encoding_name]

    def counter_for_model(self, model: str) -> TextCounter:
        """Return a fresh :class:`TextCounter` using the encoding of ``model``."""
        encoder = self.encoder(encoding_name_for_model(model))
        if encoder is None:
            self.fallback_estimates += 1
        return TextCounter(encoder)

    def _load(self, encoding_name: str) -> Encoder | None:
        try:
            return self._loader(encoding_name)
        except Exception as exc:
            logger.warning(
                "tiktoken encoding %s is unavailable (%s: %s); estimating tokens from "
                "UTF-8 length instead. Provision the BPE files (TIKTOKEN_CACHE_DIR) for exact "
                "counts.",
                encoding_name,
                type(exc).__name__,
                exc,
            )
            return None


_unknown_models_logged: set[str] = set()


def encoding_name_for_model(model: str) -> str:
    """Return the tiktoken encoding name for a model, ``o200k_base`` for unknown ones.

    Args:
        model: a model name (``gpt-4o-mini``, ``text-embedding-3-small``) or an Azure
            deployment name.

    Returns:
        The encoding name.
    """
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        if model not in _unknown_models_logged:
            _unknown_models_logged.add(model)
            logger.info("model %r is unknown to tiktoken; assuming %s", model, DEFAULT_ENCODING)
        return DEFAULT_ENCODING


default_encodings = EncodingCache()
"""The process-wide cache :func:`throttle.estimate_tokens` uses unless given another."""
