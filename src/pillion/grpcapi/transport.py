"""gRPC over the sans-IO HTTP/2 of ``h2``, on the sidecar's uvloop: the asyncio edge.

Each HTTP/2 stream is one call: the request's messages (length-prefixed, uncompressed) go
to the RPC's handler, its answers go back as DATA and the status as trailers. A call whose
stream the client resets, or whose connection drops, is cancelled; one past its
``grpc-timeout`` ends DEADLINE_EXCEEDED.

The per-connection protocol is a twin: ``pillion._ext.grpcproto`` when built, else its pure
specification ``pillion._pure.grpcproto`` (see ext/README.md). The listening sockets and the
shutdown drain are here.
"""

from __future__ import annotations

import asyncio

from pillion._impl import load

_grpcproto = load("grpcproto")
Rpc = _grpcproto.Rpc
Context = _grpcproto.Context
GrpcProtocol = _grpcproto.GrpcProtocol

__all__ = ["Context", "GrpcProtocol", "GrpcServer", "Rpc"]


class GrpcServer:
    """Listening sockets for ``rpcs`` (``b"/package.Service/Method"`` -> Rpc); ``shutdown`` drains them."""

    def __init__(self, rpcs: dict[bytes, Rpc], max_message: int):
        self.rpcs = rpcs
        self.max_message = max_message
        self.connections: set[GrpcProtocol] = set()
        self.servers: list[asyncio.AbstractServer] = []

    async def listen(self, address: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: GrpcProtocol(self.rpcs, self.max_message, self.connections),
                                          address, port)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            connection.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.calls for c in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        tasks = [call.task for connection in self.connections for call in connection.calls.values()
                 if call.task is not None]
        for task in tasks:  # each ends its call UNAVAILABLE before the connection goes
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        for server in self.servers:
            await server.wait_closed()
