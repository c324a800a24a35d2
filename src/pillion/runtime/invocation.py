"""Service invocation: the local app, sidecars on this host, sidecars on other hosts.

A call for another app id goes to that app's sidecar over its internal HTTP
listener, carrying the caller's app id; the receiving sidecar enforces access
control and calls its app. The caller gets the app's status, headers and body as
they are; infrastructure failures get Dapr's ``ERR_DIRECT_INVOKE``.

Resiliency (daprd's rules): a policy targeting the callee app id wraps the whole call;
an answer outside 200-399 counts as a failure (retried when the policy's matching
allows) and is still returned as it is when no retry is left. Without a policy a
refused connection to another sidecar is retried by the built-in policy (3 times,
1 s apart; ``DaprBuiltInServiceRetries`` overrides it).
"""

from __future__ import annotations

import logging
import posixpath
import re
from urllib.parse import quote, urlsplit

from ..errors import DaprError
from ..server.client import ClientError, ClientResponse, ConnectError, HttpClientPool
from ..server.http import Request, Response
from .acl import AccessControl
from .app_channel import AppChannel, AppUnavailable
from .nameresolution import Resolver, RoundRobin
from .resiliency import AttemptTimeout, BreakerOpen, Clock, Failure, Resiliencies

log = logging.getLogger("pillion.runtime.invoke")

CALLER_HEADER = b"dapr-caller-app-id"
CALLEE_HEADER = b"dapr-callee-app-id"
# A verb the HTTP/1.1 hop between sidecars cannot carry (gRPC's NONE, when InvokeService has no
# http_extension) crosses it as a POST naming the verb in this header; the callee restores it.
VERB_HEADER = b"dapr-pillion-verb"
_HOP_VERBS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"))
_VERB = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP method is a token (RFC 9110 5.6.2)

# Never forwarded: hop-by-hop headers (RFC 9110 §7.6.1), framing we recompute, and Dapr's own.
_DROP_REQUEST = frozenset(
    (
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
        b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length", b"expect",
        b"dapr-app-id", b"dapr-api-token", CALLER_HEADER, CALLEE_HEADER, VERB_HEADER,
    )
)
_DROP_RESPONSE = frozenset(
    (
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"content-length", b"date",
    )
)
_DROP_HEAD = _DROP_RESPONSE - {b"content-length"}
_BAD_METHOD = re.compile(r"[#?\x00-\x1f\x7f]")
_SAFE = "/:@!$&'()*+,;=-._~"
# Most method names need neither cleaning nor quoting: no dot segments, no empty ones.
_PLAIN_METHOD = re.compile(r"[A-Za-z0-9_\-~]+(?:/[A-Za-z0-9_\-~]+)*/?")


