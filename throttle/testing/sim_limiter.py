"""The simulated server's rate-limit decision: charge a request, or refuse it with a 429.

Per organization and model (or shared group) it keeps the requests, tokens and daily buckets,
applies limit changes (scheduled or immediate), stops an organization at its token quota, and
writes the ``x-ratelimit-*`` and ``retry-after`` headers the real API sends.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter

from aiohttp import web

from throttle.durations import format_duration
from throttle.testing import sim_bodies as bodies
from throttle.testing.sim_accounting import Pool, ServerBucket
from throttle.testing.sim_config import ModelLimits, SimulatorConfig
from throttle.testing.sim_stats import SimulatorStats

DAY_SECONDS = 86_400.0


class RateLimiter:
    """The buckets of every organization and model, and the decision to admit or refuse.

    Args:
        config: limits, scheduled limit changes, quota and which headers to send.
        stats: where charged tokens and refusals are counted.
    """

    def __init__(self, config: SimulatorConfig, stats: SimulatorStats) -> None:
        self.config = config
        self.stats = stats
        # Scheduled limit changes count from here; the server resets it when it starts.
        self.started_at = time.monotonic()
        self._pools: dict[tuple[str, str], Pool] = {}
        self._limit_overrides: dict[str, ModelLimits] = {}
        self._charged_by_org: Counter[str] = Counter()
        self._pending_changes = sorted(self.config.changes, key=lambda c: c.at_seconds)

    def set_limits(self, model: str, *, rpm: int | None = None, tpm: int | None = None) -> None:
        """Change a model's limits now, for every organization."""
        now = time.monotonic()
        current = self._limit_overrides.get(model, self.config.limits_of(model))
        changed = dataclasses.replace(current, rpm=rpm or current.rpm, tpm=tpm or current.tpm)
        self._limit_overrides[model] = changed
        group = changed.group or model
        for (_org, pool_group), pool in self._pools.items():
            if pool_group == group:
                pool.requests.set_capacity(changed.rpm, now)
                pool.tokens.set_capacity(changed.tpm, now)

    def _limits(self, model: str) -> ModelLimits:
        return self._limit_overrides.get(model, self.config.limits_of(model))

    def _pool(self, org: str, model: str, now: float) -> Pool:
        limits = self._limits(model)
        key = (org, limits.group or model)
        pool = self._pools.get(key)
        if pool is None:
            start = self.config.start_level
            day = (
                ServerBucket(limits.rpd, limits.rpd * start, now, DAY_SECONDS)
                if limits.rpd
                else None
            )
            pool = self._pools[key] = Pool(
                ServerBucket(limits.rpm, limits.rpm * start, now),
                ServerBucket(limits.tpm, limits.tpm * start, now),
                day,
            )
        return pool

    def apply_due_changes(self, now: float) -> None:
        """Apply the configured limit changes whose time has come."""
        while self._pending_changes and (
            self._pending_changes[0].at_seconds <= now - self.started_at
        ):
            change = self._pending_changes.pop(0)
            self.set_limits(change.model, rpm=change.rpm, tpm=change.tpm)

    def _refusal(self, pool: Pool, cost: int, now: float) -> tuple[str, float, float, float] | None:
        """Return (limit type, limit, used, seconds to wait) when a bucket is short, else None."""
        checks = (
            ("requests_per_day", pool.day, 1),
            ("requests", pool.requests, 1),
            ("tokens", pool.tokens, cost),
        )
        for limit_type, bucket, needed in checks:
            if bucket is not None and bucket.level_at(now) < needed:
                used = bucket.capacity - bucket.level
                return limit_type, bucket.capacity, used, bucket.seconds_until(needed, now)
        return None

    def charge(
        self,
        org: str,
        model: str,
        cost: int,
        now: float,
        headers: dict[str, str],
        *,
        azure: bool,
    ) -> web.Response | None:
        """Charge the request, or return the 429 that refuses it. Fills in rate headers.

        Args:
            org: the organization the API key belongs to.
            model: the model (or Azure deployment) asked for.
            cost: tokens to take from the tokens bucket.
            now: the current ``time.monotonic()``.
            headers: the answer's headers; rate-limit and retry headers are added here.
            azure: answer a refusal in Azure's format, always with retry headers.

        Returns:
            ``None`` when the request was charged, else the 429 response to send.
        """
        quota = self.config.quota_tokens
        if quota is not None and self._charged_by_org[org] >= quota:
            self.stats.quota_errors += 1
            self.stats.first_quota_error_at = self.stats.first_quota_error_at or now
            return web.json_response(bodies.QUOTA_BODY, status=429, headers=headers)
        pool = self._pool(org, model, now)
        if pool.tokens.capacity < cost:
            self.stats.too_large += 1
            self._rate_headers(pool, now, headers)
            body = bodies.too_large_body(
                model=model, org=org, limit=pool.tokens.capacity, requested=cost
            )
            return web.json_response(body, status=429, headers=headers)
        refusal = self._refusal(pool, cost, now)
        if refusal is None or refusal[0] == "tokens":
            pool.requests.level -= 1  # a refused request still counts against RPM
        if refusal is None:
            pool.tokens.level -= cost
            if pool.day is not None:
                pool.day.level -= 1
            self._charged_by_org[org] += cost
            self.stats.charged_tokens += cost
        self._rate_headers(pool, now, headers)
        if refusal is None:
            return None
        limit_type, limit, used, wait = refusal
        self.stats.rate_limited[limit_type] += 1
        if azure:
            body = bodies.azure_rate_limit_body(wait)
        else:
            requested = cost if limit_type == "tokens" else 1
            body = bodies.rate_limit_body(
                model=model,
                org=org,
                limit_type=limit_type,
                limit=limit,
                used=used,
                requested=requested,
                wait=wait,
            )
        if self.config.retry_after_header or azure:
            headers["retry-after-ms"] = f"{wait * 1000:.0f}"
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        return web.json_response(body, status=429, headers=headers)

    def _rate_headers(self, pool: Pool, now: float, headers: dict[str, str]) -> None:
        if not self.config.rate_limit_headers:
            return
        for kind, bucket in (("requests", pool.requests), ("tokens", pool.tokens)):
            remaining = max(0, math.floor(bucket.level_at(now)))
            headers[f"x-ratelimit-limit-{kind}"] = f"{bucket.capacity:.0f}"
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.seconds_to_full(now))
