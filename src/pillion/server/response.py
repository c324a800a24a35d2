"""Responses: what handlers return and the protocol writes."""

from __future__ import annotations

from http import HTTPStatus

import orjson

from ..errors import DaprError, render

Headers = list[tuple[bytes, bytes]]

_JSON = b"application/json"

STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int = 200, body: bytes = b"", headers: Headers | None = None):
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []

    @classmethod
    def json(cls, value, status: int = 200, headers: Headers | None = None) -> "Response":
        h = [(b"Content-Type", _JSON)]
        if headers:
            h.extend(headers)
        return cls(status, orjson.dumps(value), h)

    @classmethod
    def error(cls, err: DaprError) -> "Response":
        return cls(err.status, render(err.code, err.message), [(b"Content-Type", _JSON), *err.headers])


NO_CONTENT = Response(204)
