"""``bindings.http``: an output binding that makes one HTTP request per invocation, as Dapr's.

Component metadata: ``url`` (required, ``http://`` only: the outbound client has no
TLS, so MTLS and https are refused at start-up), ``responseTimeout`` (Go duration;
unset means no limit in Dapr, one day here), ``maxResponseBodySize`` (bytes or
``Mi``-style quantity, default 100Mi, <= 0 none; a longer body fails instead of being
cut short as in Dapr), ``securityToken`` + ``securityTokenHeader``, ``errorIfNot2XX``
(default true).

Per request: the operation is the method (``create`` = POST; only POST, PUT and PATCH
send ``data``); metadata ``path`` is appended to the url; ``errorIfNot2XX`` overrides
the component's; every metadata key starting with an ASCII capital is a header (Dapr's
rule), as are ``traceparent``, ``tracestate`` and ``baggage``. Content-Type and Accept
default to ``application/json; charset=utf-8``. Redirects are followed (10 at most),
like Go's client. The response metadata is ``statusCode``, ``status`` ("200 OK") and
every response header under Go's canonical name, repeated values joined by ", ".
"""

from __future__ import annotations

import asyncio
import re
from http import HTTPStatus
from urllib.parse import quote, urljoin, urlsplit

from ...config.durations import parse_duration, parse_quantity
from ...config.manifests import Component
from ...server.client import ClientError, HttpClientPool, ResponseTimeout
from ..registry import Context
from . import BindingError, BindingResponse, MetadataReader, OutputBinding, UnsupportedOperation, is_truthy

DEFAULT_MAX_BODY = 100 << 20
NO_TIMEOUT = 86_400.0  # "no limit" still needs a number for the client's timer
MAX_REDIRECTS = 10
JSON = "application/json; charset=utf-8"
_METHODS = {"create": "POST", "get": "GET", "head": "HEAD", "post": "POST", "put": "PUT",
            "patch": "PATCH", "delete": "DELETE", "options": "OPTIONS", "trace": "TRACE"}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_MTLS = ("mtlsRootCA", "mtlsClientCert", "mtlsClientKey", "mtlsRenegotiation")
# Headers Go's client drops when a redirect leaves the original host.
_SENSITIVE = frozenset({"Authorization", "Www-Authenticate", "Cookie", "Cookie2"})


