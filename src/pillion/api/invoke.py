"""Service invocation: ``/v1.0/invoke/{id}/method/{method...}`` for every verb, and the
``dapr-app-id`` header form (the dispatcher's fallback for unmatched paths)."""

from __future__ import annotations

from urllib.parse import unquote

from . import Endpoint


def invoke(sidecar, request):
    return sidecar.invoker.invoke(request.params["id"], request.params["method"], request)


def invoke_by_header(sidecar, request, app_id: str):
    return sidecar.invoker.invoke(app_id, unquote(request.path.lstrip("/")), request)


ENDPOINTS = (Endpoint(None, "/v1.0/invoke/{id}/method/{method...}", "InvokeService", "invoke", invoke),)
