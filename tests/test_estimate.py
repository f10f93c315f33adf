"""Tests for token estimation, against real tiktoken encodings and hand-checked fixtures."""

import base64
import dataclasses
import logging
import math
from typing import Any

import pytest

from throttle import InvalidRequestError, TokenEstimate, estimate_tokens
from throttle.estimate import _estimate, endpoint_kind
from throttle.prompt_tokens import AUDIO_TOKENS_PER_SECOND, IMAGE_TOKENS_HIGH, IMAGE_TOKENS_LOW
from throttle.text_counter import Encoder
from throttle.tokenizer import EncodingCache, encoding_name_for_model

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that "
        "translates corporate jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more "
        "bandwidth to touch base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for "
        "the client deliverable.",
    },
]


def chat(model: str, messages: list[Any], **extra: Any) -> dict[str, Any]:
    """A chat body."""
    return {"model": model, "messages": messages, **extra}


@pytest.mark.parametrize(
    ("model", "prompt"),
    [("gpt-4", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_cookbook_example_matches_published_prompt_counts(model: str, prompt: int) -> None:
    """The cookbook's example counts 129 tokens on cl100k models and 124 on o200k models."""
    estimate = estimate_tokens("chat/completions", chat(model, COOKBOOK_MESSAGES, max_tokens=1))
    assert estimate.prompt == prompt
    assert estimate.exact


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o"])
def test_single_message_counts_framing_role_content_and_priming(model: str) -> None:
    """Hand-checked: 3 framing + 'user' (1) + 'hello' (1) + 3 reply priming = 8."""
    estimate = estimate_tokens(
        "chat/completions", chat(model, [{"role": "user", "content": "hello"}])
    )
    assert estimate.prompt == 8


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o"])
def test_name_costs_its_tokens_plus_one(model: str) -> None:
    """Hand-checked: 3 + 'user' 1 + 'hello world' 2 + 'Bob' 1 + name 1 + 3 priming = 11."""
    message = {"role": "user", "name": "Bob", "content": "hello world"}
    assert estimate_tokens("chat/completions", chat(model, [message])).prompt == 11


def test_content_part_list_counts_text_parts_like_a_string() -> None:
    """`[{"type": "text", "text": "hello"}]` costs the same as `"hello"`."""
    as_string = estimate_tokens(
        "chat/completions", chat("gpt-4o", [{"role": "user", "content": "hello world"}])
    )
    as_parts = estimate_tokens(
        "chat/completions",
        chat(
            "gpt-4o",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hello"},
                        {"type": "text", "text": " world"},
                    ],
                }
            ],
        ),
    )
    assert as_parts.prompt == as_string.prompt


@pytest.mark.parametrize(
    ("detail", "tokens"),
    [
        ("low", IMAGE_TOKENS_LOW),
        ("high", IMAGE_TOKENS_HIGH),
        ("auto", IMAGE_TOKENS_HIGH),
        (None, IMAGE_TOKENS_HIGH),
    ],
)
def test_image_parts_cost_by_detail_level(detail: str | None, tokens: int) -> None:
    """Low detail costs 85 tokens; high or auto a conservative 765."""
    image: dict[str, Any] = {"url": "https://example.invalid/cat.png"}
    if detail:
        image["detail"] = detail
    text_only = estimate_tokens(
        "chat/completions", chat("gpt-4o", [{"role": "user", "content": []}])
    )
    with_image = estimate_tokens(
        "chat/completions",
        chat("gpt-4o", [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}]),
    )
    assert with_image.prompt - text_only.prompt == tokens


def test_audio_parts_cost_roughly_by_length() -> None:
    """Ten seconds of 16 kB/s audio costs about 10 tokens per second."""
    data = base64.b64encode(b"\0" * 160_000).decode()
    body = chat(
        "gpt-4o-audio-preview",
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
                ],
            }
        ],
    )
    empty = chat("gpt-4o-audio-preview", [{"role": "user", "content": []}])
    extra = (
        estimate_tokens("chat/completions", body).prompt
        - estimate_tokens("chat/completions", empty).prompt
    )
    assert extra == 10 * AUDIO_TOKENS_PER_SECOND


