"""The simulated scenarios of the limit-efficiency benchmark, and the minimum each allows.

Every scenario starts with the key's buckets drained (another job just used them), sends
work sized so that its limits take a given time to pass it, and never tells the client the
limits: they are learned (or, for the cookbook design, configured at the starting value, as
its users do). The server charges each request its own way (characters / 4, plus the output
cap: :mod:`throttle.testing.sim_accounting`), so the minimum is computed from what it charged.

The theoretical minimum: from the first request (when the simulator creates the buckets,
empty), the time until the limits, as they change over the run, have refilled enough for
every token and every request the server charged to the client under test, and for what a
second client on the same key took meanwhile (the shared-key scenario); plus the server's
latency (its least: without jitter), since the last request is answered that much after it
is sent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from throttle.testing import Faults, LimitChange, ModelLimits, SimulatorConfig
from throttle.testing.demo_requests import demo_request
from throttle.testing.sim_accounting import output_cap, prompt_tokens

CHAT_MODEL, EMBEDDING_MODEL = "gpt-4o-mini", "text-embedding-3-small"
Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One simulated job.

    Attributes:
        name: as the report shows it.
        what: one line on what the scenario is.
        rpm: requests per minute at start.
        tpm: tokens per minute at start.
        latency: seconds the server takes to answer.
        jitter: extra random seconds of latency, uniform in [0, jitter].
        path: the endpoint below ``/v1``.
        bodies: the requests.
        changes: (seconds after the server started, new TPM) steps.
        faults: random faults.
        shared_share: the share of TPM a second client on the same key takes (0: none).
        completion_tokens: output each answer reports (capped by the request's cap).
    """

    name: str
    what: str
    rpm: int
    tpm: int
    latency: float
    path: str
    bodies: Sequence[Body]
    jitter: float = 0.0
    changes: Sequence[tuple[float, int]] = ()
    faults: Faults = field(default_factory=Faults)
    shared_share: float = 0.0
    completion_tokens: int = 20

    def config(self) -> SimulatorConfig:
        """The simulator's configuration: drained buckets, this scenario's limits and faults."""
        model = EMBEDDING_MODEL if self.path == "embeddings" else CHAT_MODEL
        return SimulatorConfig(
            default_limits=ModelLimits(rpm=self.rpm, tpm=self.tpm),
            start_level=0.0,
            latency=self.latency,
            latency_jitter=self.jitter,
            changes=[LimitChange(at, model, tpm=tpm) for at, tpm in self.changes],
            faults=self.faults,
            completion_tokens=self.completion_tokens,
            organizations={"sk-bench": "org-bench", "sk-other": "org-bench"},
        )

    def tpm_at(self, seconds: float) -> int:
        """The TPM in force ``seconds`` after the server started."""
        tpm = self.tpm
        for at, new in self.changes:
            if seconds >= at:
                tpm = new
        return tpm

    def mean_latency(self) -> float:
        """Seconds an answer takes on average."""
        return self.latency + self.jitter / 2

    def minimum_seconds(self, start: float, tokens: int, requests: int) -> float:
        """Seconds from ``start`` (after the server started) to serve ``tokens`` and ``requests``.

        The time to refill them (RPM never changes here; TPM follows :attr:`changes`), plus
        the latency of the last answer.
        """
        by_requests = requests / self.rpm * 60
        steps = [(at, tpm) for at, tpm in self.changes if at > start]
        now, tpm, left = start, self.tpm_at(start), float(tokens)
        for at, new in steps:
            span = left / (tpm / 60)
            if now + span <= at:
                break
            left -= (at - now) * tpm / 60
            now, tpm = at, new
        return max(now + left / (tpm / 60) - start, by_requests) + self.latency


def charge(body: Body, path: str) -> int:
    """Tokens the simulator charges for ``body`` (its own count, not throttle's)."""
    prompt = prompt_tokens(body)
    return prompt if path == "embeddings" else prompt + output_cap(body)


