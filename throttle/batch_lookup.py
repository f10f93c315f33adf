"""Finding on the server what a crash left unrecorded: a file uploaded, a batch created.

The journal records an upload's intent before it and a batch only after it exists (see
:mod:`throttle.batch_steps`); when a run dies in between, the rerun asks the server instead of
doing the step again. A file is found by the unique name it was uploaded with; a batch by the
file it was created from, among the batches newer than that file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import Any

from throttle.batch_client import BatchClient

FILES_PAGE = 10_000  # the most files one list call returns
BATCHES_PAGE = 100  # the most batches one list call returns


async def find_file(client: BatchClient, name: str) -> dict[str, Any] | None:
    """Return the newest batch input file uploaded as ``name``, or ``None``."""
    async with contextlib.aclosing(client.listing("/files", FILES_PAGE, purpose="batch")) as files:
        async for item in files:
            if item.get("filename") == name:
                return item
    return None


async def find_batch(
    client: BatchClient, file_id: str, since: int | None, *, exclude: Collection[str] = ()
) -> dict[str, Any] | None:
    """Return the newest batch created from ``file_id`` and not in ``exclude``, or ``None``.

    Args:
        client: the Batch API client.
        file_id: the input file.
        since: the file's upload time (Unix seconds): listing stops at older batches.
        exclude: batches already known (an earlier, failed one of the same file).
    """
    async with contextlib.aclosing(client.listing("/batches", BATCHES_PAGE)) as batches:
        async for item in batches:
            created = item.get("created_at")
            if since is not None and isinstance(created, int) and created < since:
                return None
            if item.get("input_file_id") == file_id and item.get("id") not in exclude:
                return item
    return None
