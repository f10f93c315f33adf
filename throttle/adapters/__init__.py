"""Adapters that slide throttle under the clients people already use.

Each lives in its own module and imports its library itself; ``import throttle`` never does.

- :mod:`throttle.adapters.httpx2_transport`: ``ThrottleHttpx2Transport`` (openai 3.x, httpx2).
- :mod:`throttle.adapters.httpx_transport`: ``ThrottleHttpxTransport`` (httpx clients).
- :mod:`throttle.adapters.aiohttp_middleware`: ``throttle_middleware``, ``throttled_session``.
- :mod:`throttle.adapters.openai_sdk`: ``wrap_openai`` (also ``throttle.wrap_openai``).

The rule they share (:mod:`throttle.adapters.exchange`): what the server answered reaches the
caller as a response, after throttle's own retries, error answers marked
``x-should-retry: false`` so the SDK does not retry them again; what throttle refused without
sending (quota breaker open, larger than the bucket, deadline passed, client closed, no
connection after the last attempt) is raised as throttle's own error.
"""
