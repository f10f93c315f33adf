"""A reservation: what one attempt draws from its key's buckets, and the proof it was admitted.

The backend hands out a :class:`Ticket` when it admits a :class:`Cost`; the scheduler hands
the ticket back with the attempt's answer, and the ledgers it carries let the backend tell what
was admitted after the answered request (see ``limits``). Each reservation holds its place in
flight on a lease (:class:`Leases`), so one whose worker vanished does not hold it forever.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cost:
    """What one attempt draws from the buckets: 1 request and its estimated tokens."""

    tokens: float
    requests: float = 1.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof that an attempt was admitted, handed back when its answer arrives.

    Attributes:
        seq: admission order on this key.
        admitted_at: clock time of admission, taken as the time the server counted it.
        cost: what it drew.
        requests_ledger: running total of requests admitted on the key, this one included.
        tokens_ledger: running total of tokens admitted on the key (calibrated), this one
            included.
        estimates_ledger: the same total, of raw estimates.
        probe: admitted while the key's limits were unknown.
    """

    seq: int
    admitted_at: float
    cost: Cost
    requests_ledger: float
    tokens_ledger: float
    estimates_ledger: float
    probe: bool


class Leases:
    """The attempts of one key in flight, each until handed back or until its lease ends.

    Pure: times are the backend's clock seconds, passed in. Leases end in the order they were
    granted (one lease length per key), so reclaiming looks only at the oldest.
    """

    def __init__(self) -> None:
        self._order: deque[tuple[int, float]] = deque()  # (seq, lease end), oldest first
        self._live: set[int] = set()

    def __repr__(self) -> str:
        return f"Leases(in_flight={len(self._live)})"

    @property
    def count(self) -> int:
        """Leases granted, not handed back, not found ended by the last :meth:`reclaim`."""
        return len(self._live)

    def grant(self, seq: int, ends: float) -> None:
        """Count attempt ``seq`` in flight until ``ends`` at the latest."""
        self._order.append((seq, ends))
        self._live.add(seq)

    def hand_back(self, seq: int) -> None:
        """Stop counting ``seq``; nothing happens if its lease already ended."""
        self._live.discard(seq)

    def reclaim(self, now: float) -> None:
        """Forget leases handed back or ended by ``now``: their workers will not answer."""
        order = self._order
        while order and (order[0][0] not in self._live or order[0][1] <= now):
            self._live.discard(order.popleft()[0])

    def next_end(self) -> float:
        """Return when the oldest live lease ends (after :meth:`reclaim`; ``inf`` if none)."""
        return self._order[0][1] if self._live else float("inf")
