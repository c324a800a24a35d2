"""HttpClientPool against real sockets on 127.0.0.1, on uvloop."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from pillion.errors import PillionError
from pillion.server.client import (
    ClientError,
    ConnectError,
    HttpClientPool,
    ProtocolError,
    ResponseTimeout,
)

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Awaitable[None]) -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(coro, 8))
    finally:
        loop.close()


class Server:
    """A test server: counts accepted connections and records request heads."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.accepts = 0
        self.heads: list[bytes] = []
        self.closed_by_client = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        """One request (head, body), or None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                self.closed_by_client += 1
            return None
        self.heads.append(head)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return head, await reader.readexactly(length)


def response(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


def path_of(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


async def echo_path(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive server answering every request with its path."""
    while (req := await server.read_request(reader)) is not None:
        writer.write(response(path_of(req[0])))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_share_the_root() -> None:
    for cls in (ConnectError, ResponseTimeout, ProtocolError):
        assert issubclass(cls, ClientError)
    assert issubclass(ClientError, PillionError)


def test_keep_alive_reuses_one_connection() -> None:
    async def main() -> None:
        async with Server(echo_path) as srv:
            pool = HttpClientPool()
            first = await pool.request("127.0.0.1", srv.port, "GET", "/a?x=1")
            second = await pool.request("127.0.0.1", srv.port, "GET", "/b")
            assert (first.status, first.reason, first.body) == (200, b"OK", b"/a?x=1")
            assert second.body == b"/b"
            assert srv.accepts == 1
            await pool.close()

    run(main())


def test_request_head_is_framed_by_the_client() -> None:
    async def main() -> None:
        async with Server(echo_path) as srv:
            pool = HttpClientPool()
            headers = [(b"X-Trace", b"abc"), (b"content-length", b"99"), (b"Host", b"evil"),
                       (b"Transfer-Encoding", b"chunked"), (b"Connection", b"close")]
            await pool.request("127.0.0.1", srv.port, "POST", "/p", headers, b"hello")
            await pool.request("127.0.0.1", srv.port, "POST", "/empty")
            await pool.request("127.0.0.1", srv.port, "GET", "/g")
            post, empty, get = srv.heads
            assert post == (b"POST /p HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Trace: abc\r\n"
                            b"Content-Length: 5\r\n\r\n" % srv.port)
            assert b"Content-Length: 0\r\n" in empty
            assert b"content-length" not in get.lower()
            assert srv.accepts == 1
            with pytest.raises(ClientError):
                await pool.request("127.0.0.1", srv.port, "GET", "/a b\r\nX: y")
            await pool.close()

    run(main())


def test_response_headers_keep_case_and_lookup_ignores_it() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(response(b"{}", extra=b"X-App-Id: one\r\nx-app-id: two\r\n"))
        await reader.read()

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            resp = await pool.request("127.0.0.1", srv.port, "GET", "/")
            assert (b"X-App-Id", b"one") in resp.headers
            assert resp.header(b"X-APP-ID") == b"one"
            assert resp.header(b"missing") is None
            await pool.close()

    run(main())


def test_chunked_response() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"6\r\n world\r\n0\r\n\r\n")

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            for _ in range(2):
                resp = await pool.request("127.0.0.1", srv.port, "GET", "/")
                assert resp.body == b"hello world"
            assert srv.accepts == 1
            await pool.close()

    run(main())


def test_read_until_close_response_is_not_reused() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"close")

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            for _ in range(2):
                resp = await pool.request("127.0.0.1", srv.port, "GET", "/")
                assert resp.body == b"until close"
            assert srv.accepts == 2
            await pool.close()

    run(main())


def test_truncated_content_length_body_is_protocol_error() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            with pytest.raises(ProtocolError, match="closed before a complete response"):
                await pool.request("127.0.0.1", srv.port, "GET", "/")
            await pool.close()

    run(main())


def test_head_and_204_have_no_body_and_keep_the_connection() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await server.read_request(reader)) is not None:
            if req[0].startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            elif path_of(req[0]) == b"/nothing":
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(response(b"after"))

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            head = await pool.request("127.0.0.1", srv.port, "HEAD", "/")
            assert (head.status, head.body, head.header(b"content-length")) == (200, b"", b"1234")
            assert (await pool.request("127.0.0.1", srv.port, "GET", "/")).body == b"after"
            empty = await pool.request("127.0.0.1", srv.port, "DELETE", "/nothing")
            assert (empty.status, empty.body) == (204, b"")
            assert (await pool.request("127.0.0.1", srv.port, "GET", "/")).body == b"after"
            assert srv.accepts == 1
            await pool.close()

    run(main())


