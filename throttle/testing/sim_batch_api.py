"""The simulated Files and Batch APIs over HTTP: requests in, the real JSON shapes out.

This is the one place the Batch API reads time: the server's clock (``time.monotonic`` unless
a test hands in another), scaled by ``BatchSettings.time_scale`` into simulated Unix seconds.
Below it, storage (:mod:`throttle.testing.sim_files`) and batches
(:mod:`throttle.testing.sim_batches`) are plain objects that take ``now``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from throttle.testing import sim_bodies as bodies
from throttle.testing.sim_batch_config import BatchSettings
from throttle.testing.sim_batch_input import BATCH_ENDPOINTS, BatchFileError, parse_batch_file
from throttle.testing.sim_batches import BatchBook, BatchConflictError, SimBatch
from throttle.testing.sim_files import FileStore, StoredFile
from throttle.testing.sim_routes import BatchRoute
from throttle.testing.sim_stats import BatchStats

_MAX_METADATA = 16  # key-value pairs, keys up to 64 characters, values up to 512
# Every endpoint answers (request, route, organization, simulated now) with JSON or bytes.
_Endpoint = Callable[[web.Request, BatchRoute, str, float], Awaitable[dict[str, Any] | bytes]]
_LIST_LIMITS = {"list_files": (10_000, 10_000), "list_batches": (20, 100)}  # default, most


class _Refusal(Exception):  # noqa: N818 - a control-flow signal carrying its answer
    """Ends a request with an error answer."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = bodies.error_body(message, "invalid_request_error", code, param)


def _page(
    items: list[Any], ids: list[str], after: str | None, limit: int
) -> tuple[list[Any], bool]:
    """The cursor page after id ``after``: its items and whether more follow."""
    start = 0
    if after is not None:  # an id not (or no longer) listed: nothing follows it
        start = ids.index(after) + 1 if after in ids else len(ids)
    return items[start : start + limit], start + limit < len(items)


def _list_body(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _metadata(raw: object) -> dict[str, str] | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or len(raw) > _MAX_METADATA
        or not all(isinstance(k, str) and len(k) <= 64 for k in raw)
        or not all(isinstance(v, str) and len(v) <= 512 for v in raw.values())
    ):
        raise _Refusal(
            400,
            "Invalid 'metadata': at most 16 string pairs, keys up to 64 and values up to 512 "
            "characters.",
            "invalid_value",
            "metadata",
        )
    return {str(key): str(value) for key, value in raw.items()}


