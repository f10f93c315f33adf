"""Refusing request bodies that contain themselves or nest absurdly deep, at little cost.

Counting a body recurses into it (the JSON of tools and parts, every string of an unknown
endpoint's body), so a body nested thousands deep would exhaust Python's recursion limit and a
circular one would never finish. Such a body is refused with an error naming the field. Every
request pays for the check, so it has two speeds: a quick walk that only says whether all is
well (no path, no set of ids, nothing done for strings and numbers), and, only when it says
no, a careful walk from the root that names the first fault the way error messages name fields
(``messages[0].tool_calls is circular: it contains itself``). The quick walk needs no set to
see a cycle: a cycle nests without end, so it is too deep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NoReturn

from throttle.errors import InvalidRequestError

MAX_NESTING = 100
"""Deepest nesting of objects and lists a body may have; tools' JSON schemas need about 10.

Deeper bodies (and circular ones) are refused before they are counted, so counting them can
never exhaust Python's recursion limit.
"""

LEAVES = frozenset({str, int, float, bool, type(None)})
"""The types of JSON values that hold nothing: both walks pass them at once."""


class NestingFault(Exception):  # noqa: N818 - a signal caught inside the package, never an error
    """A quick check found a fault while counting; :func:`refuse_nesting` names it."""


def nests_within(value: object, depth: int) -> bool:
    """Say whether ``value``, found ``depth`` levels below the body, nests within the limit.

    Args:
        value: any value of a decoded JSON body.
        depth: how many objects and lists enclose ``value`` (1 for a field of the body).

    Returns:
        ``False`` when ``value`` contains itself or a container more than
        :data:`MAX_NESTING` levels below the body.
    """
    return fields_nest_within((value,), None, MAX_NESTING - 1 - depth)


def fields_nest_within(
    fields: Iterable[object], skipped: object = None, room: int = MAX_NESTING - 2
) -> bool:
    """Say whether no container among ``fields`` (but ``skipped``) nests too deep.

    Args:
        fields: the values of a body's fields, or of any container given its ``room``.
        skipped: a value not to walk here (its reader checks it as it reads it).
        room: levels of containers that may still nest below ``fields``:
            :data:`MAX_NESTING` - 1 less their depth (a body's fields are at depth 1).

    Returns:
        ``False`` when a container contains itself or nests too deep. The recursion is at
        most :data:`MAX_NESTING` levels deep.
    """
    for child in fields:
        child_type = type(child)
        if child_type in LEAVES or child is skipped:  # strings and numbers: skip at once
            continue
        if child_type is dict:
            grandchildren: Iterable[object] = child.values()  # type: ignore[attr-defined]
        elif isinstance(child, list | tuple):
            grandchildren = child
        elif isinstance(child, Mapping):
            grandchildren = child.values()
        else:
            continue
        if room < 0:
            return False
        for grandchild in grandchildren:  # a container of strings and numbers needs no call
            if type(grandchild) not in LEAVES:
                if not fields_nest_within(grandchildren, None, room - 1):
                    return False
                break
    return True


def refuse_nesting(body: Mapping[str, object]) -> NoReturn:
    """Raise the error naming the first circular or too deeply nested field of ``body``.

    Args:
        body: a body a quick check found at fault.

    Raises:
        InvalidRequestError: always; the message names the field.
    """
    _check_nesting(body, (), set())
    raise InvalidRequestError(f"request body is nested more than {MAX_NESTING} levels deep")


def _check_nesting(
    value: object, path: tuple[tuple[object, bool], ...], enclosing: set[int]
) -> None:
    """Refuse a value that contains itself or nests deeper than :data:`MAX_NESTING`.

    ``enclosing`` holds the ids of the containers around ``value``; a value met again inside
    itself is a cycle, while the same list used twice side by side is not. ``path`` holds the
    (key, is a list index) steps to ``value``, spelled out only for an error message.
    """
    children: Iterable[tuple[object, object]]
    if isinstance(value, list | tuple):
        children, in_list = enumerate(value), True
    elif isinstance(value, dict) or (type(value) not in LEAVES and isinstance(value, Mapping)):
        children, in_list = value.items(), False  # dict first: the ABC check is slow
    else:
        return
    if id(value) in enclosing:
        raise InvalidRequestError(f"{_where(path)} is circular: it contains itself")
    if len(path) >= MAX_NESTING:
        raise InvalidRequestError(f"{_where(path)} is nested more than {MAX_NESTING} levels deep")
    enclosing.add(id(value))
    for key, child in children:
        if type(child) not in LEAVES:
            _check_nesting(child, (*path, (key, in_list)), enclosing)
    enclosing.discard(id(value))


def _where(path: tuple[tuple[object, bool], ...]) -> str:
    """Spell a path the way error messages name fields: ``messages[0].content``."""
    where = ""
    for key, is_index in path:
        where = f"{where}[{key}]" if is_index else (f"{where}.{key}" if where else str(key))
    return where
