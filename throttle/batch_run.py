"""``throttle run --mode batch``: the job's executor built from its options.

The same :class:`RunOptions` as online mode, read the Batch API's way: ``--url`` is the full
endpoint URL for bare request bodies (its endpoint is then every line's), the base URL for
Batch API lines (each names its own); the journal lives beside the results file.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from throttle.batch_client import BatchClient, api_root_of
from throttle.batch_executor import BatchExecutor
from throttle.batch_journal import journal_path_for
from throttle.batch_options import BatchOptions
from throttle.run_options import RunOptions

# Endpoint paths below the API root, longest first where one ends another.
_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings", "/responses", "/moderations")


def split_job_url(url: str) -> tuple[str, str | None]:
    """Split ``--url`` into the API's base URL and the endpoint it names, if any.

    ``https://api.openai.com/v1/embeddings`` gives ``("https://api.openai.com/v1",
    "/v1/embeddings")``; a base URL (``https://api.openai.com/v1``) gives itself and ``None``.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    for endpoint in _ENDPOINTS:
        if path.endswith(endpoint):
            base = urlunsplit((parts.scheme, parts.netloc, path[: -len(endpoint)], "", ""))
            return base, "/v1" + endpoint
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), None


def batch_executor(options: RunOptions, batch: BatchOptions | None = None) -> BatchExecutor:
    """The executor of ``throttle run --mode batch`` for ``options``.

    Args:
        options: the job (its URL, key, results file, timeout, ``retry_failed``).
        batch: file sizes, enqueued limits, attempts and polling.
    """
    base, endpoint = split_job_url(options.url)
    client = BatchClient(api_root_of(base), options.api_key, timeout=options.timeout)
    return BatchExecutor(
        base,
        options.api_key,
        batch,
        journal=journal_path_for(options.output),
        endpoint=endpoint,
        retry_failed=options.retry_failed,
        client=client,
    )