def canonical_header(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: "content-type" -> "Content-Type"."""
    if not _TOKEN.match(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _target(url: str) -> tuple[str, int, str]:
    """(host, port, request-target) of an http URL; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        raise ValueError(f'unsupported protocol scheme "{parts.scheme}"')
    if not parts.hostname:
        raise ValueError("no Host in request URL")
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~") or "/"
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return parts.hostname, parts.port or 80, path


class HttpBinding(OutputBinding):
    """A ``bindings.http`` component; see the module docstring for its metadata."""

    def __init__(self, component: Component, context: Context):
        reader = MetadataReader(component)
        self.name = component.name
        self.url = reader.get("url") or ""
        if not self.url:
            reader.fail("url", "the http:// URL the binding calls")
        try:
            _target(self.url)
        except ValueError as exc:
            reader.fail("url", f"an http:// URL with a host (https is not supported in this version): {exc}")
        for key in _MTLS:
            if reader.get(key):
                reader.fail(key, "no MTLS settings: bindings.http supports plain http:// only in this version")
        self.timeout = NO_TIMEOUT
        if reader.get("responseTimeout"):
            try:
                self.timeout = parse_duration(reader.get("responseTimeout"))
            except ValueError as exc:
                reader.fail("responseTimeout", f"a Go duration such as 30s or 1m ({exc})")
            if self.timeout <= 0:
                reader.fail("responseTimeout", "a positive Go duration such as 30s")
        max_body = DEFAULT_MAX_BODY
        if reader.get("maxResponseBodySize"):
            text = reader.get("maxResponseBodySize").strip()
            try:
                max_body = int(text) if text.lstrip("-").isdigit() else parse_quantity(text)
            except ValueError as exc:
                reader.fail("maxResponseBodySize", f"a size in bytes or like 100Mi ({exc})")
        if max_body <= 0:
            max_body = 1 << 62
        self.token = reader.get("securityToken") or ""
        self.token_header = reader.get("securityTokenHeader") or ""
        flag = reader.get("errorIfNot2XX") or ""
        self.error_if_not_2xx = is_truthy(flag) if flag else True
        self._pool = HttpClientPool(connect_timeout=15.0, read_timeout=self.timeout, max_response_size=max_body)

    def operations(self) -> list[str]:
        return list(_METHODS)

    async def close(self) -> None:
        await self._pool.close()

    def _headers(self, has_body: bool, metadata: dict[str, str]) -> dict[str, str]:
        """Canonical name -> value, set in Dapr's order so later rules win."""
        headers: dict[str, str] = {}
        if has_body and "Content-Type" not in metadata:
            headers["Content-Type"] = JSON
        if "Accept" not in metadata:
            headers["Accept"] = JSON
        if self.token and self.token_header:
            headers[canonical_header(self.token_header)] = self.token
        for key, value in metadata.items():
            if key[:1].isascii() and key[:1].isupper():
                headers[canonical_header(key)] = value
        for key in ("traceparent", "tracestate", "baggage"):
            if metadata.get(key):
                headers[canonical_header(key)] = metadata[key]
        for key, value in headers.items():
            if not _TOKEN.match(key):
                raise BindingError(f'net/http: invalid header field name "{key}"')
            if _BAD_VALUE.search(value):
                raise BindingError(f'net/http: invalid header field value for "{key}"')
        return headers

    async def invoke(self, operation: str, data: bytes, metadata: dict[str, str]) -> BindingResponse:
        method = _METHODS.get(operation.lower())
        if method is None:
            raise UnsupportedOperation(f"invalid operation: {operation}")
        url = self.url
        if metadata.get("path"):
            url = url.rstrip("/") + "/" + metadata["path"].lstrip("/")
        error_if_not_2xx = self.error_if_not_2xx
        if metadata.get("errorIfNot2XX"):
            error_if_not_2xx = is_truthy(metadata["errorIfNot2XX"])
        body = data if method in _BODY_METHODS else b""
        headers = self._headers(method in _BODY_METHODS, metadata)
        response = await self._send(method, url, headers, body)

        out: dict[str, str] = {}
        for name, value in response.headers:
            key = canonical_header(name.decode("latin-1"))
            if key == "Transfer-Encoding":
                continue
            text = value.decode("latin-1")
            out[key] = f"{out[key]}, {text}" if key in out else text
        reason = response.reason.decode("latin-1").strip()
        if not reason:
            try:
                reason = HTTPStatus(response.status).phrase
            except ValueError:
                reason = ""
        out["statusCode"] = str(response.status)
        out["status"] = f"{response.status} {reason}".rstrip()
        if error_if_not_2xx and response.status // 100 != 2:
            raise BindingError(f"received status code {response.status}", out)
        return BindingResponse(response.body, out)

    async def _send(self, method: str, url: str, headers: dict[str, str], body: bytes):
        """One request plus the redirects Go's client would follow, all within the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        op = method[:1] + method[1:].lower()
        first_host = urlsplit(url).hostname
        for _ in range(MAX_REDIRECTS):  # Go stops at the 10th redirect response
            try:
                host, port, target = _target(url)
            except ValueError as exc:
                raise BindingError(f'{op} "{url}": {exc}') from None
            if host != first_host:
                headers = {k: v for k, v in headers.items() if k not in _SENSITIVE}
            wire = [(k.encode(), v.encode()) for k, v in headers.items()]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BindingError(f'{op} "{url}": context deadline exceeded')
            try:
                response = await self._pool.request(host, port, method, target, wire, body, timeout=remaining)
            except ResponseTimeout:
                raise BindingError(f'{op} "{url}": context deadline exceeded') from None
            except ClientError as exc:
                raise BindingError(f'{op} "{url}": {exc}') from None
            location = response.header(b"location")
            if response.status not in (301, 302, 303, 307, 308) or location is None:
                return response
            url = urljoin(url, location.decode("latin-1"))
            if response.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, body = "GET", b""
                headers = {k: v for k, v in headers.items() if k != "Content-Type"}
            op = method[:1] + method[1:].lower()
        raise BindingError(f'{op} "{url}": stopped after {MAX_REDIRECTS} redirects')
