"""A free TCP port on 127.0.0.1, for the servers the tests and benchmarks start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a port nothing listens on now (the kernel's choice; it may be taken later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
