"""From a parsed request to a handler: API token, routing, the invocation fallback."""

from __future__ import annotations

import base64
from _operator import _compare_digest as compare_digest  # hmac.compare_digest, without loading OpenSSL

from ..errors import DaprError
from ..server.http import Request, Response
from ..server.router import Router
from . import Endpoint

_NO_APP_ID = "failed getting app id either from the URL path or the header dapr-app-id"
_INVALID_TOKEN = Response(401, b"invalid api token", [(b"Content-Type", b"text/plain; charset=utf-8")])


def target_from_headers(request: Request) -> str | None:
    """The app id of the ``dapr-app-id`` header, or of Basic auth ``dapr-app-id:<id>``."""
    app_id = request.header(b"dapr-app-id")
    if app_id:
        return app_id.decode("latin-1")
    auth = request.header(b"authorization")
    if auth and auth[:6].lower() == b"basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip(), validate=True).partition(b":")
        except ValueError:
            return None
        if user == b"dapr-app-id" and password:
            return password.decode("utf-8", "replace")
    return None


class Dispatcher:
    def __init__(self, sidecar, endpoints: tuple[Endpoint, ...], api_token: str | None, fallback=None):
        self.sidecar = sidecar
        self.router = Router([(ep.methods, ep.route, ep) for ep in endpoints])
        self.token = api_token.encode() if api_token else None
        self.fallback = fallback

    def __call__(self, request: Request):
        endpoint, params, allow = self.router.match(request.method, request.path)
        if self.token is not None and not (endpoint is not None and endpoint.public):
            given = request.header(b"dapr-api-token")
            if given is None or not compare_digest(given, self.token):
                return _INVALID_TOKEN
        if endpoint is None:
            app_id = target_from_headers(request)
            if app_id is not None and self.fallback is not None:
                return self.fallback(self.sidecar, request, app_id)
            if allow:
                raise DaprError(
                    "ERR_METHOD_NOT_ALLOWED",
                    f"method {request.method} is not allowed for {request.path}; allowed: {', '.join(allow)}",
                ).with_headers([(b"Allow", ", ".join(allow).encode())])
            raise DaprError("ERR_DIRECT_INVOKE", _NO_APP_ID, status=404)
        request.params = params
        request.endpoint = endpoint
        return endpoint.handler(self.sidecar, request)
