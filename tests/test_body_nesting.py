"""Tests for refusing circular or absurdly nested bodies: the quick walk and the careful one."""

from typing import Any

import pytest

from throttle import InvalidRequestError, estimate_tokens
from throttle.body_nesting import MAX_NESTING, fields_nest_within, nests_within


def _lists(depth: int) -> list[Any]:
    """A list holding a list ... ``depth`` lists in all, the innermost empty."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}


def _message_value(value: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi", "extra": value}]}


# (build a body whose deepest list is ``depth`` levels below it, where it sits)
PLACES = [
    (lambda depth: _chat(metadata=_lists(depth)), "metadata"),  # walked before counting
    (lambda depth: _chat(tools=_lists(depth)), "tools"),  # walked, then counted as JSON
    (lambda depth: _message_value(_lists(depth - 2)), "messages[0].extra"),  # walked as counted
]


@pytest.mark.parametrize(("body_nesting", "field"), PLACES)
def test_nesting_up_to_the_limit_is_accepted(body_nesting: Any, field: str) -> None:
    """A container MAX_NESTING - 1 levels below the body is counted, wherever it is."""
    estimate_tokens("chat/completions", body_nesting(MAX_NESTING - 1))


@pytest.mark.parametrize(("body_nesting", "field"), PLACES)
def test_one_level_past_the_limit_is_refused_naming_the_field(
    body_nesting: Any, field: str
) -> None:
    """A container MAX_NESTING levels below the body is refused, its path spelled out."""
    with pytest.raises(InvalidRequestError, match="nested more than 100 levels") as raised:
        estimate_tokens("chat/completions", body_nesting(MAX_NESTING))
    assert str(raised.value).startswith(field)


def test_a_message_holding_its_own_list_is_named_circular() -> None:
    """A message value that contains the message list is a cycle, named by its path."""
    body = _chat()
    body["messages"][0]["history"] = body["messages"]
    with pytest.raises(InvalidRequestError, match=r"^messages\[0\]\.history is circular"):
        estimate_tokens("chat/completions", body)


def test_the_same_list_used_twice_side_by_side_is_not_circular() -> None:
    """A value shared by two fields is no cycle: the body is counted."""
    shared = [{"type": "function", "function": {"name": "f"}}]
    body = _chat(tools=shared, metadata={"tools": shared})
    assert estimate_tokens("chat/completions", body).prompt > 0


def test_nests_within_counts_depth_from_the_body() -> None:
    """A value found at depth d may hold containers down to MAX_NESTING - 1 levels."""
    assert nests_within(_lists(MAX_NESTING - 4), 4)  # the innermost at depth 99
    assert not nests_within(_lists(MAX_NESTING - 3), 4)
    assert nests_within("a string at any depth", MAX_NESTING + 5)


def test_the_skipped_field_is_not_walked() -> None:
    """The field a reader checks itself is passed over, however deep it nests."""
    deep = _lists(MAX_NESTING + 10)
    assert not fields_nest_within([deep])
    assert fields_nest_within([deep, "text", 7], skipped=deep)
