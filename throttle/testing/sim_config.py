"""What the simulated API is told to do: limits, faults, latency, quota."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from throttle.errors import ConfigurationError
from throttle.testing.sim_batch_config import BatchSettings


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """A model's limits on the simulated server.

    Attributes:
        rpm: requests per minute.
        tpm: tokens per minute.
        rpd: requests per day, or ``None``.
        group: models naming the same group draw from one shared pool.
    """

    rpm: int
    tpm: int
    rpd: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.rpm < 1 or self.tpm < 1 or (self.rpd is not None and self.rpd < 1):
            raise ConfigurationError(f"simulated limits must be positive: {self}")

    def describe(self) -> str:
        """Return the limits in a few words, e.g. ``RPM 500, TPM 30,000 (group 4o)``."""
        text = f"RPM {self.rpm:,}, TPM {self.tpm:,}"
        text += f", RPD {self.rpd:,}" if self.rpd else ""
        return text + (f" (group {self.group})" if self.group else "")


@dataclass(frozen=True, slots=True)
class LimitChange:
    """At ``at_seconds`` after start, a model's pool gets new limits (tier change, Azure)."""

    at_seconds: float
    model: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Faults:
    """Random faults, each a probability per attempt (every HTTP request draws once).

    One draw per request picks at most one fault, so the rates add up (at most 1 in all) and
    a retry draws afresh: a request that met a fault can succeed on its next attempt. The
    draws come from their own generator seeded with ``seed``: the n-th request to arrive
    always meets the same fault (under concurrency, which request is n-th may vary).

    Attributes:
        server_error: answer 500 server_error, before any rate limit is charged.
        overloaded: answer 503 "overloaded", before any rate limit is charged.
        drop: close the connection without answering, before any rate limit is charged.
        truncate: end a stream halfway, without its final event (``[DONE]``,
            ``response.completed``); a request that is not streamed is answered normally.
        seed: the fault generator's seed, for repeatable runs.
        spike: answer ``spike_seconds`` late (a latency spike): the request is charged and
            answered, unless the client gave up waiting first (then it counts in
            ``SimulatorStats.abandoned``, not as a success).
        spike_seconds: the extra delay of a spike, in seconds; set it beyond the client's
            per-attempt timeout to make spikes timeouts.
    """

    server_error: float = 0.0
    overloaded: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    seed: int = 0
    spike: float = 0.0
    spike_seconds: float = 5.0

    def __post_init__(self) -> None:
        rates = self.rates()
        if any(not 0 <= rate <= 1 for rate in rates.values()) or sum(rates.values()) > 1:
            raise ConfigurationError(
                f"fault rates must be in [0, 1] and add up to 1 at most: {self}"
            )
        if not 0 <= self.spike_seconds < math.inf:
            raise ConfigurationError(f"spike_seconds must be a finite, non-negative number: {self}")

    def rates(self) -> dict[str, float]:
        """Return each fault's probability per attempt, by fault name (see ``FAULTS``)."""
        return {
            "server_error": self.server_error,
            "overloaded": self.overloaded,
            "drop": self.drop,
            "truncate": self.truncate,
            "spike": self.spike,
        }

    def describe(self) -> str:
        """Return the faults in a few words, e.g. ``faults 5% server_error, 1% spike (2 s)``."""
        parts = [
            f"{rate * 100:.3g}% {name}"
            + (f" ({self.spike_seconds:g} s)" if name == "spike" else "")
            for name, rate in self.rates().items()
            if rate
        ]
        return f"faults {', '.join(parts)} (seed {self.seed})" if parts else "no faults"


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything the simulated API does.

    Attributes:
        models: limits per model name; other models get ``default_limits``.
        default_limits: limits of models not listed.
        start_level: how full every bucket is at start (0: drained by other traffic).
        latency: seconds between counting a request and answering it.
        latency_jitter: extra random seconds, uniform in [0, jitter].
        quota_tokens: per organization; once this many tokens were charged every request
            gets 429 insufficient_quota.
        organizations: API key to organization; keys not listed are rejected with 401. When
            empty, any key is accepted and each key is its own organization.
        rate_limit_headers: send ``x-ratelimit-*`` headers (some models do not).
        retry_after_header: send ``retry-after-ms`` / ``retry-after`` on 429s (Azure does).
        changes: limit changes at given times.
        faults: random faults.
        completion_tokens: output tokens each answer "generates" (capped by max_tokens).
        batch: the Batch API's speed, enqueued-token limits and shares of lost lines.
    """

    models: Mapping[str, ModelLimits] = field(default_factory=dict)
    default_limits: ModelLimits = field(
        default_factory=lambda: ModelLimits(rpm=3000, tpm=1_000_000)
    )
    start_level: float = 1.0
    latency: float = 0.05
    latency_jitter: float = 0.0
    quota_tokens: int | None = None
    organizations: Mapping[str, str] = field(default_factory=dict)
    rate_limit_headers: bool = True
    retry_after_header: bool = False
    changes: Sequence[LimitChange] = ()
    faults: Faults = field(default_factory=Faults)
    completion_tokens: int = 20
    batch: BatchSettings = field(default_factory=BatchSettings)

    def __post_init__(self) -> None:
        if not 0 <= self.start_level <= 1:
            raise ConfigurationError(f"start_level must be in [0, 1]: {self.start_level}")
        if self.latency < 0 or self.latency_jitter < 0:
            raise ConfigurationError("latency must not be negative")

    def describe(self) -> str:
        """Return the limits in force at start on one plain line.

        ``throttle simulate`` prints it at start, e.g. ``limits: default RPM 3,000,
        TPM 1,000,000; gpt-4o RPM 500, TPM 30,000 | start level 100%, ...``.
        """
        parts = [f"default {self.default_limits.describe()}"]
        parts += [f"{name} {limits.describe()}" for name, limits in self.models.items()]
        flags = [
            f"start level {self.start_level:.0%}",
            f"rate-limit headers {'on' if self.rate_limit_headers else 'off'}",
            f"retry-after {'on' if self.retry_after_header else 'off'}",
        ]
        if self.quota_tokens is not None:
            flags.append(f"quota {self.quota_tokens:,} tokens per organization")
        if any(self.faults.rates().values()):
            flags.append(self.faults.describe())
        return "limits: " + "; ".join(parts) + " | " + ", ".join(flags)

    def limits_of(self, model: str) -> ModelLimits:
        """Return the limits a model runs under."""
        return self.models.get(model, self.default_limits)
