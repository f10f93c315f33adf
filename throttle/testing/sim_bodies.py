"""The simulated API's answers and error bodies, in the real servers' shapes."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from throttle.durations import format_duration

DOCS = "Visit https://platform.openai.com/account/rate-limits to learn more."
_UNIT_NAMES = {
    "tokens": "tokens per min (TPM)",
    "requests": "requests per min (RPM)",
    "requests_per_day": "requests per day (RPD)",
}


def error_body(
    message: str, kind: str | None, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """Return an OpenAI error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def invalid_url_body(method: str, path: str) -> dict[str, Any]:
    """Return OpenAI's 404 for a path it does not serve, e.g. ``Invalid URL (POST /v1/x)``."""
    return error_body(f"Invalid URL ({method} {path})", "invalid_request_error", None)


# Azure's 404 for an unknown operation under a deployment: ``"code": "404"`` and no type.
AZURE_NOT_FOUND_BODY = {"error": {"code": "404", "message": "Resource not found"}}
NOT_JSON_BODY = error_body(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)",
    "invalid_request_error",
    None,
)


def rate_limit_body(
    *,
    model: str,
    org: str,
    limit_type: str,
    limit: float,
    used: float,
    requested: float,
    wait: float,
) -> dict[str, Any]:
    """Return OpenAI's 429 rate_limit_exceeded body for a requests, tokens or daily limit."""
    message = (
        f"Rate limit reached for {model} in organization {org} on {_UNIT_NAMES[limit_type]}: "
        f"Limit {limit:.0f}, Used {used:.0f}, Requested {requested:.0f}. "
        f"Please try again in {format_duration(wait)}. {DOCS}"
    )
    kind = "requests" if limit_type.startswith("requests") else "tokens"
    return error_body(message, kind, "rate_limit_exceeded")


def azure_rate_limit_body(wait: float) -> dict[str, Any]:
    """Return Azure's 429 body: ``"code": "429"`` and no type."""
    seconds = max(1, round(wait))
    message = (
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        "2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. "
        f"Please retry after {seconds} seconds."
    )
    return {"error": {"code": "429", "message": message}}


def too_large_body(*, model: str, org: str, limit: float, requested: float) -> dict[str, Any]:
    """Return the 429 for a request larger than the whole TPM budget."""
    message = (
        f"Request too large for {model} in organization {org} on tokens per min (TPM): "
        f"Limit {limit:.0f}, Requested {requested:.0f}. The input or output tokens must be "
        f"reduced in order to run successfully. {DOCS}"
    )
    return error_body(message, "tokens", "rate_limit_exceeded")


QUOTA_BODY = error_body(
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors.",
    "insufficient_quota",
    "insufficient_quota",
)
SERVER_ERROR_BODY = error_body(
    "The server had an error processing your request. Sorry about that! You can retry your "
    "request, or contact us through our help center if you keep seeing this error.",
    "server_error",
    None,
)
OVERLOADED_BODY = error_body(
    "That model is currently overloaded with other requests. You can retry your request.",
    "server_error",
    None,
)


def _words(count: int) -> list[str]:
    return [f"word{i}" for i in range(count)]


def chat_completion(model: str, prompt: int, completion: int, request_id: str) -> dict[str, Any]:
    """Return a chat.completion object."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(_words(completion))},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def response_object(model: str, prompt: int, completion: int, request_id: str) -> dict[str, Any]:
    """Return a Responses API ``response`` object."""
    return {
        "id": f"resp_{request_id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{request_id}",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": " ".join(_words(completion)), "annotations": []}
                ],
            }
        ],
        "usage": {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def embeddings(model: str, inputs: list[object], prompt: int, dimensions: int) -> dict[str, Any]:
    """Return an embeddings list: a deterministic vector per input."""
    data = []
    for index, item in enumerate(inputs):
        digest = hashlib.sha256(json.dumps(item).encode()).digest()
        vector = [(digest[i % len(digest)] - 128) / 128 for i in range(dimensions)]
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def answer(
    kind: str,
    model: str,
    payload: Mapping[str, Any],
    *,
    prompt: int,
    completion: int,
    request_id: str,
) -> dict[str, Any]:
    """Return the online answer to ``payload``, which a batch's output line carries too.

    Args:
        kind: the endpoint's kind: ``"responses"``, ``"embeddings"``, else a chat completion.
        model: the model that answers.
        payload: the request body.
        prompt: the prompt tokens the server counted.
        completion: the completion tokens it generates.
        request_id: the answer's ``x-request-id``.
    """
    if kind == "responses":
        return response_object(model, prompt, completion, request_id)
    if kind == "embeddings":
        raw = payload.get("input")
        many = isinstance(raw, list) and bool(raw) and not isinstance(raw[0], int)
        inputs = raw if many and isinstance(raw, list) else [raw]
        return embeddings(model, inputs, prompt, int(payload.get("dimensions", 8)))
    return chat_completion(model, prompt, completion, request_id)


def chat_stream_events(
    model: str, prompt: int, completion: int, request_id: str, include_usage: bool
) -> list[str]:
    """Return the SSE ``data:`` payloads of a streamed chat completion, ``[DONE]`` last."""
    base = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    events: list[Mapping[str, Any]] = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    events += [
        {**base, "choices": [{"index": 0, "delta": {"content": f" {word}"}, "finish_reason": None}]}
        for word in _words(completion)
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        events.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )
    return [json.dumps(e) for e in events] + ["[DONE]"]


def responses_stream_events(
    model: str, prompt: int, completion: int, request_id: str
) -> list[tuple[str, str]]:
    """Return (event name, data) pairs of a streamed response, ``response.completed`` last."""
    final = response_object(model, prompt, completion, request_id)
    created = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"type": "response.created", "response": created})
    ]
    events += [
        (
            "response.output_text.delta",
            {
                "type": "response.output_text.delta",
                "item_id": f"msg_{request_id}",
                "output_index": 0,
                "content_index": 0,
                "delta": f" {word}",
            },
        )
        for word in _words(completion)
    ]
    events.append(("response.completed", {"type": "response.completed", "response": final}))
    return [(name, json.dumps(data)) for name, data in events]