def _chat(count: int, *, max_tokens: int | None = None, first: int = 0) -> list[Body]:
    bodies = []
    for index in range(first, first + count):
        body = demo_request(index)
        del body["metadata"]  # the SDK's ``metadata`` wants strings: not what is measured
        if max_tokens is not None:
            body["max_tokens"] = max_tokens + index % 7 * 100
        bodies.append(body)
    return bodies


def _embeddings(count: int) -> list[Body]:
    text = "Quarterly revenue rose four percent while costs held flat across regions. "
    return [{"model": EMBEDDING_MODEL, "input": f"Doc {i}: " + text * 26} for i in range(count)]


def _sized(bodies_for: int, path: str, tokens: float, make: Any) -> list[Body]:
    """``make(n)`` with ``n`` just large enough that its charges reach ``tokens``."""
    sample = make(bodies_for)
    per_body = sum(charge(body, path) for body in sample) / len(sample)
    result: list[Body] = make(max(1, math.ceil(tokens / per_body)))
    return result


def scenarios(scale: float = 1.0) -> list[Scenario]:
    """Every scenario; ``scale`` shrinks the job and the change times (1.0: the full run).

    At 1.0 each scenario's minimum is about 10 s, long outputs' 20 s, the limit change's 35 s.
    """
    base = 10.0 * scale
    rpm, tpm = 3_000, 1_000_000
    per_s = tpm / 60
    change_tpm = 1_500_000
    half, double = 10.0 * scale, 25.0 * scale
    change_tokens = change_tpm / 60 * (half + (double - half) / 2 + 2 * 10.0 * scale)
    faults = Faults(server_error=0.02, overloaded=0.02, drop=0.01, spike=0.01, spike_seconds=1.0)
    return [
        Scenario(
            "cold start",
            "RPM 3,000, TPM 1M, 300 ms latency, limits learned from the first answers",
            rpm, tpm, 0.3, "chat/completions",
            _sized(100, "chat/completions", per_s * base, _chat),
        ),
        Scenario(
            "shared key",
            "as cold start; a second client on the key takes a third of TPM all along",
            rpm, tpm, 0.3, "chat/completions",
            _sized(100, "chat/completions", per_s * base * 2 / 3, _chat),
            shared_share=1 / 3,
        ),
        Scenario(
            "limit change",
            f"TPM 1.5M, halved at {half:g} s, doubled (3M) at {double:g} s; latency 2-3 s",
            20_000, change_tpm, 2.0, "chat/completions",
            _sized(100, "chat/completions", change_tokens, _chat),
            jitter=1.0,
            changes=((half, change_tpm // 2), (double, change_tpm * 2)),
        ),
        Scenario(
            "faults",
            "as cold start, with 2% 500s, 2% 503s, 1% dropped connections, 1% 1 s spikes",
            rpm, tpm, 0.3, "chat/completions",
            _sized(100, "chat/completions", per_s * base, _chat),
            faults=faults,
        ),
        Scenario(
            "embeddings",
            "RPM 3,000, TPM 1M, 100 ms latency, ~500-token inputs, no output",
            rpm, tpm, 0.1, "embeddings",
            _sized(10, "embeddings", per_s * base, _embeddings),
        ),
        Scenario(
            "long outputs",
            "RPM 3,000, TPM 2M, max_tokens 4,000-4,600, latency 2-3 s, 20 s of work",
            rpm, 2 * tpm, 2.0, "chat/completions",
            _sized(100, "chat/completions", 4 * per_s * base, lambda n: _chat(n, max_tokens=4_000)),
            jitter=1.0,
            completion_tokens=3_000,
        ),
    ]  # fmt: skip


def background_bodies(count: int) -> list[Body]:
    """The second client's requests in the shared-key scenario (not the tested client's)."""
    return _chat(count, first=1_000_000)
