"""Estimating how many tokens a request will be charged, before it is sent.

The server charges roughly the prompt plus the output it may produce (``n`` x the output cap),
whether or not the output is used. The estimate is a forecast: the response headers are the
truth and correct the buckets afterwards.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from throttle.errors import InvalidRequestError
from throttle.tokenizer import EncodingCache, TextCounter, default_encodings

DEFAULT_OUTPUT_TOKENS = 1024
"""Output tokens reserved when a body sets no ``max_*_tokens`` (configurable per call)."""

TOKENS_PER_MESSAGE = 3  # <|start|>{role}<|message|>...<|end|> framing, per the cookbook
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
TOKENS_PER_TOOL = 8  # framing around each tool definition; rough, corrected by headers
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_HIGH = 765  # a 1024x1024 image at high detail: 85 + 4 tiles x 170
AUDIO_TOKENS_PER_SECOND = 10
AUDIO_BYTES_PER_SECOND = 16_000  # 128 kbit/s: overestimates the length of compressed audio

_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "refusal"})
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})


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


Counter = Callable[[str], int]


def endpoint_kind(endpoint: str) -> str:
    """Name the API an endpoint path or URL belongs to.

    Args:
        endpoint: ``"chat/completions"``, ``"/v1/embeddings"``, a full URL or an Azure path.

    Returns:
        ``"chat"``, ``"responses"``, ``"completions"``, ``"embeddings"`` or ``"other"``.
    """
    path = urlsplit(endpoint).path.rstrip("/")
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
        InvalidRequestError: the body is not an object, names no model, or holds a field of
            an unexpected type; the message names the field.
    """
    if not isinstance(body, Mapping):
        raise InvalidRequestError(f"request body must be a JSON object, got {_kind(body)}")
    chosen = model if model is not None else body.get("model")
    if not isinstance(chosen, str) or not chosen:
        raise InvalidRequestError("request body has no 'model' (a non-empty string)")
    count = encodings.counter_for_model(chosen)
    kind = endpoint_kind(endpoint)
    prompt = _PROMPT_COUNTERS[kind](body, count)
    completion = 0 if kind == "embeddings" else _reserved_output(body, default_output_tokens)
    if kind == "other" and not any(field in body for field in _OUTPUT_FIELDS):
        completion = 0
    return TokenEstimate(prompt=prompt, completion=completion, exact=count.exact)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _positive_int(body: Mapping[str, object], field: str, default: int) -> int:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"'{field}' must be a positive integer, got {value!r}")
    return value


def _reserved_output(body: Mapping[str, object], default: int) -> int:
    cap = default
    for field in _OUTPUT_FIELDS:
        if body.get(field) is not None:
            cap = _positive_int(body, field, default)
            break
    choices = max(_positive_int(body, "n", 1), _positive_int(body, "best_of", 1))
    return cap * choices * _prompt_count(body.get("prompt"))


def _prompt_count(prompt: object) -> int:
    """Legacy completions answer every prompt of a list: each reserves its own output."""
    if not isinstance(prompt, list) or not prompt:
        return 1
    many = all(isinstance(item, str) for item in prompt) or all(
        isinstance(item, list) for item in prompt
    )
    return len(prompt) if many else 1


def _json_tokens(value: object, count: Counter) -> int:
    return count(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def _image_tokens(part: Mapping[str, object]) -> int:
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
    return IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_HIGH


def _audio_tokens(part: Mapping[str, object]) -> int:
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, Mapping) else None
    if not isinstance(data, str):
        return AUDIO_TOKENS_PER_SECOND
    try:
        size = len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        size = len(data)
    return max(1, math.ceil(size / AUDIO_BYTES_PER_SECOND * AUDIO_TOKENS_PER_SECOND))


def _part_tokens(part: object, count: Counter, where: str) -> int:
    if isinstance(part, str):
        return count(part)
    if not isinstance(part, Mapping):
        raise InvalidRequestError(f"{where} must be an object or a string, got {_kind(part)}")
    part_type = part.get("type")
    if part_type in _TEXT_PART_TYPES:
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise InvalidRequestError(f"{where}.text must be a string, got {_kind(text)}")
        return count(text)
    if part_type in _IMAGE_PART_TYPES:
        return _image_tokens(part)
    if part_type == "input_audio":
        return _audio_tokens(part)
    # Files and unknown part types: their JSON is a conservative stand-in for their content.
    return _json_tokens(part, count)