def test_tools_and_their_schemas_add_tokens() -> None:
    """Function definitions are charged: a bigger schema costs more."""

    def tool(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": properties},
            },
        }

    messages = [{"role": "user", "content": "hi"}]
    bare = estimate_tokens("chat/completions", chat("gpt-4o", messages)).prompt
    small = estimate_tokens(
        "chat/completions", chat("gpt-4o", messages, tools=[tool({"a": {"type": "string"}})])
    )
    large = estimate_tokens(
        "chat/completions",
        chat(
            "gpt-4o",
            messages,
            tools=[
                tool(
                    {
                        f"field_{i}": {"type": "string", "description": "a long description"}
                        for i in range(20)
                    }
                )
            ],
        ),
    )
    assert bare < small.prompt < large.prompt
    legacy = estimate_tokens(
        "chat/completions",
        chat("gpt-4o", messages, functions=[{"name": "lookup", "parameters": {"type": "object"}}]),
    )
    assert legacy.prompt > bare


def test_tool_calls_in_assistant_messages_are_counted() -> None:
    """An assistant message with tool_calls and no content still costs its arguments."""
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"city": "Paris, France"}'},
            }
        ],
    }
    reply = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    estimate = estimate_tokens("chat/completions", chat("gpt-4o", [call, reply]))
    assert estimate.prompt > 2 * 3 + 3 + 10


def test_output_reservation_is_n_times_the_output_cap() -> None:
    """n=3 with max_completion_tokens=100 reserves 300."""
    body = chat(
        "gpt-4o",
        [{"role": "user", "content": "hi"}],
        n=3,
        max_completion_tokens=100,
        max_tokens=999,
    )
    assert estimate_tokens("chat/completions", body).completion == 300


def test_default_output_reservation_applies_when_the_body_sets_none() -> None:
    """Without any max_*_tokens the configured default is reserved."""
    body = chat("gpt-4o", [{"role": "user", "content": "hi"}])
    assert estimate_tokens("chat/completions", body, default_output_tokens=77).completion == 77


def test_responses_string_input_and_instructions() -> None:
    """Responses API: instructions and string input are counted; max_output_tokens reserved."""
    bare = estimate_tokens(
        "responses", {"model": "gpt-5", "input": "hello", "max_output_tokens": 50}
    )
    with_instructions = estimate_tokens(
        "responses",
        {
            "model": "gpt-5",
            "input": "hello",
            "instructions": "Be terse and polite.",
            "max_output_tokens": 50,
        },
    )
    assert bare.completion == 50
    assert with_instructions.prompt > bare.prompt


def test_responses_tools_add_tokens() -> None:
    """Tools on a Responses API body are charged like chat tools."""
    body = {"model": "gpt-5", "input": "hi", "max_output_tokens": 10}
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    bare = estimate_tokens("responses", body)
    with_tool = estimate_tokens("responses", {**body, "tools": [tool]})
    assert with_tool.prompt > bare.prompt


def test_responses_item_list_counts_like_messages() -> None:
    """An input item list costs what the same chat messages cost."""
    items = [{"role": "user", "content": [{"type": "input_text", "text": "hello world"}]}]
    as_chat = estimate_tokens(
        "chat/completions", chat("gpt-4o", [{"role": "user", "content": "hello world"}])
    )
    as_items = estimate_tokens("responses", {"model": "gpt-4o", "input": items})
    assert as_items.prompt == as_chat.prompt


def test_legacy_completions_reserve_output_per_prompt_and_choice() -> None:
    """Two prompts, n=2, max_tokens=5 reserve 20; best_of counts when larger than n."""
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": ["hello", "hello world"],
        "max_tokens": 5,
        "n": 2,
    }
    estimate = estimate_tokens("completions", body)
    assert estimate == TokenEstimate(prompt=3, completion=20)
    assert estimate_tokens("completions", {**body, "best_of": 4}).completion == 40


def test_embeddings_sum_every_input_and_reserve_no_output() -> None:
    """Strings, token arrays and lists of both are summed; embeddings have no output."""
    model = "text-embedding-3-small"
    assert estimate_tokens("embeddings", {"model": model, "input": "hello world"}) == (
        TokenEstimate(2, 0)
    )
    assert (
        estimate_tokens(
            "embeddings", {"model": model, "input": ["hello", "hello world"], "max_tokens": 9}
        ).total
        == 3
    )
    assert estimate_tokens("embeddings", {"model": model, "input": [1, 2, 3]}).total == 3
    assert estimate_tokens("embeddings", {"model": model, "input": [[1, 2], [3]]}).total == 3


