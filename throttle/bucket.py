"""Continuous-refill bucket arithmetic: pure, takes ``now``, never sleeps.

Why not aiolimiter: its leaky bucket cannot be told "the server says you have 41,000 tokens
left and your capacity is now 90,000", which is the heart of learning limits from response
headers. This is the small piece it cannot express: a level that refills continuously toward a
capacity, can go into debt, and can be overwritten from outside at any time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    """A bucket that refills at ``capacity / window`` units per second, up to ``capacity``.

    Units are requests or tokens; times are seconds on the scheduler's clock.

    Attributes:
        capacity: the most the bucket holds (the limit per window).
        window: seconds the bucket takes to refill from empty to full.
        level: units available at ``updated_at``; negative means debt.
        updated_at: the clock time ``level`` was last brought up to date.
    """

    capacity: float
    window: float
    level: float
    updated_at: float

    def __repr__(self) -> str:
        return (
            f"Bucket(level={self.level:.1f}/{self.capacity:g}, "
            f"rate={self.rate:.3g}/s, at={self.updated_at:.3f})"
        )

    @property
    def rate(self) -> float:
        """Refill speed in units per second."""
        return self.capacity / self.window

    def refill(self, now: float) -> None:
        """Bring ``level`` up to date at ``now``; never beyond capacity, never back in time."""
        if now > self.updated_at:
            self.level = min(self.capacity, self.level + self.rate * (now - self.updated_at))
            self.updated_at = now

    def seconds_until(self, amount: float, now: float) -> float:
        """Return seconds from ``now`` until ``amount`` units are available (0 if they are)."""
        self.refill(now)
        deficit = amount - self.level
        return 0.0 if deficit <= 0 else deficit / self.rate

    def take(self, amount: float, now: float) -> None:
        """Remove ``amount`` units at ``now``, going into debt if need be."""
        self.refill(now)
        self.level -= amount

    def resync(self, *, capacity: float, level: float, now: float) -> None:
        """Overwrite capacity and level with what the server reported, as of ``now``."""
        self.capacity = capacity
        self.level = min(level, capacity)
        self.updated_at = now
