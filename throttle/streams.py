"""Watching a server-sent-event stream as it passes to the caller, without buffering it.

A stream that ends without its final event was cut by the server or the network: that is a
failure, not a short answer. The watcher sees every byte on its way through, remembers the
terminal event and the usage the last chunk may carry, and says at the end whether the stream
was complete.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from throttle.errors import StreamTruncatedError

_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.failed", "response.incomplete", "error"}
)


class StreamWatcher:
    """Follows the SSE lines of a chat completions or Responses API stream.

    Attributes:
        finished: a terminal marker was seen (``[DONE]``, a ``finish_reason``, or a
            ``response.completed``/``failed``/``incomplete``/``error`` event).
        usage: the usage object of the stream, when a chunk carried one.
        events: ``data:`` lines seen.
    """

    def __init__(self) -> None:
        self._partial = b""
        self.finished = False
        self.usage: Mapping[str, Any] | None = None
        self.events = 0

    def __repr__(self) -> str:
        return f"StreamWatcher(events={self.events}, finished={self.finished})"

    def feed(self, chunk: bytes) -> None:
        """Look at the next bytes of the stream (any split, lines may span chunks)."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line.strip())

    def _line(self, line: bytes) -> None:
        if line.startswith(b"event:"):
            if line[6:].strip().decode("utf-8", "replace") in _TERMINAL_EVENTS:
                self.finished = True
            return
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        self.events += 1
        if data == b"[DONE]":
            self.finished = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if isinstance(event, dict):
            self._event(event)

    def _event(self, event: Mapping[str, Any]) -> None:
        if event.get("type") in _TERMINAL_EVENTS:
            self.finished = True
            response = event.get("response")
            if isinstance(response, Mapping) and isinstance(response.get("usage"), Mapping):
                self.usage = response["usage"]
        choices = event.get("choices")
        if isinstance(choices, list) and any(
            isinstance(c, Mapping) and c.get("finish_reason") for c in choices
        ):
            self.finished = True
        if isinstance(event.get("usage"), Mapping):
            self.usage = event["usage"]

    def close(self) -> None:
        """Say the stream ended.

        Raises:
            StreamTruncatedError: it ended before its final event.
        """
        if self._partial.strip():
            self._line(self._partial.strip())
            self._partial = b""
        if not self.finished:
            raise StreamTruncatedError(
                f"the stream ended after {self.events} events without its final event "
                "([DONE], a finish_reason or response.completed): the answer is incomplete"
            )
