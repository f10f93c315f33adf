"""What becomes of each line of a batch, drawn once, when the batch is created.

A seeded generator shuffles the lines into the order the batch answers them (which is also
the order of its output and error files: the real files are unordered too) and draws each
line's fate: answered, answered with a 500, or expired. A line whose body the online endpoint
would refuse is answered with that 400. Running totals let a batch report its request counts
at any moment without walking its lines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import accumulate

from throttle.testing.sim_accounting import output_cap, prompt_tokens
from throttle.testing.sim_batch_config import BatchSettings
from throttle.testing.sim_batch_input import BatchInput
from throttle.testing.sim_routes import Route, body_problem

ANSWERED = "answered"  # 200, in the output file
SERVER_ERROR = "server_error"  # 500, in the error file
REFUSED = "refused"  # 400 (a body the endpoint refuses), in the error file
EXPIRED = "expired"  # batch_expired, in the error file


def line_tokens(kind: str, body: dict[str, object], completion_tokens: int) -> tuple[int, int, int]:
    """Return a request's (prompt, completion, enqueued) tokens.

    Prompt and completion are those of the online answer; enqueued is what the online endpoint
    would charge against TPM (the prompt, plus ``max_tokens`` except for embeddings), which is
    what a batch holding the request enqueues.

    Args:
        kind: the endpoint's kind, e.g. ``"chat"``.
        body: the request body.
        completion_tokens: what the simulator generates when ``max_tokens`` allows it.
    """
    prompt = prompt_tokens(body)
    if kind == "embeddings":
        return prompt, 0, prompt
    cap = output_cap(body)
    return prompt, min(cap or completion_tokens, completion_tokens), prompt + cap


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Each line's turn and fate, with running totals by turn.

    Attributes:
        order: line indexes (into the input file) in the order they are answered.
        fates: the fate of each turn (:data:`ANSWERED`, ...), aligned with ``order``.
        tokens: each turn's (prompt, completion) tokens, aligned with ``order``.
        answered_before: ``answered_before[k]`` lines of the first ``k`` turns were answered.
        errors_before: likewise for lines answered with an error (500 or 400).
        prompt_before: likewise, the prompt tokens of answered lines.
        completion_before: likewise, the completion tokens of answered lines.
        enqueued: the tokens the batch enqueues.
    """

    order: tuple[int, ...]
    fates: tuple[str, ...]
    tokens: tuple[tuple[int, int], ...]
    answered_before: tuple[int, ...]
    errors_before: tuple[int, ...]
    prompt_before: tuple[int, ...]
    completion_before: tuple[int, ...]
    enqueued: int


def _running(values: list[int]) -> tuple[int, ...]:
    return tuple(accumulate(values, initial=0))


def plan_batch(
    batch: BatchInput, settings: BatchSettings, seed: str, completion_tokens: int
) -> BatchPlan:
    """Draw the order and fate of every line of ``batch``.

    Args:
        batch: the input file's requests.
        settings: the shares of expired and failed lines.
        seed: seeds this batch's generator (the server's seed and the batch's id).
        completion_tokens: what the simulator generates when ``max_tokens`` allows it.

    Returns:
        The plan; the same seed gives the same plan.
    """
    draw = random.Random(seed)  # noqa: S311 - simulated outcomes, not secrets
    order = list(range(len(batch.lines)))
    draw.shuffle(order)
    route = Route(batch.kind)
    fates: list[str] = []
    tokens: list[tuple[int, int]] = []
    enqueued = 0
    for index in order:
        body = batch.lines[index].body
        roll = draw.random()
        if body_problem(route, body) is not None:
            fates.append(REFUSED)
        elif roll < settings.expired_share:
            fates.append(EXPIRED)
        elif roll < settings.expired_share + settings.failed_share:
            fates.append(SERVER_ERROR)
        else:
            fates.append(ANSWERED)
        prompt, completion, charge = line_tokens(batch.kind, body, completion_tokens)
        tokens.append((prompt, completion))
        enqueued += charge
    answered = [fate == ANSWERED for fate in fates]
    return BatchPlan(
        order=tuple(order),
        fates=tuple(fates),
        tokens=tuple(tokens),
        answered_before=_running([int(a) for a in answered]),
        errors_before=_running([int(f in (SERVER_ERROR, REFUSED)) for f in fates]),
        prompt_before=_running([t[0] if a else 0 for t, a in zip(tokens, answered, strict=True)]),
        completion_before=_running(
            [t[1] if a else 0 for t, a in zip(tokens, answered, strict=True)]
        ),
        enqueued=enqueued,
    )