def test_interim_100_continue_is_skipped() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            writer.write(response(b"final", b"201 Created"))

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            for _ in range(2):
                resp = await pool.request("127.0.0.1", srv.port, "POST", "/", body=b"x")
                assert (resp.status, resp.reason, resp.body) == (201, b"Created", b"final")
            assert srv.accepts == 1
            await pool.close()

    run(main())


@pytest.mark.parametrize("status_line, extra", [
    (b"HTTP/1.1 200 OK", b"Connection: close\r\n"),
    (b"HTTP/1.0 200 OK", b""),
])
def test_connection_close_is_not_reused(status_line: bytes, extra: bytes) -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"%s\r\nContent-Length: 2\r\n%s\r\nok" % (status_line, extra))
        await reader.read()  # the client must hang up

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            for _ in range(2):
                assert (await pool.request("127.0.0.1", srv.port, "GET", "/")).body == b"ok"
            assert srv.accepts == 2
            await pool.close()

    run(main())


async def answer_once_then_drop(server: Server, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
    """Answers the first request; reads the second and closes without a byte, like a
    server whose keep-alive timer fired just as the request arrived."""
    await server.read_request(reader)
    writer.write(response(b"first"))
    await server.read_request(reader)


def test_stale_connection_is_retried_for_get() -> None:
    async def main() -> None:
        async with Server(answer_once_then_drop) as srv:
            pool = HttpClientPool()
            assert (await pool.request("127.0.0.1", srv.port, "GET", "/")).body == b"first"
            assert (await pool.request("127.0.0.1", srv.port, "GET", "/")).body == b"first"
            assert srv.accepts == 2
            await pool.close()

    run(main())


def test_stale_connection_is_not_retried_for_post_after_write() -> None:
    async def main() -> None:
        async with Server(answer_once_then_drop) as srv:
            pool = HttpClientPool()
            await pool.request("127.0.0.1", srv.port, "POST", "/", body=b"1")
            with pytest.raises(ProtocolError, match="closed before a complete response"):
                await pool.request("127.0.0.1", srv.port, "POST", "/", body=b"2")
            assert srv.accepts == 1
            await pool.close()

    run(main())


def test_idle_connection_closed_by_server_leaves_the_pool() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(response(b"bye"))
        await writer.drain()

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            await pool.request("127.0.0.1", srv.port, "POST", "/")
            await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
            assert not pool._idle[("127.0.0.1", srv.port)]
            assert (await pool.request("127.0.0.1", srv.port, "POST", "/")).body == b"bye"
            assert srv.accepts == 2
            await pool.close()

    run(main())


def test_connect_refused_is_connect_error_quickly() -> None:
    async def main() -> None:
        port = free_port()
        pool = HttpClientPool(connect_timeout=2)
        started = time.monotonic()
        with pytest.raises(ConnectError, match=f"127.0.0.1:{port}") as info:
            await pool.request("127.0.0.1", port, "GET", "/")
        assert time.monotonic() - started < 1
        assert "refused" in str(info.value).lower()
        await pool.close()

    run(main())


def test_connect_timeout_is_connect_error() -> None:
    """A listener with a full backlog drops SYNs, so the connect hangs (Linux)."""
    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = [socket.socket() for _ in range(4)]
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            pool = HttpClientPool(connect_timeout=0.2)
            started = time.monotonic()
            try:
                with pytest.raises(ConnectError, match=f"127.0.0.1:{port}.*timed out"):
                    await pool.request("127.0.0.1", port, "GET", "/")
            finally:
                for filler in fillers:
                    filler.close()
            assert time.monotonic() - started < 1
            assert getattr(asyncio.current_task(), "cancelling", lambda: 0)() == 0
            await pool.close()

    run(main())


def test_silent_server_is_response_timeout_and_connection_closed() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await server.read_request(reader)  # returns once the client gives up

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool(read_timeout=30)
            started = time.monotonic()
            with pytest.raises(ResponseTimeout):
                await pool.request("127.0.0.1", srv.port, "GET", "/", timeout=0.2)
            assert 0.15 <= time.monotonic() - started < 1  # uvloop timers have ms resolution
            await asyncio.sleep(0.05)
            assert srv.closed_by_client == 1
            assert not pool._idle.get(("127.0.0.1", srv.port))
            await pool.close()

    run(main())


@pytest.mark.parametrize("reply", [
    b"HELLO THERE\r\n\r\n",
    b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
])
def test_malformed_response_is_protocol_error(reply: bytes) -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(reply)
        await reader.read()

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            with pytest.raises(ProtocolError):
                await pool.request("127.0.0.1", srv.port, "GET", "/")
            await pool.close()

    run(main())


@pytest.mark.parametrize("chunked", [False, True])
def test_response_size_limit_crossed_by_one_byte(chunked: bool) -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await server.read_request(reader)) is not None:
            body = b"x" * int(path_of(req[0])[1:])
            if chunked:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            else:
                writer.write(response(body))

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool(max_response_size=1000)
            assert len((await pool.request("127.0.0.1", srv.port, "GET", "/1000")).body) == 1000
            with pytest.raises(ProtocolError, match="larger than 1000"):
                await pool.request("127.0.0.1", srv.port, "GET", "/1001")
            assert not pool._idle.get(("127.0.0.1", srv.port))
            await pool.close()

    run(main())