def _content_tokens(content: object, count: Counter, where: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    if isinstance(content, list):
        return sum(_part_tokens(part, count, f"{where}[{i}]") for i, part in enumerate(content))
    raise InvalidRequestError(f"{where} must be a string or a list of parts, got {_kind(content)}")


def _message_tokens(message: object, count: Counter, where: str) -> int:
    if not isinstance(message, Mapping):
        raise InvalidRequestError(f"{where} must be an object, got {_kind(message)}")
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            tokens += _content_tokens(value, count, f"{where}.content")
        elif key == "name":
            tokens += _content_tokens(value, count, f"{where}.name") + TOKENS_PER_NAME
        elif isinstance(value, str):
            tokens += count(value)
        elif value is not None:
            tokens += _json_tokens(value, count)
    return tokens


def _messages_tokens(messages: object, count: Counter, field: str) -> int:
    if not isinstance(messages, list):
        raise InvalidRequestError(f"'{field}' must be a list of messages, got {_kind(messages)}")
    return sum(_message_tokens(m, count, f"{field}[{i}]") for i, m in enumerate(messages))


def _tools_tokens(body: Mapping[str, object], count: Counter) -> int:
    tokens = 0
    for field in ("tools", "functions"):
        tools = body.get(field)
        if tools is None:
            continue
        if not isinstance(tools, list):
            raise InvalidRequestError(f"'{field}' must be a list, got {_kind(tools)}")
        tokens += sum(_json_tokens(tool, count) + TOKENS_PER_TOOL for tool in tools)
    response_format = body.get("response_format", body.get("text"))
    if isinstance(response_format, Mapping):
        tokens += _json_tokens(response_format, count)
    return tokens


def _chat_prompt(body: Mapping[str, object], count: Counter) -> int:
    messages = _messages_tokens(body.get("messages"), count, "messages")
    return messages + REPLY_PRIMING + _tools_tokens(body, count)


def _responses_prompt(body: Mapping[str, object], count: Counter) -> int:
    tokens = REPLY_PRIMING + _tools_tokens(body, count)
    instructions = body.get("instructions")
    if instructions is not None:
        tokens += TOKENS_PER_MESSAGE + _content_tokens(instructions, count, "instructions")
    items = body.get("input")
    if isinstance(items, str):
        return tokens + TOKENS_PER_MESSAGE + count(items)
    if not isinstance(items, list):
        raise InvalidRequestError(
            f"'input' must be a string or a list of items, got {_kind(items)}"
        )
    return tokens + sum(_message_tokens(m, count, f"input[{i}]") for i, m in enumerate(items))


def _token_array_or_text(item: object, count: Counter, where: str) -> int:
    if isinstance(item, str):
        return count(item)
    if isinstance(item, list) and all(type(t) is int for t in item):
        return len(item)
    raise InvalidRequestError(
        f"{where} must be a string, a list of strings or token arrays, got {_kind(item)}"
    )


def _inputs_tokens(value: object, count: Counter, field: str) -> int:
    if isinstance(value, list) and value and not all(type(t) is int for t in value):
        return sum(_token_array_or_text(v, count, f"{field}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list) and not value:
        raise InvalidRequestError(f"'{field}' must not be empty")
    return _token_array_or_text(value, count, f"'{field}'")


def _completions_prompt(body: Mapping[str, object], count: Counter) -> int:
    return _inputs_tokens(body.get("prompt"), count, "prompt")


def _embeddings_prompt(body: Mapping[str, object], count: Counter) -> int:
    return _inputs_tokens(body.get("input"), count, "input")


def _other_prompt(body: Mapping[str, object], count: Counter) -> int:
    return sum(count(text) for text in _strings(body) if text is not body.get("model"))


def _strings(value: object) -> Sequence[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


_PROMPT_COUNTERS: dict[str, Callable[[Mapping[str, object], TextCounter], int]] = {
    "chat": _chat_prompt,
    "responses": _responses_prompt,
    "completions": _completions_prompt,
    "embeddings": _embeddings_prompt,
    "other": _other_prompt,
}
