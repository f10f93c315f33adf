"""The seam between a job and what runs its lines.

``throttle run`` (:mod:`throttle.runner`) owns the files, resume, progress, signals and exit
status; an :class:`Executor` owns how each line is sent and comes back as a result. Today's
executor is :class:`throttle.online_executor.OnlineExecutor` (each line through a
:class:`throttle.Throttle`, as it comes); a Batch API executor plugs in here without touching
the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from throttle.admission import KeyLoad
from throttle.errors import ThrottleError
from throttle.events import EventListener
from throttle.keys import BucketKey


@dataclass(frozen=True, slots=True)
class JobLine:
    """One request of a job, read and parsed.

    Attributes:
        index: its 0-based index among the input's non-blank lines.
        body: the request body to send.
        metadata: the line's ``metadata`` (never sent; copied to its result).
        custom_id: a Batch API line's ``custom_id`` (copied to its result); else ``None``.
        url: a Batch API line's endpoint path (``/v1/embeddings``), to join to the job's base
            URL; ``None`` for a bare body, which goes to the job's URL itself.
        client_request_id: the ``X-Client-Request-Id`` that every attempt of the line sends
            (the line's own, or one the runner gave it; written to its result); ``None``
            lets the executor's client pick one.
    """

    index: int
    body: dict[str, Any]
    metadata: Any = None
    custom_id: str | None = None
    url: str | None = None
    client_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class LineResult:
    """How one line ended: a response or an error, never both.

    Attributes:
        response: the decoded answer on success.
        error: what ended it otherwise.
        extra: further fields for its result record (a batch's and file's ids, ...).
    """

    response: Any = None
    error: ThrottleError | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Runs a job's lines; the runner calls :meth:`execute` once per pending line."""

    @property
    def capacity(self) -> int:
        """Lines it takes at once: the runner reads no further ahead than this."""
        ...

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Tell ``listener`` every event of the lines' requests; return the unsubscriber."""
        ...

    def load(self) -> Mapping[BucketKey, KeyLoad]:
        """Per busy key, the requests waiting to be sent and those sent, unanswered."""
        ...

    async def execute(self, line: JobLine) -> LineResult | None:
        """Run one line to its end.

        Returns:
            Its result, or ``None`` when it was not run because the executor stopped (it
            gets no result now and runs on the next invocation).

        Raises:
            JobAbortedError: no line can succeed (a rejected key or URL).
        """
        ...

    async def stop(self) -> None:
        """Send nothing more: waiting lines return ``None``; lines sent still finish."""
        ...

    async def aclose(self) -> None:
        """Release what it holds (connections, sessions)."""
        ...
