"""The figures a job reports, each defined once: pure arithmetic on counts and ``now``.

The live line, the summary and ``throttle demo`` all call these functions, so one figure is
never computed two ways. Times are ``time.monotonic()`` seconds; rates say their unit.

* tokens charged: the tokens the server's answers report in ``usage`` (prompt plus
  completion); a successful answer without ``usage`` counts at the mean estimate of the
  attempts admitted. Attempts that got no answer, or an error answer, count nothing.
* tokens per minute: tokens charged by answers of the last 60 s (or since the start, when
  shorter) per minute; ``None`` before :data:`MIN_RATE_SECONDS` of the run, so a one-second
  burst is never extrapolated to a minute.
* theoretical minimum: ``max(tokens / TPM, requests / RPM)`` minutes in seconds, from the
  limits learned from headers (tokens and successful requests of the run); ``None`` when no
  limit is known. It assumes an empty bucket at the start: a run may beat it with a bucket's
  burst allowance, and then the limit was not reached.
* efficiency: minimum / elapsed; ``None`` when no minimum is known or the run was faster than
  it (the limit was not binding), so it is never over 100%.
* ETA: lines left / the completion rate over the last :data:`ETA_WINDOW_SECONDS`, ``None``
  until lines have finished over at least :data:`MIN_ETA_SECONDS`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

RATE_WINDOW_SECONDS = 60.0
MIN_RATE_SECONDS = 5.0
ETA_WINDOW_SECONDS = 30.0
MIN_ETA_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Minimum:
    """The shortest time the learned limits allow for what the run did.

    Attributes:
        seconds: the minimum, seconds.
        binding: ``"TPM"`` or ``"RPM"``: the limit that sets it.
        limit: that limit's value, per minute.
    """

    seconds: float
    binding: str
    limit: float


def theoretical_minimum(
    tokens: int, requests: int, tpm: float | None, rpm: float | None
) -> Minimum | None:
    """Return the minimum time for ``tokens`` and ``requests`` at these limits.

    Args:
        tokens: tokens charged.
        requests: requests the server accepted.
        tpm: tokens per minute limit, ``None`` when unknown.
        rpm: requests per minute limit, ``None`` when unknown.

    Returns:
        The larger of the two times and the limit behind it; ``None`` when neither is known.
    """
    candidates = [
        Minimum(amount / limit * 60, name, limit)
        for name, amount, limit in (("TPM", tokens, tpm), ("RPM", requests, rpm))
        if limit
    ]
    return max(candidates, key=lambda m: m.seconds) if candidates else None


def efficiency(minimum: Minimum | None, elapsed: float) -> float | None:
    """Return minimum / elapsed (0..1), or ``None`` when undefined or the limit did not bind.

    Args:
        minimum: from :func:`theoretical_minimum`.
        elapsed: the run's duration, seconds.
    """
    if minimum is None or elapsed <= 0 or minimum.seconds > elapsed:
        return None
    return minimum.seconds / elapsed


class RateWindow:
    """Amounts per whole second over the last minute: at most 61 entries, whatever the rate."""

    def __init__(self) -> None:
        self._seconds: collections.deque[list[int]] = collections.deque()

    def __repr__(self) -> str:
        return f"RateWindow(seconds={len(self._seconds)})"

    def __len__(self) -> int:
        return len(self._seconds)

    def add(self, now: float, amount: int) -> None:
        """Record ``amount`` at ``now``."""
        second = int(now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += amount
        else:
            self._seconds.append([second, amount])

    def per_minute(self, now: float, started: float) -> float | None:
        """Return the amount per minute over the last 60 s (or since ``started``, if shorter).

        Returns:
            ``None`` before :data:`MIN_RATE_SECONDS` since ``started``: too short to extrapolate.
        """
        while self._seconds and self._seconds[0][0] < now - RATE_WINDOW_SECONDS:
            self._seconds.popleft()
        span = min(RATE_WINDOW_SECONDS, now - started)
        if span < MIN_RATE_SECONDS:
            return None
        return sum(amount for _, amount in self._seconds) * 60 / span


class CompletionRate:
    """Lines finished over the recent past, sampled as ``(now, finished)`` pairs."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def __repr__(self) -> str:
        return f"CompletionRate(samples={len(self._samples)})"

    def observe(self, now: float, finished: int) -> None:
        """Record that ``finished`` lines were done at ``now``."""
        # A flat stretch keeps its first and last sample only: memory stays bounded.
        if len(self._samples) > 1 and self._samples[-2][1] == self._samples[-1][1] == finished:
            self._samples[-1] = (now, finished)
            return
        self._samples.append((now, finished))
        while self._samples[0][0] < now - ETA_WINDOW_SECONDS and len(self._samples) > 2:
            self._samples.popleft()

    def eta_seconds(self, now: float, left: int) -> float | None:
        """Return seconds to finish ``left`` lines at the recent rate.

        Args:
            now: the current time, seconds.
            left: lines still to finish.

        Returns:
            0 when nothing is left; ``None`` before lines finished over
            :data:`MIN_ETA_SECONDS` (no rate yet) or when none finished in the window.
        """
        if left <= 0:
            return 0.0
        samples = [s for s in self._samples if s[0] >= now - ETA_WINDOW_SECONDS]
        if not samples:
            return None
        first = samples[0]
        # Before the first line finished, the waiting says nothing of the rate.
        for sample in samples:
            if sample[1] != first[1]:
                break
            first = sample
        done = samples[-1][1] - first[1]
        span = now - first[0]
        if done <= 0 or span < MIN_ETA_SECONDS:
            return None
        return left * span / done
