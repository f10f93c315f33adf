"""The online executor: each line of a job through a :class:`Throttle`, as it comes."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from throttle.admission import KeyLoad
from throttle.client import Throttle
from throttle.errors import (
    APIStatusError,
    BackendUnavailableError,
    ClosedError,
    JobAbortedError,
    RetryExhaustedError,
    StreamTruncatedError,
    ThrottleError,
    TransportError,
)
from throttle.events import EventListener
from throttle.executor import JobLine, LineResult
from throttle.keys import BucketKey

FATAL_STATUSES = frozenset({401, 403})  # the key or URL is wrong: every other line would fail
WRONG_URL_STATUSES = frozenset({404, 405})  # no such endpoint (a model not found is per line)


def setup_problem(error: ThrottleError) -> str | None:
    """Say what is wrong with the job's set-up, if ``error`` shows that no line can succeed.

    A 404 or 405 other than ``model_not_found`` means no such endpoint; an attempt that never
    got an answer means no server there (refused, unknown host, unreachable). Either is only
    taken as the set-up's fault while no line has succeeded.
    """
    last = error.last_error if isinstance(error, RetryExhaustedError) else error
    if (
        isinstance(last, APIStatusError)
        and last.status in WRONG_URL_STATUSES
        and last.details.code != "model_not_found"
    ):
        return f"the server answered {last.status} (no such endpoint: {last.server_message})"
    if isinstance(last, TransportError) and not isinstance(last, StreamTruncatedError):
        return f"no answer from the server ({last})"
    return None


class OnlineExecutor:
    """Sends each line's body to one endpoint through ``throttle``.

    Args:
        throttle: whose buckets, retries and breaker apply; its ``base_url`` is the full
            endpoint URL. The executor closes it in :meth:`aclose`.
    """

    def __init__(self, throttle: Throttle) -> None:
        self._throttle = throttle
        self._succeeded = False  # a line succeeded: the URL and key work

    def __repr__(self) -> str:
        return f"OnlineExecutor({self._throttle!r})"

    @property
    def capacity(self) -> int:
        """The Throttle's in-flight cap: no more lines are taken than can be sent at once."""
        return self._throttle.options.max_in_flight

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """See :meth:`throttle.executor.Executor.subscribe`."""
        return self._throttle.events.subscribe(listener)

    def load(self) -> Mapping[BucketKey, KeyLoad]:
        """See :meth:`throttle.executor.Executor.load`."""
        return self._throttle.load()

    async def execute(self, line: JobLine) -> LineResult | None:
        """See :meth:`throttle.executor.Executor.execute`.

        Out of quota, a line is recorded at once instead of being estimated and queued.
        """
        refused = self._throttle.quota_error()
        if refused is not None:
            return LineResult(error=refused)
        try:
            response = await self._throttle.post("", line.body)
        except ClosedError:
            return None  # stopped before it was sent: it runs on the next invocation
        except BackendUnavailableError as error:
            raise JobAbortedError(
                f"{error} Run the same command again once Redis is back (nothing was lost)",
                error,
            ) from error
        except ThrottleError as error:
            if isinstance(error, APIStatusError) and error.status in FATAL_STATUSES:
                raise JobAbortedError(
                    f"the server rejected the request with {error}; fix the key or URL "
                    "and run the same command again (nothing was lost)",
                    error,
                ) from error
            problem = None if self._succeeded else setup_problem(error)
            if problem is not None:
                raise JobAbortedError(
                    f"{problem} at {self._throttle.base_url}, and no line has succeeded: "
                    "the job stopped. Check --url (the full endpoint URL, such as "
                    ".../v1/chat/completions) and run the same command again; lines without "
                    "a result run then",
                    error,
                ) from error
            return LineResult(error=error)
        self._succeeded = True
        return LineResult(response=response)

    async def stop(self) -> None:
        """See :meth:`throttle.executor.Executor.stop`."""
        await self._throttle.stop_sending()

    async def aclose(self) -> None:
        """Close the Throttle and its connections."""
        await self._throttle.close()
