"""Writes of one loop turn leave together, in order; closing sends what waits."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from smartcity_api.transport import GatheringTransport


async def _connected() -> tuple[GatheringTransport, socket.socket]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    return GatheringTransport(transport, loop), peer  # type: ignore[arg-type]


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(1 << 16)
    except BlockingIOError:
        return b""


def test_writes_of_one_turn_leave_at_its_end_in_order() -> None:
    async def scenario() -> tuple[bytes, bytes, bytes]:
        gathering, peer = await _connected()
        gathering.write(b"HTTP/1.1 200 OK\r\n\r\n")
        gathering.write(b"")
        gathering.writelines([b"body-", b"end"])
        within_turn = _received(peer)
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        after_turn = _received(peer)
        gathering.write(b"last")
        gathering.close()
        await asyncio.sleep(0.01)
        return within_turn, after_turn, _received(peer)

    within_turn, after_turn, on_close = uvloop.run(scenario())
    assert within_turn == b""
    assert after_turn == b"HTTP/1.1 200 OK\r\n\r\nbody-end"
    assert on_close == b"last"


def test_a_pending_write_counts_in_the_buffer_size_and_abort_drops_it() -> None:
    async def scenario() -> tuple[int, bytes]:
        gathering, peer = await _connected()
        gathering.write(b"12345")
        size = gathering.get_write_buffer_size()
        gathering.abort()
        await asyncio.sleep(0.01)
        return size, _received(peer)

    size, received = uvloop.run(scenario())
    assert (size, received) == (5, b"")