def test_other_endpoints_count_their_text() -> None:
    """Moderations and other endpoints cost the tokens of their strings."""
    estimate = estimate_tokens(
        "moderations", {"model": "omni-moderation-latest", "input": "hello world"}
    )
    assert estimate == TokenEstimate(2, 0)


@pytest.mark.parametrize(
    ("endpoint", "kind"),
    [
        ("chat/completions", "chat"),
        ("/v1/chat/completions", "chat"),
        ("https://api.openai.com/v1/responses", "responses"),
        ("/v1/completions", "completions"),
        ("http://h/openai/deployments/d/embeddings?api-version=2024", "embeddings"),
        ("/v1/moderations", "other"),
        ("/v1/responses/resp_1/cancel", "other"),
    ],
)
def test_endpoint_kind(endpoint: str, kind: str) -> None:
    """Paths, URLs and Azure deployment URLs are recognised."""
    assert endpoint_kind(endpoint) == kind


def test_model_argument_serves_azure_bodies_without_model() -> None:
    """Azure bodies name no model; the deployment passed as model is used."""
    body = {"messages": [{"role": "user", "content": "hello"}]}
    assert estimate_tokens("chat/completions", body, model="my-deployment").prompt == 8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "must be a JSON object, got null"),
        ([1, 2], "must be a JSON object, got list"),
        ({"messages": []}, "no 'model'"),
        ({"model": "", "messages": []}, "no 'model'"),
        ({"model": "gpt-4o"}, "'messages' must be a list of messages, got null"),
        ({"model": "gpt-4o", "messages": "hi"}, "'messages' must be a list"),
        ({"model": "gpt-4o", "messages": [None]}, r"messages\[0\] must be an object"),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]},
            r"messages\[0\].content must be a string or a list of parts, got int",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            r"messages\[0\].content\[0\].text must be a string",
        ),
        (
            {"model": "gpt-4o", "messages": [], "max_tokens": "100"},
            "'max_tokens' must be a positive integer",
        ),
        ({"model": "gpt-4o", "messages": [], "max_tokens": True}, "'max_tokens' must be"),
        ({"model": "gpt-4o", "messages": [], "n": 0}, "'n' must be a positive integer"),
        ({"model": "gpt-4o", "messages": [], "tools": {}}, "'tools' must be a list"),
    ],
)
def test_bad_chat_bodies_give_an_error_naming_the_field(body: Any, message: str) -> None:
    """Bad bodies raise InvalidRequestError (a ValueError) naming the problem, never TypeError."""
    with pytest.raises(InvalidRequestError, match=message):
        estimate_tokens("chat/completions", body)


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        ("embeddings", {"model": "m", "input": None}, "must be a string, a list"),
        ("embeddings", {"model": "m", "input": []}, "'input' must not be empty"),
        ("embeddings", {"model": "m", "input": ["ok", 3.5]}, r"input\[1\] must be"),
        ("completions", {"model": "m", "prompt": {"x": 1}}, "'prompt' must be"),
        ("responses", {"model": "m", "input": 7}, "'input' must be a string or a list"),
    ],
)
def test_bad_bodies_of_other_endpoints_give_clear_errors(
    endpoint: str, body: Any, message: str
) -> None:
    """Embeddings, completions and responses bodies are checked the same way."""
    with pytest.raises(InvalidRequestError, match=message):
        estimate_tokens(endpoint, body)


def test_special_token_text_in_user_content_is_counted_not_rejected() -> None:
    """`<|endoftext|>` typed by a user is plain text; tiktoken's default would raise."""
    body = chat("gpt-4o", [{"role": "user", "content": "<|endoftext|>"}])
    assert estimate_tokens("chat/completions", body).prompt > 8


def test_unknown_models_fall_back_to_o200k() -> None:
    """A model tiktoken does not know is counted with o200k_base."""
    assert encoding_name_for_model("my-azure-deployment") == "o200k_base"
    assert encoding_name_for_model("gpt-4") == "cl100k_base"
    assert encoding_name_for_model("gpt-5.1-mini") == "o200k_base"
    assert encoding_name_for_model("text-embedding-3-large") == "cl100k_base"


