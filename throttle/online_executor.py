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
    ThrottleError,
)
from throttle.events import EventListener
from throttle.executor import JobLine, LineResult
from throttle.keys import BucketKey

FATAL_STATUSES = frozenset({401, 403})  # the key or URL is wrong: every other line would fail


class OnlineExecutor:
    """Sends each line's body to one endpoint through ``throttle``.

    Args:
        throttle: whose buckets, retries and breaker apply; its ``base_url`` is the full
            endpoint URL. The executor closes it in :meth:`aclose`.
    """

    def __init__(self, throttle: Throttle) -> None:
        self._throttle = throttle

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
            return LineResult(error=error)
        return LineResult(response=response)

    async def stop(self) -> None:
        """See :meth:`throttle.executor.Executor.stop`."""
        await self._throttle.stop_sending()

    async def aclose(self) -> None:
        """Close the Throttle and its connections."""
        await self._throttle.close()
