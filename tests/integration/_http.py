"""Small raw HTTP helpers for tests that need exact bytes on the wire."""

from __future__ import annotations

import http.client
import json
import socket


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.headers, data


def json_request(port, method, path, body=None, headers=None):
    status, hdrs, data = request(port, method, path, body, headers)
    return status, hdrs, (json.loads(data) if data else None)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def error_of(raw: bytes) -> dict:
    return json.loads(raw.partition(b"\r\n\r\n")[2])
