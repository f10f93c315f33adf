"""Tests for the enqueued-token budget: one validation at a time, under the limit, learned."""

import itertools
import random

import pytest

from throttle.batch_budget import EnqueuedBudget, stated_limit

STATED = "Limit: {:,} enqueued tokens."
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


def test_refusal_stating_no_limit_shrinks_it_to_80_percent_of_what_was_enqueued() -> None:
    """The message names no number: 80% of what was enqueued with the failed batch."""
    budget = EnqueuedBudget()
    budget.submitted("a", "b1", 1000)
    assert budget.refused("a", "b1", "no number here").after == 800
    budget.submitted("a", "b2", 500)
    assert budget.refused("a", "b2", "Enqueued token limit reached.").after == 400


def test_refusal_over_a_limit_others_fill_waits_and_stops_at_a_quarter_of_it() -> None:
    """Stated limit above what we hold: wait for ours to end; a fifth less, to a quarter."""
    budget = EnqueuedBudget()
    budget.submitted("a", "b1", 1_000)
    budget.accepted("a", "b1")
    budget.submitted("a", "b2", 3_000)
    step = budget.refused("a", "b2", "Limit: 10,000 enqueued tokens")
    assert (step.after, step.stated, step.crowded, step.alone) == (3_200, 10_000, 1, False)
    assert not budget.can_submit("a", 100)  # until the job's running batch ended
    budget.ended("a", "b1")
    assert budget.can_submit("a", 1_000)
    for number, crowded in ((3, 2), (4, 3), (5, 4)):  # others hold it all: no lower than 2,500
        budget.submitted("a", f"b{number}", 1_000)
        step = budget.refused("a", f"b{number}", "Limit: 10,000 enqueued tokens")
        assert (step.after, step.crowded, step.alone, step.too_large) == (
            2_500,
            crowded,
            True,
            False,
        )
    assert budget.can_submit("a", 1_000)  # alone: the executor pauses the file instead
    budget.submitted("a", "b6", 1_000)
    budget.accepted("a", "b6")
    budget.submitted("a", "b7", 1_000)
    assert budget.refused("a", "b7", "Limit: 10,000 enqueued tokens").crowded == 1


def test_refusal_alone_within_the_stated_limit_shrinks_when_estimates_count_low() -> None:
    """The server counts 1.25x ours: alone, 4,000 of ours is over 4,500; the limit comes down."""
    budget = EnqueuedBudget()
    budget.submitted("a", "b1", 4_000)
    step = budget.refused("a", "b1", "Limit: 4,500 enqueued tokens")
    assert (step.after, step.crowded, step.alone) == (3_200, 1, True)
    assert not budget.fits_alone("a", 4_000)  # the file is cut smaller


def test_a_learned_limit_never_drops_below_the_largest_batch_accepted() -> None:
    """A batch of 600 passed: however the lessons go, the limit stays at least 600."""
    budget = EnqueuedBudget()
    budget.submitted("a", "b1", 600)
    budget.accepted("a", "b1")
    budget.ended("a", "b1")
    for number in range(2, 12):
        budget.submitted("a", f"b{number}", 500)
        budget.refused("a", f"b{number}", "no number")
    assert budget.limit("a") == 600
    budget.learn("a", 3)  # an earlier run's lesson, far lower
    assert budget.limit("a") == 600
    earlier = EnqueuedBudget()
    earlier.learn("a", 3)
    earlier.passed("a", 400)  # a batch of an earlier run completed
    assert earlier.limit("a") == 400


def test_a_configured_limit_wins_over_an_earlier_runs_lesson() -> None:
    """--batch-enqueued-tokens undoes what the journal learned; within the run it still learns."""
    budget = EnqueuedBudget({"a": 1000}, default=2000)
    budget.learn("a", 10)
    budget.learn("z", 10)
    assert (budget.limit("a"), budget.limit("z")) == (1000, 2000)
    assert (budget.configured("a"), budget.configured("z")) == (1000, 2000)
    budget.submitted("a", "b1", 900)
    assert budget.refused("a", "b1", "Limit: 500 enqueued tokens").after == 500
    assert budget.configured("a") == 1000
    unconfigured = EnqueuedBudget()
    unconfigured.learn("a", 2000)
    unconfigured.learn("a", 900)
    unconfigured.learn("a", 1500)
    assert (unconfigured.limit("a"), unconfigured.configured("a")) == (900, None)


def test_a_batch_over_the_limit_goes_alone_and_a_refusal_alone_names_it_too_large() -> None:
    """One line over the limit cannot be cut: it waits until nothing else of its model runs."""
    budget = EnqueuedBudget({"a": 100})
    budget.submitted("a", "b1", 50)
    budget.accepted("a", "b1")
    assert not budget.fits_alone("a", 150)
    assert not budget.can_submit("a", 150)
    budget.ended("a", "b1")
    assert budget.can_submit("a", 150)
    budget.submitted("a", "b2", 150)
    step = budget.refused("a", "b2", "Limit: 120 enqueued tokens")
    assert (step.alone, step.too_large, step.crowded) == (True, True, 0)


@pytest.mark.parametrize(
    ("server_count", "message"), [(1.3, "Limit reached."), (0.8, STATED), (1.3, STATED)]
)
@pytest.mark.parametrize("seed", range(10))
def test_against_a_server_with_a_hidden_limit_each_refusal_is_its_own_lesson(
    seed: int, server_count: float, message: str
) -> None:
    """Property: driven against a hidden limit, no two refusals share a learning step.

    The "server" counts tokens ``server_count`` times our estimate and refuses a batch that
    would take its enqueued count over the limit (stating it, or not); every batch that
    validates first frees its room later.
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
        if server_count * (sum(running.values()) + tokens) > server_limit:
            before = len(budget.steps)
            budget.refused("m", batch_id, message.format(server_limit))
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
