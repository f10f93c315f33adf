"""What the simulated API accepts: its routes, and the fields each endpoint requires.

The real API answers 404 to a path it does not serve and 400 to a body missing a required
field, before any rate limit is charged. A simulator that answered every path and every body
would let a typo in a URL, or a request without ``messages``, pass locally and fail in
production; this module is the check that stops them here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# (method, path after /v1/ or after the Azure deployment) -> the endpoint's kind
_OPENAI = {
    ("POST", "chat/completions"): "chat",
    ("POST", "completions"): "completions",
    ("POST", "embeddings"): "embeddings",
    ("POST", "responses"): "responses",
    ("POST", "audio/transcriptions"): "audio",
    ("POST", "audio/translations"): "audio",
    ("GET", "models"): "models",
}
_AZURE_DEPLOYMENT = {
    key: kind for key, kind in _OPENAI.items() if kind not in ("responses", "models")
}
# The JSON fields each kind needs, with the type the real server insists on.
_TEXT = (str, list)
_REQUIRED: Mapping[str, tuple[tuple[str, tuple[type[object], ...]], ...]] = {
    "chat": (("messages", (list,)),),
    "completions": (("prompt", _TEXT),),
    "embeddings": (("input", _TEXT),),
    "responses": (("input", _TEXT),),
}
# The Files and Batch APIs: (method, path after /v1/ with ``*`` for the id) -> action.
_BATCH_ACTIONS = {
    ("POST", "files"): "upload_file",
    ("GET", "files"): "list_files",
    ("GET", "files/*"): "retrieve_file",
    ("DELETE", "files/*"): "delete_file",
    ("GET", "files/*/content"): "file_content",
    ("POST", "batches"): "create_batch",
    ("GET", "batches"): "list_batches",
    ("GET", "batches/*"): "retrieve_batch",
    ("POST", "batches/*/cancel"): "cancel_batch",
}
_TYPE_NAMES: Mapping[type[object], str] = {
    list: "an array",
    str: "a string",
    dict: "an object",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
}


@dataclass(frozen=True, slots=True)
class Route:
    """An endpoint the simulator serves.

    Attributes:
        kind: ``"chat"``, ``"completions"``, ``"embeddings"``, ``"responses"``, ``"audio"``
            or ``"models"``.
        deployment: the Azure deployment named in the path (it names the model), else ``None``.
    """

    kind: str
    deployment: str | None = None

    @property
    def azure(self) -> bool:
        """Whether the request came by an Azure deployment URL (Azure-style 429s)."""
        return self.deployment is not None


@dataclass(frozen=True, slots=True)
class BatchRoute:
    """A Files or Batch API endpoint the simulator serves.

    Attributes:
        action: what is asked, e.g. ``"upload_file"`` or ``"cancel_batch"``.
        object_id: the file or batch the path names, else ``None``.
        endpoint: the endpoint without the id, e.g. ``"POST /v1/batches/{id}/cancel"``.
    """

    action: str
    object_id: str | None
    endpoint: str


def resolve_batch_route(method: str, path: str) -> BatchRoute | None:
    """Return the Files or Batch API endpoint ``method`` and ``path`` reach, or ``None``.

    Args:
        method: the HTTP method.
        path: the URL path without its query string, e.g. ``/v1/batches/batch_1/cancel``.

    Returns:
        The route, or ``None`` when the path is no Files or Batch API endpoint.
    """
    parts = path.split("/")
    if parts[:2] != ["", "v1"] or len(parts) < 3 or parts[2] not in ("files", "batches"):
        return None
    rest = parts[2:]
    object_id = rest[1] if len(rest) > 1 and rest[1] else None
    shape = "/".join([rest[0], "*", *rest[2:]]) if len(rest) > 1 else rest[0]
    action = _BATCH_ACTIONS.get((method, shape))
    if action is None or (len(rest) > 1 and object_id is None):
        return None
    return BatchRoute(action, object_id, f"{method} /v1/{shape.replace('*', '{id}')}")


def resolve_route(method: str, path: str) -> Route | None:
    """Return the endpoint ``method`` and ``path`` reach, or ``None`` (the real API's 404).

    Args:
        method: the HTTP method.
        path: the URL path without its query string, e.g. ``/v1/chat/completions`` or
            ``/openai/deployments/NAME/embeddings``.

    Returns:
        The route, or ``None`` when the real server would answer 404.
    """
    parts = path.split("/")
    if parts[:2] == ["", "v1"]:
        kind = _OPENAI.get((method, "/".join(parts[2:])))
        return Route(kind) if kind else None
    if parts[:3] == ["", "openai", "deployments"] and len(parts) > 4 and parts[3]:
        kind = _AZURE_DEPLOYMENT.get((method, "/".join(parts[4:])))
        return Route(kind, parts[3]) if kind else None
    return None


def body_problem(route: Route, payload: object) -> tuple[str, str | None, str | None] | None:
    """Return why the real server would refuse ``payload`` with a 400, or ``None``.

    Args:
        route: the endpoint the body was sent to (JSON endpoints only).
        payload: the decoded JSON body.

    Returns:
        ``(message, param, code)`` of the 400 ``invalid_request_error``, or ``None`` when the
        body has everything the endpoint needs.
    """
    if not isinstance(payload, dict):
        return "The request body must be a JSON object.", None, None
    if not route.azure and not isinstance(payload.get("model"), str):
        # The real server's wording for this one field, param and code null.
        return "you must provide a model parameter", None, None
    for name, expected in _REQUIRED.get(route.kind, ()):
        value = payload.get(name)
        if value is None:
            return f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
        if not isinstance(value, expected):
            wanted = " or ".join(_TYPE_NAMES[t] for t in expected)
            got = _TYPE_NAMES.get(type(value), "another type")
            message = f"Invalid type for '{name}': expected {wanted}, but got {got} instead."
            return message, name, "invalid_type"
    return None
