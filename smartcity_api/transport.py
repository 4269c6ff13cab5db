"""uvicorn's HTTP protocol with the writes of one event-loop turn sent together.

uvicorn writes a response's head and its body with two `transport.write` calls: two send
system calls per response, each made holding the GIL. On loopback at a thousand requests a
second they were a third of the worker's time (py-spy, `--gil`), the head's as costly as
the body's. Here a connection's writes are gathered until the end of the loop turn they
were made in and handed over in one `writelines`, which uvloop sends as one vectored
write. A response whose parts are sent in one turn (every answer from memory) leaves in
one system call; a streamed export still flushes once per turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GatheringTransport:
    """A transport whose writes wait for the end of the loop turn, then leave together."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        chunks, self._pending = self._pending, []
        if chunks and not self._transport.is_closing():
            self._transport.writelines(chunks)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `GatheringTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheringTransport(transport, self.loop))  # type: ignore[arg-type]