def forwardable(headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """``headers`` without ``drop`` and without what a ``Connection`` header names."""
    kept = []
    named = None
    for key, value in headers:
        lower = key.lower()
        if lower == b"connection":
            named = {n.strip().lower() for n in value.split(b",")} | (named or set())
        elif lower not in drop:
            kept.append((key, value))
    if named:
        kept = [(k, v) for k, v in kept if k.lower() not in named]
    return kept


def to_response(resp: ClientResponse, verb: str) -> Response:
    """The app's answer as it is; a HEAD answer keeps the app's Content-Length."""
    return Response(resp.status, resp.body, forwardable(resp.headers, _DROP_HEAD if verb == "HEAD" else _DROP_RESPONSE))


def method_target(method: str, query: str) -> str:
    """The request-target the app sees: a clean absolute path plus the caller's raw query."""
    if _PLAIN_METHOD.fullmatch(method):
        return f"/{method}?{query}" if query else "/" + method
    if _BAD_METHOD.search(method):
        raise DaprError("ERR_DIRECT_INVOKE", f"invalid method name: {method!r}")
    path = posixpath.normpath("/" + method) if method else "/"
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if method.endswith("/") and path != "/":
        path += "/"
    target = quote(path, safe=_SAFE)
    return f"{target}?{query}" if query else target


class Invoker:
    def __init__(
        self,
        app_id: str,
        app: AppChannel | None,
        pool: HttpClientPool,
        resolver: Resolver,
        acl: AccessControl,
        http_endpoints: dict[str, str] | None = None,
        resiliency: Resiliencies | None = None,
        clock: Clock | None = None,
    ):
        self.app_id = app_id
        self.app = app
        self.pool = pool
        self.resolver = resolver
        self.acl = acl
        self.http_endpoints = http_endpoints or {}
        self.resiliency = resiliency or Resiliencies((), app_id)
        self.clock = clock or Clock()
        self._spread = RoundRobin()

    def _fail(self, target: str, cause: str, status: int | None = None) -> DaprError:
        return DaprError("ERR_DIRECT_INVOKE", f"failed to invoke, id: {target}, err: {cause}", status)

    async def invoke(self, target: str, method: str, request: Request) -> Response:
        path = method_target(method, request.query)
        headers = forwardable(request.headers, _DROP_REQUEST)
        verb, body = request.method, request.body
        base = None if target == self.app_id else (
            self.http_endpoints.get(target) or (target if "://" in target else None))
        app_id = target
        if target != self.app_id and base is None and "." in target:
            app_id, _, namespace = target.partition(".")
            if "." in namespace:
                raise self._fail(target, "invalid app id: more than one dot")

        policy = self.resiliency.app(app_id)
        if policy is None:
            return await self._send(target, app_id, base, verb, path, headers, body, True)

        async def attempt() -> Response:
            response = await self._send(target, app_id, base, verb, path, headers, body, False)
            if not 200 <= response.status < 400:
                raise Failure(response.status, response)
            return response

        try:
            return await policy.run(attempt)
        except Failure as exc:
            return exc.result  # the app's own answer, once no retry is left
        except AttemptTimeout:
            raise self._fail(target, "context deadline exceeded") from None
        except BreakerOpen as exc:
            raise self._fail(target, str(exc)) from None

    async def call_app(self, target, verb, path, headers, body) -> Response:
        if self.app is None:
            raise self._fail(target, "app channel is not initialized")
        try:
            return to_response(await self.app.call(verb, path, headers, body), verb)
        except AppUnavailable as exc:
            raise self._fail(target, str(exc)) from None
        except ClientError as exc:
            raise self._fail(target, str(exc)) from None

    def _send(self, target, app_id, base, verb, path, headers, body, builtin_retries: bool):
        """One attempt: to our app, to an HTTP endpoint, or to the sidecar of ``app_id``."""
        if target == self.app_id:
            return self.call_app(target, verb, path, headers, body)
        if base is not None:
            return self._call_url(target, base, verb, path, headers, body)
        return self._call_sidecar(app_id, verb, path, headers, body, builtin_retries)

    async def _call_sidecar(self, target, verb, path, headers, body, builtin_retries: bool) -> Response:
        """``builtin_retries``: no policy targets the app, so daprd's built-in retries apply to refused connections."""
        addresses = self.resolver.resolve(target)
        if not addresses:
            raise self._fail(target, f"couldn't find service: {target}")
        headers = headers + [(CALLER_HEADER, self.app_id.encode()), (CALLEE_HEADER, target.encode())]
        hop_verb = verb
        if verb not in _HOP_VERBS:
            headers.append((VERB_HEADER, verb.encode("latin-1")))
            hop_verb = "POST"
        retry = 0
        while True:
            last: ClientError | None = None
            for host, port in self._spread.pick(addresses):
                try:
                    return to_response(await self.pool.request(host, port, hop_verb, path, headers, body), verb)
                except ConnectError as exc:
                    last = exc
                    self.resolver.forget(target)
                except ClientError as exc:
                    raise self._fail(target, str(exc)) from None
            retry += 1
            delay = self.resiliency.service_retry().delay(retry) if builtin_retries else None
            if delay is None:
                raise self._fail(target, str(last))
            log.debug("invoke %s: no sidecar answered (%s); built-in retry %d in %gs", target, last, retry, delay)
            await self.clock.sleep(delay)
            addresses = self.resolver.resolve(target) or addresses

    async def _call_url(self, target, base, verb, path, headers, body) -> Response:
        url = urlsplit(base)
        if url.scheme != "http" or not url.hostname:
            raise self._fail(target, f"unsupported endpoint URL {base!r}: only http:// is supported")
        prefix = url.path.rstrip("/")
        try:
            resp = await self.pool.request(url.hostname, url.port or 80, verb, prefix + path, headers, body)
        except ClientError as exc:
            raise self._fail(target, str(exc)) from None
        return to_response(resp, verb)

    async def serve_internal(self, request: Request) -> Response:
        """Handler of the internal listener: a call from another sidecar for our app."""
        caller = (request.header(CALLER_HEADER) or b"").decode("latin-1")
        callee = (request.header(CALLEE_HEADER) or b"").decode("latin-1")
        if callee != self.app_id:
            raise self._fail(callee, f"app id {callee!r} is not served here (this is {self.app_id!r})", 404)
        if not caller:
            raise DaprError("ERR_DIRECT_INVOKE", "missing caller app id", 400)
        verb = request.method
        if request.method == "POST" and request.header(VERB_HEADER):
            verb = request.header(VERB_HEADER).decode("latin-1")
            if not _VERB.fullmatch(verb):  # it goes into the request line to the app
                raise DaprError("ERR_DIRECT_INVOKE", f"invalid verb {verb!r}", 400)
        if not self.acl.allowed(caller, verb, request.path):
            raise self._fail(
                callee,
                f"access control policy has denied access to appid: {caller} operation: {request.path} verb: {verb}",
                403,
            )
        target = request.path + ("?" + request.query if request.query else "")
        headers = [(k, v) for k, v in forwardable(request.headers, _DROP_REQUEST)]
        headers += [(CALLER_HEADER, caller.encode()), (CALLEE_HEADER, callee.encode())]
        return await self.call_app(callee, verb, target, headers, request.body)
