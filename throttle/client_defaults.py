"""What a :class:`~throttle.Throttle` takes when it is not given: its key and its backend.

The key comes from the environment as the openai SDK reads it; the backend is the one given,
one in Redis (the extra, loaded only then), or one in memory.
"""

from __future__ import annotations

import os

from throttle.backend import LimitBackend
from throttle.errors import ConfigurationError
from throttle.keys import is_azure_url
from throttle.options import ThrottleOptions


def backend_for(options: ThrottleOptions) -> LimitBackend:
    """The backend ``options`` describe: the one given, in Redis, or in memory.

    The Redis extra is loaded only for ``redis_url``.

    Raises:
        ConfigurationError: ``redis_url`` is not a Redis URL, or the extra is missing.
    """
    if options.redis_url is None:
        return options.make_backend()
    try:
        from throttle.redis_backend import RedisBackend  # noqa: PLC0415 - the extra, on demand
    except ImportError as missing:
        raise ConfigurationError(
            f"redis_url needs the redis extra: pip install 'throttle-llm[redis]' ({missing})"
        ) from None
    return RedisBackend.from_url(
        options.redis_url,
        options.limits_for,
        options.admission,
        failure_policy=options.redis_failure_policy,
    )


def api_key_for(base_url: str | None, api_key: str | None) -> str | None:
    """The key to send: the one given, else the environment's (for a ``base_url`` only).

    Raises:
        ConfigurationError: a ``base_url`` and no key, given or in the environment.
    """
    if api_key is not None or base_url is None:
        return api_key
    variable = "AZURE_OPENAI_API_KEY" if is_azure_url(base_url) else "OPENAI_API_KEY"
    found = os.environ.get(variable)
    if found is None:
        raise ConfigurationError(
            f"no API key for {base_url}: pass api_key=... or set {variable} "
            '(api_key="" sends none, for a local server that needs none)'
        )
    return found
