"""Service invocation: ``/v1.0/invoke/{id}/method/{method...}`` for every verb, and the
``dapr-app-id`` header form (the dispatcher's fallback for unmatched paths)."""

from __future__ import annotations

from urllib.parse import unquote

from ..server.http import Request
from . import Endpoint


def invoke(sidecar, request):
    return sidecar.invoker.invoke(request.params["id"], request.params["method"], request)


def invoke_by_header(sidecar, request, app_id: str):
    return sidecar.invoker.invoke(app_id, unquote(request.path.lstrip("/")), request)


def call(sidecar, app_id: str, method: str, verb: str, query: str, headers: list[tuple[bytes, bytes]], body: bytes):
    """Invoke ``method`` on ``app_id`` as an HTTP request to this sidecar would (the gRPC front's way in)."""
    return sidecar.invoker.invoke(app_id, method, Request(verb, "/" + method, query, headers, body, True))


ENDPOINTS = (Endpoint(None, "/v1.0/invoke/{id}/method/{method...}", "InvokeService", "invoke", invoke),)
