"""Tests for the enqueued-token budget: one validation at a time, under the limit, learned."""

import itertools
import random

import pytest

from throttle.batch_budget import EnqueuedBudget, stated_limit

MESSAGE = (
    "Enqueued token limit reached for gpt-4o-mini in organization org-x. Limit: 2,000,000 "
    "enqueued tokens. Please try again once some in_progress batches have been completed."
)


def test_stated_limit_is_read_from_the_real_message() -> None:
    """The limit the API names in its message, commas and all; none when it names none."""
    assert stated_limit(MESSAGE) == 2_000_000
    assert stated_limit("Limit: 90000 enqueued tokens.") == 90_000
    assert stated_limit("Enqueued token limit reached.") is None


def test_unknown_limit_lets_one_batch_validate_at_a_time_per_model() -> None:
    """While a model's batch validates, no other batch of it goes; other models do."""
    budget = EnqueuedBudget()
    assert budget.can_submit("a", 10**9)
    budget.submitted("a", "b1", 100)
    assert not budget.can_submit("a", 1)
    assert budget.can_submit("b", 1)
    budget.accepted("a", "b1")
    assert budget.can_submit("a", 10**9)
    assert budget.enqueued("a") == 100


def test_known_limit_holds_the_running_batches_under_it() -> None:
    """A batch goes only if it fits next to the running ones; an ended one frees its room."""
    budget = EnqueuedBudget({"a": 1000})
    budget.submitted("a", "b1", 600)
    budget.accepted("a", "b1")
    assert budget.can_submit("a", 400)
    assert not budget.can_submit("a", 401)
    budget.ended("a", "b1")
    assert budget.can_submit("a", 1000)
    assert not budget.fits_alone("a", 1001)


def test_default_limit_applies_to_models_not_named() -> None:
    """``default`` is every other model's limit."""
    budget = EnqueuedBudget({"a": 10}, default=100)
    assert (budget.limit("a"), budget.limit("z")) == (10, 100)


def test_refusal_learns_the_stated_limit_when_below_what_was_enqueued() -> None:
    """Our count was above the server's limit: its stated limit holds in our units."""
    budget = EnqueuedBudget()
    budget.submitted("a", "b1", 1_500_000)
    budget.accepted("a", "b1")
    budget.submitted("a", "b2", 1_000_000)
    step = budget.refused("a", "b2", MESSAGE)
    assert (step.before, step.after, step.enqueued) == (None, 2_000_000, 2_500_000)
    assert budget.enqueued("a") == 1_500_000  # the refused batch no longer counts
    assert budget.can_submit("a", 500_000)
    assert not budget.can_submit("a", 500_001)


def test_refusal_under_what_we_counted_shrinks_the_limit_to_80_percent() -> None:
    """The server counts more than we do (or said nothing): 80% of what was enqueued."""
    budget = EnqueuedBudget()
    budget.submitted("a", "b1", 1000)
    assert budget.refused("a", "b1", "Limit: 5,000 enqueued tokens").after == 800
    budget.submitted("a", "b2", 500)
    assert budget.refused("a", "b2", "no number here").after == 400


def test_learning_never_raises_a_limit() -> None:
    """A later lesson, or an earlier run's, only ever lowers it."""
    budget = EnqueuedBudget({"a": 1000})
    budget.learn("a", 2000)
    assert budget.limit("a") == 1000
    budget.learn("a", 900)
    budget.submitted("a", "b1", 100)
    assert budget.refused("a", "b1", "Limit: 5,000 enqueued tokens").after == 80
    assert [s.after for s in budget.steps] == [80]


@pytest.mark.parametrize("seed", range(10))
def test_against_a_server_with_a_hidden_limit_each_refusal_is_its_own_lesson(seed: int) -> None:
    """Property: driven against a hidden limit, no two refusals share a learning step.

    The "server" counts tokens 1.3x our estimate and refuses a batch that would take its
    enqueued count over the limit; every batch that validates first frees its room later.
    """
    draw = random.Random(seed)  # noqa: S311 - seeded test data, not secrets
    server_limit = draw.randint(2_000, 20_000)
    budget = EnqueuedBudget()
    running: dict[str, int] = {}
    queue = [draw.randint(100, 1_500) for _ in range(60)]
    refusals, number = 0, 0
    while queue:
        tokens = queue[0]
        if not budget.fits_alone("m", tokens):
            queue[0:1] = [tokens // 2, tokens - tokens // 2]  # cut smaller, as the executor does
            continue
        if not budget.can_submit("m", tokens):
            batch_id = draw.choice(sorted(running))  # wait for a running batch to end
            budget.ended("m", batch_id)
            del running[batch_id]
            continue
        queue.pop(0)
        number += 1
        batch_id = f"b{number}"
        budget.submitted("m", batch_id, tokens)
        assert not budget.can_submit("m", 1)  # nothing else validates meanwhile
        if 1.3 * (sum(running.values()) + tokens) > server_limit:
            before = len(budget.steps)
            budget.refused("m", batch_id, f"Limit: {server_limit:,} enqueued tokens")
            refusals += 1
            assert len(budget.steps) == before + 1
            queue.insert(0, tokens)
        else:
            budget.accepted("m", batch_id)
            running[batch_id] = tokens
    limits = [step.after for step in budget.steps]
    assert refusals == len(limits)
    assert all(later < earlier for earlier, later in itertools.pairwise(limits))
    assert refusals <= 6  # a handful of lessons, not one per batch
