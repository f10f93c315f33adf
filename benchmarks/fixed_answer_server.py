"""A loopback HTTP server that answers every POST at once with the same chat completion.

The end-to-end benchmarks measure the client's CPU, so the server must cost the client
nothing and answer faster than any client asks: it runs in its own process (started by
:func:`fixed_answer_server`), speaks just enough HTTP/1.1 (keep-alive, ``Content-Length``
bodies) over a bare ``asyncio.Protocol``, and sends one prepared answer: a 200 chat completion
with the ``x-ratelimit-*`` headers the real API sends, showing limits so large they never
bind (RPM 10^9, TPM 10^12, nearly all remaining), so a client that reads them has them to read.

Run alone: ``python benchmarks/fixed_answer_server.py`` prints ``PORT <n>`` and serves on
127.0.0.1 until its standard input closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

ANSWER = json.dumps(
    {
        "id": "chatcmpl-fixed",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Fixed answer.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 3, "total_tokens": 63},
    }
).encode()
HEADERS = {
    "Content-Type": "application/json",
    "x-ratelimit-limit-requests": "1000000000",
    "x-ratelimit-remaining-requests": "999999999",
    "x-ratelimit-reset-requests": "1ms",
    "x-ratelimit-limit-tokens": "1000000000000",
    "x-ratelimit-remaining-tokens": "999999999000",
    "x-ratelimit-reset-tokens": "1ms",
    "x-request-id": "req_fixed",
}
SCRIPT = str(Path(__file__).resolve())
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    + b"".join(f"{name}: {value}\r\n".encode() for name, value in HEADERS.items())
    + f"Content-Length: {len(ANSWER)}\r\n\r\n".encode()
    + ANSWER
)


class FixedAnswer(asyncio.Protocol):
    """One connection: reads requests one after another and answers each with RESPONSE."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def __repr__(self) -> str:
        return f"FixedAnswer(buffered={len(self.buffer)})"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer on."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Answer every complete request in the buffer."""
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still arriving
            del self.buffer[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(RESPONSE)
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return


async def serve() -> None:
    """Serve on a free loopback port until standard input closes."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedAnswer, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # returns at end of file: the parent is done
    server.close()


@asynccontextmanager
async def fixed_answer_server() -> AsyncIterator[str]:
    """Start the server in its own process; yield its base URL (``http://127.0.0.1:N/v1``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()


if __name__ == "__main__":
    asyncio.run(serve())
