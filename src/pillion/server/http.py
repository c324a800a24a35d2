"""Request and response objects shared by the server, the dispatcher and the API.

Headers stay as the ``(name, value)`` byte pairs httptools delivered, in order and
in their original case, so that service invocation can pass them on unchanged.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson

from ..errors import DaprError, render

Headers = list[tuple[bytes, bytes]]

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"

STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


class Request:
    """One parsed HTTP request; ``params`` are filled by the router."""

    __slots__ = ("method", "path", "query", "headers", "body", "params", "keep_alive", "endpoint")

    def __init__(self, method: str, path: str, query: str, headers: Headers, body: bytes, keep_alive: bool):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.params: dict[str, str] = {}
        self.endpoint = None

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (give it lower-case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def query_params(self) -> list[tuple[str, str]]:
        from urllib.parse import parse_qsl

        return parse_qsl(self.query, keep_blank_values=True)

    def metadata(self) -> dict[str, str]:
        """``metadata.<k>`` query parameters as component metadata (first value wins)."""
        out: dict[str, str] = {}
        for key, value in self.query_params():
            if key.startswith("metadata.") and key[9:] not in out:
                out[key[9:]] = value
        return out

    def json(self):
        """The body as JSON, or ERR_MALFORMED_REQUEST naming the parse problem."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise DaprError("ERR_MALFORMED_REQUEST", f"failed deserializing HTTP body: {exc}") from None


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
    def raw_json(cls, body: bytes, status: int = 200) -> "Response":
        return cls(status, body, [(b"Content-Type", _JSON)])

    @classmethod
    def text(cls, text: str, status: int = 200) -> "Response":
        return cls(status, text.encode(), [(b"Content-Type", _TEXT)])

    @classmethod
    def error(cls, err: DaprError) -> "Response":
        return cls(err.status, render(err.code, err.message), [(b"Content-Type", _JSON), *err.headers])


NO_CONTENT = Response(204)