def test_response_head_size_limit() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"y" * 5000)
        await reader.read()

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool(max_header_size=4096)
            with pytest.raises(ProtocolError, match="head larger than 4096"):
                await pool.request("127.0.0.1", srv.port, "GET", "/", timeout=2)
            await pool.close()

    run(main())


def test_large_request_body_to_slow_reader() -> None:
    body = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    received: list[bytes] = []

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: %d\r\n" % len(body) in head
        digest = hashlib.sha256()
        left = len(body)
        while left:
            chunk = await reader.read(min(left, 256 * 1024))
            digest.update(chunk)
            left -= len(chunk)
            await asyncio.sleep(0.002)
        received.append(digest.hexdigest().encode())
        writer.write(response(received[0]))

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            resp = await pool.request("127.0.0.1", srv.port, "PUT", "/big", body=body)
            assert resp.body == hashlib.sha256(body).hexdigest().encode()
            await pool.close()

    run(main())


def test_early_response_stops_the_upload_and_drops_the_connection() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response(b"too big", b"413 Content Too Large"))
        await writer.drain()
        await asyncio.sleep(0.2)

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            resp = await pool.request("127.0.0.1", srv.port, "POST", "/", body=b"z" * (32 * 1024 * 1024))
            assert resp.status == 413
            assert not pool._idle.get(("127.0.0.1", srv.port))
            await pool.close()

    run(main())


def test_many_concurrent_requests() -> None:
    async def main() -> None:
        async with Server(echo_path) as srv:
            pool = HttpClientPool()

            async def worker(n: int) -> list[bytes]:
                return [(await pool.request("127.0.0.1", srv.port, "GET", f"/{n}/{i}")).body
                        for i in range(10)]

            results = await asyncio.gather(*(worker(n) for n in range(20)))
            assert results == [[f"/{n}/{i}".encode() for i in range(10)] for n in range(20)]
            assert srv.accepts == 20
            burst = await asyncio.gather(*(pool.request("127.0.0.1", srv.port, "POST", f"/b{i}", body=b"x")
                                           for i in range(200)))
            assert [r.body for r in burst] == [f"/b{i}".encode() for i in range(200)]
            await pool.close()

    run(main())


def test_close_closes_idle_connections() -> None:
    async def main() -> None:
        async with Server(echo_path) as srv:
            pool = HttpClientPool()
            await asyncio.gather(*(pool.request("127.0.0.1", srv.port, "GET", "/") for _ in range(3)))
            await pool.close()
            await asyncio.sleep(0.05)
            assert srv.closed_by_client == srv.accepts == 3
            with pytest.raises(ClientError, match="closed"):
                await pool.request("127.0.0.1", srv.port, "GET", "/")

    run(main())


def test_idle_timeout_closes_connections() -> None:
    async def main() -> None:
        async with Server(echo_path) as srv:
            pool = HttpClientPool(idle_timeout=0.1)
            await pool.request("127.0.0.1", srv.port, "GET", "/")
            await asyncio.sleep(0.25)
            assert srv.closed_by_client == 1
            await pool.request("127.0.0.1", srv.port, "GET", "/")
            assert srv.accepts == 2
            await pool.close()

    run(main())


def test_max_idle_per_host_closes_the_oldest() -> None:
    async def main() -> None:
        async with Server(echo_path) as srv:
            pool = HttpClientPool(max_idle_per_host=2)
            await asyncio.gather(*(pool.request("127.0.0.1", srv.port, "GET", "/") for _ in range(4)))
            await asyncio.sleep(0.05)
            assert srv.closed_by_client == 2
            assert len(pool._idle[("127.0.0.1", srv.port)]) == 2
            await pool.close()

    run(main())


def test_cancelled_request_drops_its_connection() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await server.read_request(reader)

    async def main() -> None:
        async with Server(handler) as srv:
            pool = HttpClientPool()
            task = asyncio.ensure_future(pool.request("127.0.0.1", srv.port, "GET", "/"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)
            assert srv.closed_by_client == 1
            await pool.close()

    run(main())
