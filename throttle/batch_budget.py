"""The enqueued-token budget: how many batch tokens a model may have queued at the Batch API.

The Batch API holds, per model, at most a tier's number of "enqueued tokens" across the
batches still running; it says so only when a batch that would go over it fails validation
(``token_limit_exceeded``), often minutes after it was created. The budget keeps the sum of
the estimated tokens of a model's running batches under the model's limit, and learns that
limit from those failures. Pure: no I/O, no clock.

The rule, per model:

* **One batch validating at a time.** A batch is created only when no other batch of its
  model is still validating. A failure is seen before the next batch is created, so at most
  one batch per model fails before the budget learns from it, whatever the estimates are
  worth and whether or not the limit is known. It costs a validation's time per batch, next
  to a batch's minutes to hours of running.
* **Under the limit once known.** With a limit (configured, or learned), a batch is created
  only when its tokens fit under it next to the model's running batches. While the limit is
  unknown, batches are created one validation after another, and the first failure teaches it.
* **Learning downward.** A batch that fails with ``token_limit_exceeded`` sets the limit to the
  one its message states ("Limit: 2,000,000 enqueued tokens") when that is below what this
  budget thought enqueued, which the estimates then honour; otherwise the estimates count low
  (or the message said nothing), and the limit becomes 80% of what was enqueued with the
  failed batch. The failed batch is created again later, never lost; a batch larger than the
  learned limit is cut smaller by the executor (:meth:`EnqueuedBudget.fits_alone`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

SHRINK = 0.8  # the learned limit when the server's count is above ours: this share of ours
_STATED = re.compile(r"Limit:\s*([\d,_]+)\s*enqueued tokens", re.IGNORECASE)


def stated_limit(message: str) -> int | None:
    """Return the limit a ``token_limit_exceeded`` message states, or ``None``.

    Args:
        message: the batch error's message, e.g. ``"Enqueued token limit reached for
            gpt-4o-mini in organization org-x. Limit: 2,000,000 enqueued tokens. ..."``.
    """
    found = _STATED.search(message)
    if found is None:
        return None
    digits = found.group(1).replace(",", "").replace("_", "")
    return int(digits) if digits else None


@dataclass(frozen=True, slots=True)
class LearningStep:
    """One lesson: a batch failed over the enqueued limit, and the limit came down.

    Attributes:
        model: whose limit.
        batch_id: the batch that failed.
        enqueued: the estimated tokens enqueued with it (its own included).
        before: the limit before (``None``: unknown).
        after: the limit learned.
    """

    model: str
    batch_id: str
    enqueued: int
    before: int | None
    after: int


@dataclass(slots=True)
class _Model:
    limit: int | None
    validating: dict[str, int] = field(default_factory=dict)  # batch id -> tokens
    running: dict[str, int] = field(default_factory=dict)

    @property
    def enqueued(self) -> int:
        return sum(self.validating.values()) + sum(self.running.values())


class EnqueuedBudget:
    """Per model, the enqueued tokens of the batches in flight, kept under the model's limit.

    Args:
        limits: known limits of named models (estimated tokens).
        default: the known limit of every other model; ``None``: unknown until learned.
    """

    def __init__(self, limits: Mapping[str, int] | None = None, default: int | None = None):
        self._limits = dict(limits or {})
        self._default = default
        self._models: dict[str, _Model] = {}
        self.steps: list[LearningStep] = []

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}: {state.enqueued:,}/{'?' if state.limit is None else f'{state.limit:,}'}"
            for name, state in self._models.items()
        )
        return f"EnqueuedBudget({shown})"

    def _model(self, model: str) -> _Model:
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = _Model(self._limits.get(model, self._default))
        return state

    def limit(self, model: str) -> int | None:
        """Return the model's limit as known now (``None``: unknown)."""
        return self._model(model).limit

    def enqueued(self, model: str) -> int:
        """Return the estimated tokens of the model's batches validating or running."""
        return self._model(model).enqueued

    def learn(self, model: str, limit: int) -> None:
        """Take a limit known from before (an earlier run's lesson) if it is lower."""
        state = self._model(model)
        if state.limit is None or limit < state.limit:
            state.limit = limit

    def fits_alone(self, model: str, tokens: int) -> bool:
        """Whether a batch of ``tokens`` fits under the model's limit with nothing else."""
        limit = self._model(model).limit
        return limit is None or tokens <= limit

    def can_submit(self, model: str, tokens: int) -> bool:
        """Whether a batch of ``tokens`` may be created now (see the module's rule)."""
        state = self._model(model)
        if state.validating:
            return False
        return state.limit is None or state.enqueued + tokens <= state.limit

    def submitted(self, model: str, batch_id: str, tokens: int) -> None:
        """A batch was created: it validates now."""
        state = self._model(model)
        state.running.pop(batch_id, None)
        state.validating[batch_id] = tokens

    def accepted(self, model: str, batch_id: str) -> None:
        """The batch passed validation: it runs (and still counts) until it ends."""
        state = self._model(model)
        tokens = state.validating.pop(batch_id, None)
        if tokens is not None:
            state.running[batch_id] = tokens

    def ended(self, model: str, batch_id: str) -> None:
        """The batch stopped (completed, expired, cancelled, or failed for another reason)."""
        state = self._model(model)
        state.validating.pop(batch_id, None)
        state.running.pop(batch_id, None)

    def refused(self, model: str, batch_id: str, message: str) -> LearningStep:
        """The batch failed with ``token_limit_exceeded``: learn the limit from it.

        Args:
            model: its model.
            batch_id: the batch.
            message: the error's message (it may state the limit).

        Returns:
            The lesson (also kept in :attr:`steps`).
        """
        state = self._model(model)
        enqueued = state.enqueued  # the failed batch's own tokens included
        self.ended(model, batch_id)
        stated = stated_limit(message)
        if stated is not None and stated < enqueued:
            learned = stated  # our count is at least the server's: its limit holds in ours
        else:
            learned = max(1, math.floor(enqueued * SHRINK))
        before = state.limit
        state.limit = learned if before is None else min(before, learned)
        step = LearningStep(model, batch_id, enqueued, before, state.limit)
        self.steps.append(step)
        return step
