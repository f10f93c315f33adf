"""What a user may say about a key's limits, and how cautiously throttle admits.

Both are frozen values given in :class:`throttle.ThrottleOptions` and read by the bucket
arithmetic in ``limits``; they are validated when built.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from throttle.errors import ConfigurationError

if sys.platform != "win32":
    import resource

DEFAULT_WINDOW_SECONDS = 60.0


REDIS_FAILURE_POLICIES = ("fail_closed", "fail_open")
MOST_IN_FLIGHT = 1024


def default_max_in_flight() -> int:
    """The default bound on requests in flight: 1,024, or half the open-file limit if lower.

    The limits themselves keep requests in flight at rate x latency (Little's law: 50
    requests a second answered in 3 s are 150 in flight); this bound only guards the
    process's sockets, so it must not bind before the limits do (256 did, after a limit rise
    with slow answers: 1.08x the minimum instead of 1.04x, ``benchmarks/perf_efficiency.py``).
    """
    if sys.platform == "win32":  # no open-file limit to read
        return MOST_IN_FLIGHT
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MOST_IN_FLIGHT
    return max(16, min(MOST_IN_FLIGHT, soft // 2))


"""What a worker may do while the shared state (Redis) is unreachable."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits the user knows, used as ceilings over what the server reports.

    The windows also say how to read the server's own limit headers: a bucket of ``limit``
    per window refills at ``limit / window`` per second.

    Attributes:
        rpm: requests per requests window, or ``None`` to learn it.
        tpm: tokens per tokens window, or ``None`` to learn it.
        requests_window_seconds: how long the requests bucket takes to refill (60 for OpenAI's
            per-minute limits; Groq's ``*-requests`` headers count per day: 86,400).
        tokens_window_seconds: the same for the tokens bucket.
    """

    rpm: float | None = None
    tpm: float | None = None
    requests_window_seconds: float = DEFAULT_WINDOW_SECONDS
    tokens_window_seconds: float = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "requests_window_seconds", "tokens_window_seconds"):
            value = getattr(self, name)
            required = name.endswith("seconds")
            if (value is not None or required) and (not math.isfinite(value) or value <= 0):
                raise ConfigurationError(f"Limits.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """How cautiously to admit.

    Attributes:
        reserve_fraction: part of each bucket's capacity kept in hand against the noise in
            estimates and answers still in flight (0.01 of a minute's budget is 0.6 s of
            refill, paid once per job, not per request). Systematic estimate errors are
            learned separately (see the module docstring).
        probe_concurrency: requests in flight on a key before its limits are known.
        blind_after: answers without rate-limit headers after which a key stops probing and
            runs on the configured limits alone (an answer that succeeded counts at once).
        lease_seconds: how long an admitted attempt counts as in flight unless handed back
            or renewed. Attempts still running are renewed every third of a lease, so only a
            worker that vanished (a crash, SIGKILL, a partition) loses its place, and the key
            waits at most this long for an answer that will never come.
    """

    reserve_fraction: float = 0.01
    probe_concurrency: int = 1
    blind_after: int = 3
    lease_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.reserve_fraction < 1:
            raise ConfigurationError(f"reserve_fraction must be in [0, 1): {self.reserve_fraction}")
        if self.probe_concurrency < 1 or self.blind_after < 1:
            raise ConfigurationError("probe_concurrency and blind_after must be at least 1")
        if not self.lease_seconds > 0:
            raise ConfigurationError(f"lease_seconds must be positive: {self.lease_seconds}")
