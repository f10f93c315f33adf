"""A simulated OpenAI API on 127.0.0.1 that rate-limits, fails and bills like the real one.

Per organization and model (or shared group) it keeps requests and tokens buckets, answers
with the real header formats and the real 429 bodies (requests, tokens, daily limits, request
too large, insufficient_quota), and injects 500/503, dropped connections, truncated streams
and latency spikes on demand. It counts tokens its own way (characters / 4), as the real
server does not use the client's tokenizer either. It also serves the Files and Batch APIs,
whose batches advance on a simulated clock (:mod:`throttle.testing.sim_batch_api`).

This module is the server's lifecycle and controls; how a request is answered lives in
:mod:`throttle.testing.sim_handler`, and whether the buckets admit it in
:mod:`throttle.testing.sim_limiter`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Self

from aiohttp import web

from throttle.testing.sim_batch_api import BatchAPI
from throttle.testing.sim_config import SimulatorConfig
from throttle.testing.sim_handler import RequestHandler
from throttle.testing.sim_limiter import RateLimiter
from throttle.testing.sim_stats import SimulatorStats


class SimulatedAPI:
    """The simulated API server (an async context manager).

    Args:
        config: limits, faults, latency and quota.
        host: address to listen on (loopback only).
        port: 0 for any free port.
        batch_clock: the clock batches advance by, in seconds (default ``time.monotonic``);
            a test hands in :meth:`ManualClock.now` to move batches on without waiting.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._limiter = RateLimiter(self.config, self.stats)
        self._batches = BatchAPI(
            self.config.batch, self.stats.batch, self.config.completion_tokens, batch_clock
        )
        self._handler = RequestHandler(self.config, self.stats, self._limiter, self._batches)

    def __repr__(self) -> str:
        return f"SimulatedAPI(url={self.base_url if self._runner else None!r}, {self.stats!r})"

    @property
    def base_url(self) -> str:
        """The OpenAI-style root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self._host}:{self._port}/v1"

    def simulated_time(self) -> float:
        """Return the Batch API's simulated time now, in Unix seconds (see ``BatchSettings``)."""
        return self._batches.now()

    def azure_url(self, deployment: str) -> str:
        """The Azure-style root of a deployment on this server."""
        return f"http://{self._host}:{self._port}/openai/deployments/{deployment}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> str:
        """Start listening; return :attr:`base_url`."""
        # Room for the largest batch file and its multipart framing (larger ones get a 413).
        most = max(64 * 1024 * 1024, self.config.batch.max_file_bytes + 1024 * 1024)
        app = web.Application(client_max_size=most)
        for api in ("files", "batches"):
            app.router.add_route("*", f"/v1/{api}{{tail:.*}}", self._handler.handle_batch)
        app.router.add_route("*", "/{tail:.*}", self._handler.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)  # noqa: S101
        self._port = server.sockets[0].getsockname()[1]
        self._limiter.started_at = time.monotonic()
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and close open connections (answers held by a spike are dropped)."""
        self._handler.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def inject(self, fault: str, count: int = 1) -> None:
        """Make the next ``count`` requests meet ``fault`` (one of :data:`FAULTS`).

        A ``"spike"`` answers ``config.faults.spike_seconds`` late.
        """
        self._handler.inject(fault, count)

    def set_limits(self, model: str, *, rpm: int | None = None, tpm: int | None = None) -> None:
        """Change a model's limits now, for every organization."""
        self._limiter.set_limits(model, rpm=rpm, tpm=tpm)
