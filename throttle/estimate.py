"""Estimating how many tokens a request will be charged, before it is sent.

The server charges roughly the prompt plus the output it may produce (``n`` x the output cap),
whether or not the output is used. The estimate is a forecast: the response headers are the
truth and correct the buckets afterwards. How the prompt is counted lives in
:mod:`throttle.prompt_tokens`; this module adds the output a request reserves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from throttle.errors import InvalidRequestError
from throttle.prompt_tokens import (
    count_prompt_tokens,
    type_name,
)
from throttle.tokenizer import EncodingCache, default_encodings

DEFAULT_OUTPUT_TOKENS = 1024
"""Output tokens reserved when a body sets no ``max_*_tokens`` (configurable per call)."""

MAX_COUNT = 100_000_000
"""Largest ``max_*_tokens``, ``n`` or ``best_of`` a body may set.

No model's context window comes near 100M tokens; a larger value is a mistake, refused here
rather than overflowing the token buckets at admission.
"""

_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_FAN_OUT_FIELDS = frozenset({"n", "best_of", "prompt"})  # more than one answer to reserve for


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """Tokens a request is expected to be charged.

    Attributes:
        prompt: input tokens.
        completion: output tokens reserved (``n`` x the output cap).
        exact: ``False`` when tiktoken was unavailable and text was counted by length.
    """

    prompt: int
    completion: int
    exact: bool = True

    @property
    def total(self) -> int:
        """Prompt plus reserved completion tokens: what the tokens bucket is charged."""
        return self.prompt + self.completion


# A frozen dataclass's __init__ sets each field through object.__setattr__: once per request,
# a few percent of an estimate's time. The slots' own setters take half as long.
_new_estimate = object.__new__
_set_prompt, _set_completion, _set_exact = (
    vars(TokenEstimate)[field].__set__ for field in ("prompt", "completion", "exact")
)


def _estimate(prompt: int, completion: int, exact: bool) -> TokenEstimate:
    """Return ``TokenEstimate(prompt, completion, exact)``, built without its ``__init__``."""
    estimate: TokenEstimate = _new_estimate(TokenEstimate)
    _set_prompt(estimate, prompt)
    _set_completion(estimate, completion)
    _set_exact(estimate, exact)
    return estimate


@functools.lru_cache(maxsize=1024)  # asked once per request: a client posts to a few URLs
def endpoint_kind(endpoint: str) -> str:
    """Name the API an endpoint path or URL belongs to.

    Args:
        endpoint: ``"chat/completions"``, ``"/v1/embeddings"``, a full URL or an Azure path.

    Returns:
        ``"chat"``, ``"responses"``, ``"completions"``, ``"embeddings"`` or ``"other"``.
    """
    try:
        path = urlsplit(endpoint).path
    except ValueError:
        # A URL urllib cannot split (a broken IPv6 host): its path still ends the string.
        path = endpoint.split("?", 1)[0].split("#", 1)[0]
    path = path.rstrip("/")
    for suffix, kind in (
        ("chat/completions", "chat"),
        ("responses", "responses"),
        ("completions", "completions"),
        ("embeddings", "embeddings"),
    ):
        if path == suffix or path.endswith("/" + suffix):
            return kind
    return "other"


def estimate_tokens(
    endpoint: str,
    body: object,
    *,
    model: str | None = None,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    encodings: EncodingCache = default_encodings,
) -> TokenEstimate:
    """Estimate the tokens a request will be charged against the TPM limit.

    Args:
        endpoint: the endpoint path or URL (see :func:`endpoint_kind`).
        body: the JSON request body.
        model: the model, when the body does not name it (an Azure deployment).
        default_output_tokens: output reserved when the body sets no ``max_*_tokens``.
        encodings: where tiktoken encodings come from.

    Returns:
        The estimate; ``exact`` is ``False`` when text had to be counted by length.

    Raises:
        InvalidRequestError: the body is not an object, names no model, holds a field of
            an unexpected type, is circular, nests too deeply, or sets ``max_*_tokens``,
            ``n`` or ``best_of`` above :data:`MAX_COUNT`; the message names the field.
    """
    if type(body) is not dict and not isinstance(body, Mapping):  # the ABC check is slow
        raise InvalidRequestError(f"request body must be a JSON object, got {type_name(body)}")
    chosen = model if model is not None else body.get("model")
    if not isinstance(chosen, str) or not chosen:
        raise InvalidRequestError("request body has no 'model' (a non-empty string)")
    count = encodings.counter_for_model(chosen)
    kind = endpoint_kind(endpoint)
    prompt = count_prompt_tokens(kind, body, count)
    completion = 0 if kind == "embeddings" else _reserved_output(body, default_output_tokens)
    if kind == "other" and not any(field in body for field in _OUTPUT_FIELDS):
        completion = 0
    return _estimate(prompt, completion, count.exact)


def _positive_int(body: Mapping[str, object], field: str, default: int) -> int:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"'{field}' must be a positive integer, got {_shown(value)}")
    if value > MAX_COUNT:
        raise InvalidRequestError(f"'{field}' must be at most {MAX_COUNT:,}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    """Show a value in an error message, short, even when ``repr`` would fail or run long."""
    if isinstance(value, int) and not -(10**15) < value < 10**15:
        return f"a {value.bit_length()}-bit integer"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return type_name(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _reserved_output(body: Mapping[str, object], default: int) -> int:
    cap = body.get("max_completion_tokens")
    if cap is None:
        cap = body.get("max_tokens")
    if cap is None:
        cap = body.get("max_output_tokens")
    if type(cap) is not int or not 0 < cap <= MAX_COUNT:  # none, or one to refuse by name
        cap = _output_cap(body, default)
    if _FAN_OUT_FIELDS.isdisjoint(body):
        return cap  # one answer to one prompt: nearly every request
    choices = max(_positive_int(body, "n", 1), _positive_int(body, "best_of", 1))
    return cap * choices * _prompt_count(body.get("prompt"))


def _output_cap(body: Mapping[str, object], default: int) -> int:
    for field in _OUTPUT_FIELDS:
        if body.get(field) is not None:
            return _positive_int(body, field, default)
    return default


def _prompt_count(prompt: object) -> int:
    """Legacy completions answer every prompt of a list: each reserves its own output."""
    if not isinstance(prompt, list) or not prompt:
        return 1
    many = all(isinstance(item, str) for item in prompt) or all(
        isinstance(item, list) for item in prompt
    )
    return len(prompt) if many else 1
