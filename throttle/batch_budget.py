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
  A batch larger than the limit that cannot be cut smaller (one line) goes alone.
* **Learning downward.** A batch that fails with ``token_limit_exceeded`` sets the limit to the
  one its message states ("Limit: 2,000,000 enqueued tokens") when that is below what this
  budget thought enqueued, which the estimates then honour; when the message states none, the
  limit becomes 80% of what was enqueued with the failed batch. Never below the largest batch
  the server accepted for the model (it fitted), and an earlier run's lesson never overrides
  a configured limit. The failed batch is created again later, never lost; a batch larger
  than the learned limit is cut smaller by the executor (:meth:`EnqueuedBudget.fits_alone`).
* **Crowded, not much lower.** When the stated limit is at least what this budget holds,
  the server counted more than this job holds: batches that are not the job's (another job
  or tool of the organization) hold the rest, or the estimates count low (the simulator
  counts a fifth more than they do on plain English). The limit comes down by a fifth of
  what was enqueued, as above, but never below a quarter of the stated limit: estimates are
  not that far off, and shrinking on while others' batches run would cut it to less than a
  line. The model waits until the job's running batches have ended; a batch refused alone
  that goes again as it is waits a pause first (:attr:`LearningStep.crowded`). Such
  lessons are not kept for the next run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

SHRINK = 0.8  # the learned limit when the server states none: this share of what we held
UNDERCOUNT = 4  # a crowded limit comes down to a quarter of the stated one at most
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
    """One refusal: a batch failed over the enqueued limit, and what the budget made of it.

    Attributes:
        model: whose limit.
        batch_id: the batch that failed.
        enqueued: the estimated tokens enqueued with it (its own included).
        before: the limit before (``None``: unknown).
        after: the limit now.
        tokens: the failed batch's own estimated tokens.
        stated: the limit the server's message stated, if it did.
        crowded: 0 when the server's count was above the job's; else how many refusals in
            a row of the model the server counted more than the job holds in (the limit
            comes down little or not at all, and the batch waits: see the module's rule).
    """

    model: str
    batch_id: str
    enqueued: int
    before: int | None
    after: int
    tokens: int = 0
    stated: int | None = None
    crowded: int = 0

    @property
    def alone(self) -> bool:
        """Whether the failed batch was the only one of the job enqueued for its model."""
        return self.enqueued == self.tokens

    @property
    def too_large(self) -> bool:
        """Whether the batch, alone, is over the limit the server stated: it never fits."""
        return self.alone and self.stated is not None and self.tokens > self.stated


@dataclass(slots=True)
class _Model:
    configured: int | None
    limit: int | None
    validating: dict[str, int] = field(default_factory=dict)  # batch id -> tokens
    running: dict[str, int] = field(default_factory=dict)
    floor: int = 0  # the largest batch the server accepted: the limit is at least this
    wait_for: set[str] = field(default_factory=set)  # to end before the next batch (crowded)
    crowded: int = 0  # crowded refusals in a row

    @property
    def enqueued(self) -> int:
        return sum(self.validating.values()) + sum(self.running.values())


class EnqueuedBudget:
    """Per model, the enqueued tokens of the batches in flight, kept under the model's limit.

    Args:
        limits: configured limits of named models (estimated tokens).
        default: the configured limit of every other model; ``None``: unknown until learned.
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
            configured = self._limits.get(model, self._default)
            state = self._models[model] = _Model(configured, configured)
        return state

    def limit(self, model: str) -> int | None:
        """Return the model's limit as known now (``None``: unknown)."""
        return self._model(model).limit

    def configured(self, model: str) -> int | None:
        """Return the model's configured limit (``None``: none): no batch may exceed it."""
        return self._model(model).configured

    def enqueued(self, model: str) -> int:
        """Return the estimated tokens of the model's batches validating or running."""
        return self._model(model).enqueued

    def learn(self, model: str, limit: int) -> None:
        """Take a limit learned by an earlier run if it is lower (a configured one wins)."""
        state = self._model(model)
        if state.configured is None and (state.limit is None or limit < state.limit):
            state.limit = max(limit, state.floor)

    def passed(self, model: str, tokens: int) -> None:
        """A batch of ``tokens`` passed validation (in an earlier run): the limit holds it."""
        state = self._model(model)
        state.floor = max(state.floor, tokens)
        if state.limit is not None and state.limit < state.floor:
            state.limit = state.floor

    def fits_alone(self, model: str, tokens: int) -> bool:
        """Whether a batch of ``tokens`` fits under the model's limit with nothing else."""
        limit = self._model(model).limit
        return limit is None or tokens <= limit

    def can_submit(self, model: str, tokens: int) -> bool:
        """Whether a batch of ``tokens`` may be created now (see the module's rule)."""
        state = self._model(model)
        if state.validating or state.wait_for:
            return False
        limit, enqueued = state.limit, state.enqueued
        return limit is None or enqueued + tokens <= limit or enqueued == 0

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
            state.crowded = 0
            self.passed(model, tokens)

    def ended(self, model: str, batch_id: str) -> None:
        """The batch stopped (completed, expired, cancelled, or failed for another reason)."""
        state = self._model(model)
        state.validating.pop(batch_id, None)
        state.running.pop(batch_id, None)
        state.wait_for.discard(batch_id)

    def refused(self, model: str, batch_id: str, message: str) -> LearningStep:
        """The batch failed with ``token_limit_exceeded``: learn the limit from it, or wait.

        Args:
            model: its model.
            batch_id: the batch.
            message: the error's message (it may state the limit).

        Returns:
            The lesson (also kept in :attr:`steps`).
        """
        state = self._model(model)
        tokens = state.validating.get(batch_id, state.running.get(batch_id, 0))
        enqueued = state.enqueued  # the failed batch's own tokens included
        self.ended(model, batch_id)
        stated = stated_limit(message)
        crowded = stated is not None and stated >= enqueued  # the server counted more
        if stated is None:
            learned = max(1, math.floor(enqueued * SHRINK))
        elif not crowded:
            learned = stated  # our count is above the server's: its limit holds in ours
        else:  # others' batches, or estimates that count low: a fifth less, to a quarter
            learned = max(math.floor(enqueued * SHRINK), math.ceil(stated / UNDERCOUNT))
            state.wait_for = set(state.validating) | set(state.running)  # the job's own
        state.crowded = state.crowded + 1 if crowded else 0
        before = state.limit
        state.limit = max(learned if before is None else min(before, learned), state.floor)
        step = LearningStep(
            model, batch_id, enqueued, before, state.limit, tokens, stated, state.crowded
        )
        self.steps.append(step)
        return step