class BatchAPI:
    """Serves the Files and Batch API endpoints (see :func:`resolve_batch_route`).

    Args:
        settings: speed, limits, shares of lost lines.
        stats: where requests to these endpoints are counted.
        completion_tokens: what the simulator generates per answer when ``max_tokens`` allows.
        clock: the server's clock in seconds; simulated time runs ``settings.time_scale`` times
            faster from the moment this object is made.
    """

    def __init__(
        self,
        settings: BatchSettings,
        stats: BatchStats,
        completion_tokens: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._clock = clock
        # A whole second to start from, so that whole simulated seconds add up exactly.
        self._started, self._epoch = clock(), float(int(time.time()))
        self.files = FileStore(settings.seed)
        self.batches = BatchBook(settings, self.files, completion_tokens)
        self._endpoints: dict[str, _Endpoint] = {
            "upload_file": self._upload_file,
            "list_files": self._list_files,
            "retrieve_file": self._retrieve_file,
            "delete_file": self._delete_file,
            "file_content": self._file_content,
            "create_batch": self._create_batch,
            "list_batches": self._list_batches,
            "retrieve_batch": self._retrieve_batch,
            "cancel_batch": self._cancel_batch,
        }

    def __repr__(self) -> str:
        return f"BatchAPI({self.files!r}, {self.batches!r})"

    def now(self) -> float:
        """Return the simulated time in Unix seconds."""
        return self._epoch + (self._clock() - self._started) * self._settings.time_scale

    async def serve(
        self, request: web.Request, route: BatchRoute, org: str | None, request_id: str
    ) -> web.Response:
        """Answer one request to the Files or Batch API.

        Args:
            request: the incoming request.
            route: the endpoint it reaches.
            org: the caller's organization, ``None`` when its key is unknown.
            request_id: the answer's ``x-request-id``.

        Returns:
            The answer: the real JSON objects, a file's content, or a 4xx error.
        """
        self._stats.requests[route.endpoint] += 1
        headers = {"x-request-id": request_id}
        if org is None:
            unknown = _Refusal(401, "Incorrect API key provided.", "invalid_api_key")
            return self._refused(unknown, headers)
        try:
            answer = await self._endpoints[route.action](request, route, org, self.now())
        except _Refusal as refusal:
            return self._refused(refusal, headers)
        if isinstance(answer, bytes):
            return web.Response(
                body=answer, content_type="application/octet-stream", headers=headers
            )
        return web.json_response(answer, headers=headers)

    def _refused(self, refusal: _Refusal, headers: dict[str, str]) -> web.Response:
        self._stats.refused += 1
        return web.json_response(refusal.body, status=refusal.status, headers=headers)

    async def _retrieve_file(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        return self._file(org, route).as_object()

    async def _file_content(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> bytes:
        return self._file(org, route).content

    async def _delete_file(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        file_id = self._file(org, route).id
        self.files.delete(org, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    async def _list_files(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        newest_first = request.query.get("order", "desc") != "asc"
        files = self.files.listing(org, request.query.get("purpose"), newest_first=newest_first)
        page, more = self._paged(request.query, route.action, files, [f.id for f in files])
        return _list_body([f.as_object() for f in page], more)

    async def _list_batches(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        batches = self.batches.listing(org, now)
        page, more = self._paged(request.query, route.action, batches, [b.id for b in batches])
        return _list_body([b.as_object(now) for b in page], more)

    async def _retrieve_batch(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        return self._batch(org, route, now).as_object(now)

    async def _cancel_batch(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        batch = self._batch(org, route, now)
        try:
            self.batches.cancel(batch, now)
        except BatchConflictError as exc:
            raise _Refusal(409, str(exc)) from exc
        return batch.as_object(now)

    def _file(self, org: str, route: BatchRoute) -> StoredFile:
        stored = self.files.get(org, route.object_id or "")
        if stored is None:
            raise _Refusal(404, f"No such File object: {route.object_id}", param="id")
        return stored

    def _batch(self, org: str, route: BatchRoute, now: float) -> SimBatch:
        batch = self.batches.get(org, route.object_id or "", now)
        if batch is None:
            raise _Refusal(404, f"No batch found with id '{route.object_id}'.", param="id")
        return batch

    def _paged(
        self, query: Mapping[str, str], action: str, items: list[Any], ids: list[str]
    ) -> tuple[list[Any], bool]:
        default, most = _LIST_LIMITS[action]
        try:
            limit = int(query.get("limit", default))
        except ValueError:
            limit = 0
        if not 1 <= limit <= most:
            message = f"Invalid 'limit': it must be between 1 and {most:,}."
            raise _Refusal(400, message, "invalid_value", "limit")
        return _page(items, ids, query.get("after"), limit)

    async def _upload_file(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        for name, value in (("purpose", purpose), ("file", upload)):
            if value is None:
                message = f"Missing required parameter: '{name}'."
                raise _Refusal(400, message, "missing_required_parameter", name)
        if purpose != "batch":
            message = f"Invalid 'purpose': {purpose!r}; this simulator stores 'batch' files only."
            raise _Refusal(400, message, "invalid_value", "purpose")
        if not isinstance(upload, web.FileField):
            raise _Refusal(400, "Invalid 'file': expected a file upload.", "invalid_type", "file")
        if not upload.filename.endswith(".jsonl"):
            message = "Invalid file format for Batch API. Must be .jsonl"
            raise _Refusal(400, message, "invalid_file_format", "file")
        content = upload.file.read()
        try:
            requests = parse_batch_file(content, self._settings)
        except BatchFileError as exc:
            raise _Refusal(400, exc.message, exc.code, exc.param) from exc
        stored = self.files.add(
            org, upload.filename, "batch", content, created_at=int(now), batch_input=requests
        )
        self._stats.files_uploaded += 1
        self._stats.bytes_uploaded += len(content)
        self._stats.lines_uploaded += len(requests.lines)
        return stored.as_object()

    async def _create_batch(
        self, request: web.Request, route: BatchRoute, org: str, now: float
    ) -> dict[str, Any]:
        try:
            payload = await request.json()
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            raise _Refusal(400, bodies.NOT_JSON_BODY["error"]["message"])
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in payload:
                message = f"Missing required parameter: '{name}'."
                raise _Refusal(400, message, "missing_required_parameter", name)
        checks = (
            ("endpoint", payload["endpoint"] in BATCH_ENDPOINTS, ", ".join(BATCH_ENDPOINTS)),
            ("completion_window", payload["completion_window"] == "24h", "'24h'"),
        )
        for name, valid, allowed in checks:
            if not valid:
                message = f"Invalid value for '{name}': {payload[name]!r}; supported: {allowed}."
                raise _Refusal(400, message, "invalid_value", name)
        metadata = _metadata(payload.get("metadata"))
        input_file = self.files.get(org, str(payload["input_file_id"]))
        if input_file is None:
            message = f"No such File object: {payload['input_file_id']}"
            raise _Refusal(404, message, param="input_file_id")
        if input_file.batch_input is None:
            message = "Invalid 'input_file_id': the file's purpose must be 'batch'."
            raise _Refusal(400, message, "invalid_value", "input_file_id")
        batch = self.batches.create(org, input_file, payload["endpoint"], metadata, now)
        self._stats.batches_created += 1
        return batch.as_object(now)
