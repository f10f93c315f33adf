"""One ``X-Client-Request-Id`` per logical request, the same on every attempt of it.

The provider logs the id a client sends with a request, so a request that failed, timed out
or was billed twice can be found there by it. Retries are one logical request: throttle picks
(or takes the caller's) id once, before the first attempt, and every attempt sends it. The
caller's own id, set on the request in any letter case, is sent unchanged, once it passed the
provider's rules: ASCII, at most :data:`MAX_CLIENT_REQUEST_ID_LENGTH` characters. A bad one is
refused before anything is sent, since the provider would refuse or mangle it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from throttle.errors import ConfigurationError, InvalidRequestError
from throttle.headers import header

CLIENT_REQUEST_ID = "X-Client-Request-Id"
MAX_CLIENT_REQUEST_ID_LENGTH = 512  # characters; the provider's limit


def new_client_request_id() -> str:
    """Return a fresh id: 32 hexadecimal digits of a random (version 4) UUID.

    Built from the random bytes directly: ``uuid.uuid4().hex`` gives the same digits but
    builds a ``UUID`` object on the way, three times the time, once per request.
    """
    digits = bytearray(os.urandom(16))
    digits[6] = digits[6] & 0x0F | 0x40  # version 4
    digits[8] = digits[8] & 0x3F | 0x80  # the RFC 4122 variant
    return digits.hex()


def check_client_request_id(value: object) -> str:
    """Return ``value`` if it can be sent as an ``X-Client-Request-Id``.

    Printable ASCII (spaces allowed inside, not at either end, where HTTP would drop them),
    one to :data:`MAX_CLIENT_REQUEST_ID_LENGTH` characters.

    Raises:
        InvalidRequestError: it is not a string, is empty or too long, or has a character
            that is not printable ASCII (the message names the first one and its position).
    """
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"{CLIENT_REQUEST_ID} must be a string, not {type(value).__name__}"
        )
    if not value:
        raise InvalidRequestError(f"{CLIENT_REQUEST_ID} must not be empty")
    if len(value) > MAX_CLIENT_REQUEST_ID_LENGTH:
        raise InvalidRequestError(
            f"{CLIENT_REQUEST_ID} has {len(value)} characters; the limit is "
            f"{MAX_CLIENT_REQUEST_ID_LENGTH}"
        )
    for position, character in enumerate(value, start=1):
        if not " " <= character <= "~":
            kind = "a control character" if character.isascii() else "not ASCII"
            raise InvalidRequestError(
                f"{CLIENT_REQUEST_ID} must be printable ASCII: character {position}, "
                f"U+{ord(character):04X}, is {kind}"
            )
    if value != value.strip(" "):
        raise InvalidRequestError(f"{CLIENT_REQUEST_ID} must not begin or end with a space")
    return value


def client_request_id_of(headers: Mapping[str, str]) -> str | None:
    """Return the id the caller set in ``headers`` (any letter case), checked; else ``None``.

    Raises:
        InvalidRequestError: the caller's id breaks the rules of
            :func:`check_client_request_id`.
    """
    given = header(headers, CLIENT_REQUEST_ID)
    return None if given is None else check_client_request_id(given)


def identify(headers: MutableMapping[str, str]) -> str:
    """Return the id of the request with ``headers``: the caller's, or a new one set there.

    Called once per logical request, before its first attempt; every attempt then sends
    ``headers`` as they are.

    Raises:
        InvalidRequestError: the caller's id breaks the rules of
            :func:`check_client_request_id`.
    """
    given = client_request_id_of(headers)
    if given is not None:
        return given
    headers[CLIENT_REQUEST_ID] = fresh = new_client_request_id()
    return fresh


def refuse_shared_id(headers: Mapping[str, str]) -> None:
    """Refuse an ``X-Client-Request-Id`` among the headers of every request of a client.

    Raises:
        ConfigurationError: ``headers`` set one: it would name every request alike.
    """
    if header(headers, CLIENT_REQUEST_ID) is not None:
        raise ConfigurationError(
            f"headers must not set {CLIENT_REQUEST_ID}: it names one request, and these "
            "headers go with every request; pass it per request (post(headers=...))"
        )
