"""The floor below any HTTP proxy: bytes relayed between two sockets, nothing parsed.

Each client connection gets its own upstream connection and every read on one side is written to
the other as it is. What this adds to a request's latency is what one more process and loopback
hop cost on this machine, before any HTTP handling at all.
"""

from __future__ import annotations

import asyncio
from typing import cast


class _Side(asyncio.Protocol):
    """One end of the relay: what it receives is written to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # client bytes that arrive before the upstream connects
        self.connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve(upstream_host: str, upstream_port: int) -> asyncio.Server:
    """Listen on an ephemeral loopback port; each connection is relayed to the upstream."""
    loop = asyncio.get_running_loop()

    def client_side() -> _Side:
        client = _Side()

        async def connect() -> None:
            try:
                _, upstream = await loop.create_connection(_Side, upstream_host, upstream_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            upstream.peer, client.peer = client, upstream
            assert upstream.transport is not None
            for data in client.pending:
                upstream.transport.write(data)
            client.pending.clear()

        client.connecting = loop.create_task(connect())
        return client

    return await loop.create_server(client_side, "127.0.0.1", 0)
