"""Counting a request body's prompt tokens, the way each OpenAI API frames its input.

Chat messages and Responses items pay a per-message framing; content parts are text (counted
by the tokenizer), images and audio (a fixed or length-based price), or files and unknown
parts (their JSON stands in for them); tool definitions are counted as JSON. Legacy completions
and embeddings count strings and token arrays; other endpoints count every string in the body.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence

from throttle.body_nesting import (
    LEAVES,
    NestingFault,
    fields_nest_within,
    nests_within,
    refuse_nesting,
)
from throttle.errors import InvalidRequestError
from throttle.text_counter import TextCounter

TOKENS_PER_MESSAGE = 3  # <|start|>{role}<|message|>...<|end|> framing, per the cookbook
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
TOKENS_PER_TOOL = 8  # framing around each tool definition; rough, corrected by headers
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_HIGH = 765  # a 1024x1024 image at high detail: 85 + 4 tiles x 170
AUDIO_TOKENS_PER_SECOND = 10
AUDIO_BYTES_PER_SECOND = 16_000  # 128 kbit/s: overestimates the length of compressed audio
_MESSAGE_VALUE_DEPTH = 3  # body -> list of messages -> message -> value

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "refusal"})
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})
_TOOL_FIELDS = frozenset({"tools", "functions", "response_format", "text"})


Counter = Callable[[str], int]


def type_name(value: object) -> str:
    """Name a value's type for an error message.

    Args:
        value: any decoded JSON value.

    Returns:
        ``"null"`` for ``None``, else the Python type's name (``"dict"``, ``"int"``, ...).
    """
    return "null" if value is None else type(value).__name__


def count_prompt_tokens(kind: str, body: Mapping[str, object], count: TextCounter) -> int:
    """Count the prompt tokens of a request body.

    Args:
        kind: the API: ``"chat"``, ``"responses"``, ``"completions"``, ``"embeddings"`` or
            ``"other"``.
        body: the JSON request body.
        count: counts the tokens of a text.

    Returns:
        The input tokens, framing included.

    Raises:
        InvalidRequestError: a field has an unexpected type, is circular, is nested more than
            :data:`~throttle.body_nesting.MAX_NESTING` levels deep or cannot be written as
            JSON; the message names the field.
    """
    # Every field is checked for nesting before it is counted: the message list as it is
    # counted (a message's strings need no check), the other fields first.
    walked = _MESSAGE_LISTS.get(kind)
    if not fields_nest_within(body.values(), body.get(walked) if walked else None):
        refuse_nesting(body)
    try:
        return _PROMPT_COUNTERS[kind](body, count)
    except NestingFault:
        refuse_nesting(body)


def _json_tokens(value: object, count: Counter, where: str) -> int:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError) as exc:
        # TypeError: a key JSON cannot hold (a tuple); ValueError: an int past Python's digit
        # limit. Either way the server could not read it either.
        raise InvalidRequestError(f"{where} cannot be written as JSON: {exc}") from exc
    return count(text)


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
        raise InvalidRequestError(f"{where} must be an object or a string, got {type_name(part)}")
    part_type = part.get("type")
    if part_type in _TEXT_PART_TYPES:
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise InvalidRequestError(f"{where}.text must be a string, got {type_name(text)}")
        return count(text)
    if part_type in _IMAGE_PART_TYPES:
        return _image_tokens(part)
    if part_type == "input_audio":
        return _audio_tokens(part)
    # Files and unknown part types: their JSON is a conservative stand-in for their content.
    return _json_tokens(part, count, where)


def _content_tokens(content: object, count: Counter, where: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    if isinstance(content, list):
        return sum(_part_tokens(part, count, f"{where}[{i}]") for i, part in enumerate(content))
    raise InvalidRequestError(
        f"{where} must be a string or a list of parts, got {type_name(content)}"
    )


def _messages_tokens(messages: object, count: Counter, field: str) -> int:
    """Count a list of messages; a message's place is spelled only for an error message."""
    if type(messages) is not list and not isinstance(messages, list):
        raise InvalidRequestError(
            f"'{field}' must be a list of messages, got {type_name(messages)}"
        )
    tokens = 0
    for index, message in enumerate(messages):
        if type(message) is not dict and not isinstance(message, Mapping):
            raise InvalidRequestError(
                f"{field}[{index}] must be an object, got {type_name(message)}"
            )
        tokens += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if type(value) is str:  # role, content, name: nearly every value of every message
                tokens += count(value) + TOKENS_PER_NAME if key == "name" else count(value)
            elif value is not None or key == "name":
                tokens += _value_tokens(key, value, count, f"{field}[{index}]")
    return tokens


def _value_tokens(key: object, value: object, count: Counter, where: str) -> int:
    """Count a message's value other than a plain string: parts, a name, JSON."""
    if type(value) not in LEAVES and not nests_within(value, _MESSAGE_VALUE_DEPTH):
        raise NestingFault
    if key == "content":
        return _content_tokens(value, count, f"{where}.content")
    if key == "name":  # a name costs its text and one token more, whatever its value
        return _content_tokens(value, count, f"{where}.name") + TOKENS_PER_NAME
    if isinstance(value, str):
        return count(value)
    return _json_tokens(value, count, f"{where}.{key}")


def _tools_tokens(body: Mapping[str, object], count: Counter) -> int:
    tokens = 0
    for field in ("tools", "functions"):
        tools = body.get(field)
        if tools is None:
            continue
        if not isinstance(tools, list):
            raise InvalidRequestError(f"'{field}' must be a list, got {type_name(tools)}")
        tokens += sum(
            _json_tokens(tool, count, f"{field}[{i}]") + TOKENS_PER_TOOL
            for i, tool in enumerate(tools)
        )
    format_field = "response_format" if "response_format" in body else "text"
    response_format = body.get(format_field)
    if response_format is not None and isinstance(response_format, Mapping):
        tokens += _json_tokens(response_format, count, format_field)
    return tokens


def _chat_prompt(body: Mapping[str, object], count: Counter) -> int:
    tokens = _messages_tokens(body.get("messages"), count, "messages") + REPLY_PRIMING
    if _TOOL_FIELDS.isdisjoint(body):  # nearly every request: skip the four lookups
        return tokens
    return tokens + _tools_tokens(body, count)


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
            f"'input' must be a string or a list of items, got {type_name(items)}"
        )
    return tokens + _messages_tokens(items, count, "input")


def _token_array_or_text(item: object, count: Counter, where: str) -> int:
    if isinstance(item, str):
        return count(item)
    if isinstance(item, list) and all(type(t) is int for t in item):
        return len(item)
    raise InvalidRequestError(
        f"{where} must be a string, a list of strings or token arrays, got {type_name(item)}"
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


_MESSAGE_LISTS = {"chat": "messages", "responses": "input"}
"""The field each API counts message by message: its values are checked as they are counted."""

_PROMPT_COUNTERS: dict[str, Callable[[Mapping[str, object], TextCounter], int]] = {
    "chat": _chat_prompt,
    "responses": _responses_prompt,
    "completions": _completions_prompt,
    "embeddings": _embeddings_prompt,
    "other": _other_prompt,
}
