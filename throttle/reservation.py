"""A reservation: what one attempt draws from its key's buckets, and the proof it was admitted.

The backend hands out a :class:`Ticket` when it admits a :class:`Cost`; the scheduler hands
the ticket back with the attempt's answer, and the ledgers it carries let the backend tell what
was admitted after the answered request (see ``limits``). Each reservation holds its place in
flight on a lease (:class:`Leases`), so one whose worker vanished does not hold it forever.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple


class Cost(NamedTuple):
    """What one attempt draws from the buckets: 1 request and its estimated tokens.

    A named tuple for the reason given at :class:`Ticket`: one is made per attempt.
    """

    tokens: float
    requests: float = 1.0


class Ticket(NamedTuple):
    """Proof that an attempt was admitted, handed back when its answer arrives.

    A named tuple, not a frozen dataclass: one is made per admission, and a frozen dataclass
    takes three times as long to build (its ``__init__`` sets each field through
    ``object.__setattr__``).

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


@dataclass(frozen=True, slots=True)
class Admissions:
    """What a backend decided for costs asked for in order (the first ones go first).

    Attributes:
        tickets: the tickets of the costs admitted: the first ``len(tickets)`` of them.
        wait: seconds before asking again for the rest (0: ask again now, or none is left).
    """

    tickets: list[Ticket]
    wait: float = 0.0


class Leases:
    """The attempts of one key in flight, each until handed back or until its lease ends.

    Pure: times are the backend's clock seconds, passed in. Leases are kept in the order their
    current end was set; a renewed lease is queued again with its new end, and its old entry
    is skipped when reached, so reclaiming looks only at the front.
    """

    __slots__ = ("_live", "_order")

    def __init__(self) -> None:
        self._order: deque[tuple[int, float]] = deque()  # (seq, lease end), earliest end first
        self._live: dict[int, float] = {}  # seq -> current lease end

    def __repr__(self) -> str:
        return f"Leases(in_flight={len(self._live)})"

    @property
    def count(self) -> int:
        """Leases granted, not handed back, not found ended by the last :meth:`reclaim`."""
        return len(self._live)

    def grant(self, seq: int, ends: float) -> None:
        """Count attempt ``seq`` in flight until ``ends`` at the latest.

        Every lease of one key has the same length, so ends arrive in order.
        """
        self._order.append((seq, ends))
        self._live[seq] = ends

    def renew(self, seq: int, ends: float) -> bool:
        """Extend a live lease to ``ends``; return ``False`` if it was handed back or ended."""
        if seq not in self._live:
            return False
        self.grant(seq, max(ends, self._live[seq]))
        return True

    def hand_back(self, seq: int) -> None:
        """Stop counting ``seq``; nothing happens if its lease already ended."""
        self._live.pop(seq, None)

    def reclaim(self, now: float) -> None:
        """Forget leases handed back or ended by ``now``: their workers will not answer."""
        order, live = self._order, self._live
        while order:
            seq, ends = order[0]
            if live.get(seq) == ends and ends > now:
                break
            order.popleft()
            if live.get(seq) == ends:
                del live[seq]

    def next_end(self) -> float:
        """Return when the oldest live lease ends (after :meth:`reclaim`; ``inf`` if none)."""
        return self._order[0][1] if self._live else float("inf")
