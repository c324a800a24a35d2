"""``bindings.http`` against a small asyncio HTTP/1.1 server started in each test."""

from __future__ import annotations

import asyncio
import json

import pytest
import uvloop

from pillion.components.bindings import BindingError, UnsupportedOperation
from pillion.components.bindings.http import HttpBinding, canonical_header
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError


def component(**metadata: str) -> Component:
    return Component(
        name="web", namespace=None, type="bindings.http", version="v1",
        metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(),
        init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/res/http.yaml", 1),
    )


class Server:
    """Records each request as (method, target, headers with lower-case names, body)."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.port = 0

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._server.close()

    async def _serve(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, target, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, target, headers, body))
                writer.write(await self._respond(method, target, headers, body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _respond(self, method, target, headers, body) -> bytes:
        path = target.split("?")[0].removeprefix("/api")
        status, extra, payload = "200 OK", [], json.dumps({"method": method, "target": target}).encode()
        if path == "/missing":
            status, payload = "404 Not Found", b"nope"
        elif path == "/slow":
            await asyncio.sleep(1)
        elif path == "/redirect-302":
            status, extra, payload = "302 Found", ["Location: /final"], b""
        elif path == "/redirect-307":
            status, extra, payload = "307 Temporary Redirect", [f"Location: http://127.0.0.1:{self.port}/final"], b""
        elif path == "/loop":
            status, extra, payload = "302 Found", ["Location: /loop"], b""
        elif path == "/multi":
            extra = ["x-custom: a", "X-Custom: b", "set-cookie: k=v"]
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(payload)}", "Content-Type: application/json", *extra]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else payload)


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def exchange(calls, **meta):
    """Start a server, build the binding with ``url`` pointing at it, run ``calls(binding, server)``."""

    async def main():
        async with Server() as server:
            binding = HttpBinding(component(url=f"http://127.0.0.1:{server.port}/api/", **meta), None)
            try:
                return await calls(binding, server), server
            finally:
                await binding.close()

    return run(main())


def test_post_with_path_headers_and_response_metadata():
    async def calls(b, server):
        return await b.invoke("post", b'{"a":1}', {"path": "/items?x=1", "X-Token": "t", "lower": "no",
                                                   "traceparent": "00-abc-def-01"})

    resp, server = exchange(calls)
    method, target, headers, body = server.requests[0]
    assert (method, target, body) == ("POST", "/api/items?x=1", b'{"a":1}')
    assert headers["x-token"] == "t"
    assert "lower" not in headers and "path" not in headers
    assert headers["traceparent"] == "00-abc-def-01"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["accept"] == "application/json; charset=utf-8"
    assert json.loads(resp.data) == {"method": "POST", "target": "/api/items?x=1"}
    assert resp.metadata["statusCode"] == "200"
    assert resp.metadata["status"] == "200 OK"
    assert resp.metadata["Content-Type"] == "application/json"


def test_operations_map_to_methods_and_only_some_send_a_body():
    async def calls(b, server):
        out = []
        for op in ("create", "get", "head", "put", "patch", "delete", "options", "trace"):
            out.append((op, await b.invoke(op, b"payload", {"Content-Type": "text/plain"})))
        return out

    results, server = exchange(calls)
    sent = [(m, body, h.get("content-type")) for m, _, h, body in server.requests]
    # Metadata starting with a capital is a header whatever the method, as in Dapr.
    assert sent == [("POST", b"payload", "text/plain"), ("GET", b"", "text/plain"), ("HEAD", b"", "text/plain"),
                    ("PUT", b"payload", "text/plain"), ("PATCH", b"payload", "text/plain"),
                    ("DELETE", b"", "text/plain"), ("OPTIONS", b"", "text/plain"), ("TRACE", b"", "text/plain")]
    assert dict(results)["head"].data == b""
    assert HttpBinding(component(url="http://h"), None).operations() == [
        "create", "get", "head", "post", "put", "patch", "delete", "options", "trace"]


def test_repeated_response_headers_are_joined_under_the_canonical_name():
    async def calls(b, server):
        return await b.invoke("get", b"", {"path": "multi"})

    resp, _ = exchange(calls)
    assert resp.metadata["X-Custom"] == "a, b"
    assert resp.metadata["Set-Cookie"] == "k=v"


def test_non_2xx_is_an_error_carrying_the_metadata_unless_disabled():
    async def calls(b, server):
        with pytest.raises(BindingError) as info:
            await b.invoke("get", b"", {"path": "missing"})
        ok = await b.invoke("get", b"", {"path": "missing", "errorIfNot2XX": "false"})
        return info.value, ok

    (error, ok), _ = exchange(calls)
    assert error.message == "received status code 404"
    assert error.metadata["statusCode"] == "404" and error.metadata["status"] == "404 Not Found"
    assert ok.data == b"nope" and ok.metadata["statusCode"] == "404"

    async def component_level(b, server):
        return await b.invoke("get", b"", {"path": "missing"})

    resp, _ = exchange(component_level, errorIfNot2XX="no")
    assert resp.metadata["statusCode"] == "404"


def test_response_timeout():
    async def calls(b, server):
        with pytest.raises(BindingError, match=r'^Get "http://127\.0\.0\.1:\d+/api/slow": context deadline exceeded$'):
            await b.invoke("get", b"", {"path": "slow"})

    exchange(calls, responseTimeout="100ms")


def test_redirects_are_followed_like_go():
    async def calls(b, server):
        r302 = await b.invoke("post", b"body", {"path": "redirect-302"})
        r307 = await b.invoke("post", b"body", {"path": "redirect-307"})
        with pytest.raises(BindingError, match="stopped after 10 redirects"):
            await b.invoke("get", b"", {"path": "loop"})
        return r302, r307

    (r302, r307), server = exchange(calls)
    assert json.loads(r302.data) == {"method": "GET", "target": "/final"}
    assert json.loads(r307.data) == {"method": "POST", "target": "/final"}
    assert server.requests[1][3] == b"" and server.requests[3][3] == b"body"
    assert len(server.requests) == 4 + 10


def test_security_token_and_header_injection():
    async def calls(b, server):
        await b.invoke("get", b"", {})
        with pytest.raises(BindingError, match="invalid header field value"):
            await b.invoke("get", b"", {"X-Evil": "a\r\nInjected: 1"})
        with pytest.raises(UnsupportedOperation, match="invalid operation: connect"):
            await b.invoke("connect", b"", {})

    _, server = exchange(calls, securityToken="s3cret", securityTokenHeader="x-api-key")
    assert server.requests[0][2]["x-api-key"] == "s3cret"
    assert "content-type" not in server.requests[0][2]  # GET: no default Content-Type
    assert len(server.requests) == 1


def test_connection_refused_is_a_binding_error():
    async def main():
        binding = HttpBinding(component(url="http://127.0.0.1:1"), None)
        try:
            await binding.invoke("get", b"", {})
        finally:
            await binding.close()

    with pytest.raises(BindingError, match=r'^Get "http://127\.0\.0\.1:1": connect to 127\.0\.0\.1:1 failed'):
        run(main())


@pytest.mark.parametrize("meta, field", [
    ({}, "spec.metadata"),
    ({"url": "https://example.com"}, "spec.metadata[0].url"),
    ({"url": "example.com/x"}, "spec.metadata[0].url"),
    ({"url": "http://h", "responseTimeout": "10"}, "spec.metadata[1].responseTimeout"),
    ({"url": "http://h", "maxResponseBodySize": "lots"}, "spec.metadata[1].maxResponseBodySize"),
    ({"url": "http://h", "MTLSRootCA": "/ca.pem"}, "spec.metadata[1].MTLSRootCA"),
])
def test_bad_metadata(meta, field):
    with pytest.raises(ConfigError) as info:
        HttpBinding(component(**meta), None)
    assert info.value.field == field


def test_canonical_header():
    assert canonical_header("content-type") == "Content-Type"
    assert canonical_header("X-API-KEY") == "X-Api-Key"
    assert canonical_header("bad header") == "bad header"
