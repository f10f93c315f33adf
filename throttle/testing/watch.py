"""An event listener for tests: how many attempts were in flight when the breaker opened."""

from __future__ import annotations

import time

from throttle.events import AttemptFinished, Event, QuotaBreakerOpened, RequestAdmitted


class InFlightWatch:
    """Counts attempts admitted and not yet answered, and notes the quota breaker opening.

    Subscribe it to a Throttle (``Throttle(on_event=watch)``).

    Attributes:
        in_flight: attempts sent and not yet answered, now.
        in_flight_when_opened: that count when the quota breaker opened, else ``None``.
        opened_at: ``time.monotonic()`` when the breaker opened, else ``None``.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.in_flight_when_opened: int | None = None
        self.opened_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"InFlightWatch(in_flight={self.in_flight}, "
            f"in_flight_when_opened={self.in_flight_when_opened})"
        )

    def __call__(self, event: Event) -> None:
        """Take one scheduler event."""
        if isinstance(event, RequestAdmitted):
            self.in_flight += 1
        elif isinstance(event, AttemptFinished):
            self.in_flight -= 1
        elif isinstance(event, QuotaBreakerOpened) and self.opened_at is None:
            self.in_flight_when_opened, self.opened_at = self.in_flight, time.monotonic()
