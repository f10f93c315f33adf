"""The output and error files a finished simulated batch writes, in the real JSONL shapes.

An answered line carries the very body the online endpoint would have answered
(:func:`throttle.testing.sim_bodies.answer`), so that a result does not depend on the path it
took. Lines answered with an error (500, or the 400 the endpoint gives a body it refuses) and
lines that expired go to the error file; lines a cancel cut off (or that were to expire) go
nowhere.
"""

from __future__ import annotations

import json
from typing import Any

from throttle.testing import sim_bodies as bodies
from throttle.testing.sim_batch_input import BatchInput
from throttle.testing.sim_batch_plan import ANSWERED, EXPIRED, SERVER_ERROR, BatchPlan
from throttle.testing.sim_files import object_id
from throttle.testing.sim_routes import Route, body_problem

EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


def _response(status: int, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"status_code": status, "request_id": request_id, "body": body}


def _refusal(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The 400 body the online endpoint gives ``body``."""
    problem = body_problem(Route(kind), body)
    assert problem is not None  # noqa: S101 - only refused lines come here
    message, param, code = problem
    return bodies.error_body(message, "invalid_request_error", code, param)


def render_files(
    batch_id: str, batch: BatchInput, plan: BatchPlan, answered: int, *, cancelled: bool
) -> tuple[bytes, bytes]:
    """Return the (output, error) JSONL files of a finished batch, in answering order.

    Args:
        batch_id: the batch's id (the line and request ids derive from it).
        batch: the input file's requests.
        plan: each line's turn and fate.
        answered: how many turns were taken before the batch stopped.
        cancelled: whether a cancel stopped it (the turns not taken are then dropped; else
            they expired).

    Returns:
        The two files' bytes; either may be empty.
    """
    output: list[str] = []
    errors: list[str] = []
    for turn, (index, fate) in enumerate(zip(plan.order, plan.fates, strict=True)):
        if cancelled and (turn >= answered or fate == EXPIRED):
            continue  # a cancel drops what had not run
        line = batch.lines[index]
        suffix = object_id("", batch_id, turn)
        request_id = f"req_{suffix}"
        record: dict[str, Any] = {
            "id": f"batch_req_{suffix}",
            "custom_id": line.custom_id,
            "response": None,
            "error": None,
        }
        if turn >= answered or fate == EXPIRED:
            record["error"] = EXPIRED_ERROR
        elif fate == ANSWERED:
            prompt, completion = plan.tokens[turn]
            body = bodies.answer(
                batch.kind,
                batch.model,
                line.body,
                prompt=prompt,
                completion=completion,
                request_id=request_id,
            )
            record["response"] = _response(200, request_id, body)
        elif fate == SERVER_ERROR:
            record["response"] = _response(500, request_id, bodies.SERVER_ERROR_BODY)
        else:
            record["response"] = _response(400, request_id, _refusal(batch.kind, line.body))
        (output if fate == ANSWERED and turn < answered else errors).append(json.dumps(record))
    return _jsonl(output), _jsonl(errors)


def _jsonl(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()
