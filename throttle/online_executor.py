"""The online executor: each line of a job through a :class:`Throttle`, as it comes.

A bare body goes to the Throttle's ``base_url`` itself (the full endpoint URL); a Batch API
line goes to its ``url`` joined to ``base_url`` (the base URL) by :func:`join_line_url`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

from throttle.admission import KeyLoad
from throttle.client import Throttle
from throttle.errors import (
    APIStatusError,
    BackendUnavailableError,
    ClosedError,
    JobAbortedError,
    MisconfiguredError,
    RetryExhaustedError,
    ThrottleError,
)
from throttle.events import EventListener
from throttle.executor import JobLine, LineResult
from throttle.keys import BucketKey, azure_deployment
from throttle.request_identity import CLIENT_REQUEST_ID
from throttle.setup_check import setup_problem

FATAL_STATUSES = frozenset({401, 403})  # the key or URL is wrong: every other line would fail


def join_line_url(base_url: str, line_url: str) -> tuple[str, dict[str, str]]:
    """Where a Batch API line goes: its path below ``base_url``, and its query parameters.

    The line's ``url`` (``/v1/chat/completions``) is appended to ``base_url``, except that its
    leading ``/v1`` is dropped when ``base_url`` already ends in ``/v1``
    (``https://api.openai.com/v1``, Azure's ``https://NAME.openai.azure.com/openai/v1``) or
    names an Azure deployment (``.../openai/deployments/NAME``, whose endpoints have no
    ``/v1``). So ``/v1/embeddings`` on ``http://host/v1`` is ``http://host/v1/embeddings``
    and on ``http://host`` is ``http://host/v1/embeddings``.

    Args:
        base_url: the base URL, without a query string.
        line_url: the line's ``url``, a path, perhaps with a query (``?api-version=...``).

    Returns:
        The path for :meth:`Throttle.post` (no leading ``/``) and the line's query.
    """
    parts = urlsplit(line_url)
    path = parts.path
    base_path = urlsplit(base_url).path.rstrip("/")
    drops_v1 = base_path.endswith("/v1") or azure_deployment(base_path) is not None
    if drops_v1 and (path == "/v1" or path.startswith("/v1/")):
        path = path[len("/v1") :]
    return path.lstrip("/"), dict(parse_qsl(parts.query))


class OnlineExecutor:
    """Sends each line's body through ``throttle``, to its endpoint.

    Args:
        throttle: whose buckets, retries and breaker apply; its ``base_url`` (no query
            string) is the full endpoint URL for bare bodies, the base URL for Batch API
            lines. The executor closes it in :meth:`aclose`.
        params: query parameters for every request (Azure's ``api-version``); a Batch API
            line's own query overrides them.
    """

    def __init__(self, throttle: Throttle, *, params: Mapping[str, str] | None = None) -> None:
        self._throttle = throttle
        self._params = dict(params or {})
        self._working: set[str] = set()  # endpoints (paths below base_url) a line succeeded at

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

        Out of quota, a line is recorded at once instead of being estimated and queued. Every
        attempt sends the line's ``client_request_id`` as its ``X-Client-Request-Id``.
        """
        refused = self._throttle.quota_error()
        if refused is not None:
            return LineResult(error=refused)
        path, params = "", self._params
        if line.url is not None:
            path, query = join_line_url(self._throttle.base_url or "", line.url)
            params = {**params, **query}
        cid = line.client_request_id
        headers = {CLIENT_REQUEST_ID: cid} if cid is not None else None
        try:
            response = await self._throttle.post(
                path, line.body, params=params or None, headers=headers
            )
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
            problem = self._setup_problem(path, error)
            if problem is not None:
                raise JobAbortedError(self._abort_message(problem, path, line), error) from error
            return LineResult(error=error)
        self._working.add(path)
        return LineResult(response=response)

    def _setup_problem(self, path: str, error: ThrottleError) -> str | None:
        """What ``error`` says is wrong with the set-up, while nothing proved it right.

        The Throttle fails every request once its first ones show a wrong set-up
        (``MisconfiguredError``); beyond that, a 404 is judged per endpoint (no line succeeded
        at this one), no answer at all per server (no line succeeded anywhere).
        """
        if isinstance(error, MisconfiguredError):
            return setup_problem(error.cause) or str(error)
        problem = setup_problem(error)
        last = error.last_error if isinstance(error, RetryExhaustedError) else error
        proven = path in self._working if isinstance(last, APIStatusError) else self._working
        return None if proven else problem

    def _abort_message(self, problem: str, path: str, line: JobLine) -> str:
        base = self._throttle.base_url
        rerun = "run the same command again; lines without a result run then"
        if line.url is None:
            return (
                f"{problem} at {base}, and no line has succeeded: the job stopped. Check --url "
                f"(the full endpoint URL, such as .../v1/chat/completions) and {rerun}"
            )
        return (
            f"{problem} at {base}/{path} (line {line.index}, url {line.url!r}), and no line has "
            "succeeded there: the job stopped. Check --url (the base URL, such as "
            f"https://api.openai.com/v1) and the lines' url, and {rerun}"
        )

    async def stop(self) -> None:
        """See :meth:`throttle.executor.Executor.stop`."""
        await self._throttle.stop_sending()

    async def aclose(self) -> None:
        """Close the Throttle and its connections."""
        await self._throttle.close()
