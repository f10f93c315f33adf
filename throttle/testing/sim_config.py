"""What the simulated API is told to do: limits, faults, latency, quota."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from throttle.errors import ConfigurationError


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
    """Random faults, each a probability per request (``truncate`` applies to streams).

    Attributes:
        server_error: answer 500 server_error.
        overloaded: answer 503 "overloaded".
        drop: close the connection without answering.
        truncate: end a stream before its final event.
        seed: the random generator's seed, for repeatable runs.
    """

    server_error: float = 0.0
    overloaded: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    seed: int = 0


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
        return "limits: " + "; ".join(parts) + " | " + ", ".join(flags)

    def limits_of(self, model: str) -> ModelLimits:
        """Return the limits a model runs under."""
        return self.models.get(model, self.default_limits)
