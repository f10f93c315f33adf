"""Which bucket a request draws from: a credential identity and a model or shared group."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from throttle.errors import ConfigurationError


@dataclass(frozen=True, slots=True, order=True)
class BucketKey:
    """Names one pair of requests/tokens buckets.

    Attributes:
        identity: whose limits these are: a hash of the API key, or a name the user chose
            (all keys of one project share that project's limits). Never the key itself.
        group: the model, or the shared-limit group the model belongs to.
    """

    identity: str
    group: str
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A key is looked up in several dicts per request: hash its two strings once.
        object.__setattr__(self, "_hash", hash((self.identity, self.group)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[BucketKey], tuple[str, str]]:
        return BucketKey, (self.identity, self.group)  # hashed afresh where it is unpickled

    def __str__(self) -> str:
        return f"{self.identity}/{self.group}"


_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/?#]+)")


def azure_deployment(url: str) -> str | None:
    """Return the deployment an Azure OpenAI URL names (its bucket), or ``None``."""
    match = _AZURE_DEPLOYMENT.search(url)
    return match.group(1) if match else None


def is_azure_url(url: str) -> bool:
    """Whether ``url`` is Azure OpenAI's (its host, or a deployment path): ``api-key`` auth."""
    return ".openai.azure.com" in url or azure_deployment(url) is not None


def credential_identity(api_key: str) -> str:
    """Return a stable, non-reversible name for an API key (``key-`` + 12 hex digits).

    Args:
        api_key: the secret key.

    Returns:
        An identity safe to log and to use as a Redis key.
    """
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


class GroupMap:
    """Maps model names to shared-limit groups; unmatched models are their own group.

    Args:
        groups: model name or glob pattern (``gpt-4o*``) to group name. Exact names win over
            patterns; among patterns the first listed wins.

    Raises:
        ConfigurationError: a name or group is empty.
    """

    def __init__(self, groups: Mapping[str, str] | None = None) -> None:
        self._exact: dict[str, str] = {}
        self._patterns: list[tuple[str, str]] = []
        for pattern, group in (groups or {}).items():
            if not pattern or not group:
                raise ConfigurationError(f"empty model pattern or group in {pattern!r}: {group!r}")
            if any(ch in pattern for ch in "*?["):
                self._patterns.append((pattern, group))
            else:
                self._exact[pattern] = group

    def __repr__(self) -> str:
        return f"GroupMap(exact={self._exact}, patterns={self._patterns})"

    def group_of(self, model: str) -> str:
        """Return the group ``model`` draws from."""
        if model in self._exact:
            return self._exact[model]
        for pattern, group in self._patterns:
            if fnmatchcase(model, pattern):
                return group
        return model
