"""A reservation: what one attempt draws from its key's buckets, and the proof it was admitted.

The backend hands out a :class:`Ticket` when it admits a :class:`Cost`; the scheduler hands
the ticket back with the attempt's answer, and the ledgers it carries let the backend tell what
was admitted after the answered request (see ``limits``).
"""

from __future__ import annotations

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