def _unavailable(name: str) -> Encoder:
    raise OSError(f"cannot download {name}: no network")


def _not_bundled(name: str) -> Encoder | None:
    return None


def test_missing_bpe_files_fall_back_to_a_length_estimate(caplog: pytest.LogCaptureFixture) -> None:
    """Without the BPE files estimation still works, marked inexact, with a single warning."""
    offline = EncodingCache(loader=_unavailable, bundled=_not_bundled)
    text = "héllo wörld " * 10
    body = chat("gpt-4o", [{"role": "user", "content": text}], max_tokens=5)
    with caplog.at_level(logging.WARNING, logger="throttle.tokenizer"):
        first = estimate_tokens("chat/completions", body, encodings=offline)
        offline.join(5)
        second = estimate_tokens("chat/completions", body, encodings=offline)
    assert first == second
    assert not first.exact
    assert first.completion == 5
    expected = 3 + math.ceil(len(b"user") / 3) + math.ceil(len(text.encode()) / 3) + 3
    assert first.prompt == expected
    assert offline.fallback_estimates == 2
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "o200k_base" in warnings[0].getMessage()


def test_fallback_overestimates_english_text() -> None:
    """The fallback errs on the side of sending slower: it never undercounts English prose."""
    offline = EncodingCache(loader=_unavailable, bundled=_not_bundled)
    text = "The quick brown fox jumps over the lazy dog. " * 50
    body = chat("gpt-4o", [{"role": "user", "content": text}])
    exact = estimate_tokens("chat/completions", body)
    rough = estimate_tokens("chat/completions", body, encodings=offline)
    assert rough.prompt >= exact.prompt


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _circular() -> dict[str, Any]:
    value: dict[str, Any] = {"type": "file"}
    value["self"] = value
    return value


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("chat/completions", chat("gpt-4o", [{"role": "user", "content": [_circular()]}])),
        ("chat/completions", chat("gpt-4o", [{"role": "user", "metadata": _circular()}])),
        ("chat/completions", chat("gpt-4o", [], tools=[_circular()])),
        ("v1/moderations", {"model": "gpt-4o", "input": _circular()}),
    ],
)
def test_circular_body_is_an_invalid_request(endpoint: str, body: dict[str, Any]) -> None:
    """A body that contains itself is an InvalidRequestError saying so, not a ValueError."""
    with pytest.raises(InvalidRequestError, match="circular"):
        estimate_tokens(endpoint, body)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("chat/completions", chat("gpt-4o", [{"role": "user", "metadata": _nested(5000)}])),
        ("chat/completions", chat("gpt-4o", [], tools=[_nested(5000)])),
        ("v1/moderations", {"model": "gpt-4o", "input": _nested(5000)}),
    ],
)
def test_deeply_nested_body_is_an_invalid_request(endpoint: str, body: dict[str, Any]) -> None:
    """A body nested thousands deep is an InvalidRequestError, not a RecursionError."""
    with pytest.raises(InvalidRequestError, match="nested"):
        estimate_tokens(endpoint, body)


def test_estimates_built_without_init_equal_the_dataclass() -> None:
    """The quick builder sets every field the dataclass has, so the two never differ."""
    assert [field.name for field in dataclasses.fields(TokenEstimate)] == [
        "prompt",
        "completion",
        "exact",
    ]
    built = _estimate(3, 4, False)
    assert built == TokenEstimate(3, 4, exact=False)
    assert hash(built) == hash(TokenEstimate(3, 4, exact=False))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.prompt = 5  # type: ignore[misc]


def test_malformed_endpoint_url_still_names_its_api() -> None:
    """An endpoint URL urllib cannot split (a broken IPv6 host) is read by its path."""
    body = chat("gpt-4o", [{"role": "user", "content": "hi"}])
    assert endpoint_kind("http://[::1/v1/chat/completions") == "chat"
    assert estimate_tokens("http://[::1/v1/chat/completions", body).prompt > 0


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n", "best_of"])
def test_huge_counts_are_an_invalid_request(field: str) -> None:
    """A 401-digit max_tokens (or n) is refused now, not an overflow at admission."""
    body = chat("gpt-4o", [{"role": "user", "content": "hi"}], **{field: 10**400})
    with pytest.raises(InvalidRequestError, match=field):
        estimate_tokens("chat/completions", body)
