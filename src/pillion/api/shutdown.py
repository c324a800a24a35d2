"""``POST /v1.0/shutdown``: answer 204, then drain and stop."""

from __future__ import annotations

from ..server.http import NO_CONTENT
from . import Endpoint


def request(sidecar) -> None:
    """Both fronts: the sidecar drains and stops after answering."""
    sidecar.request_shutdown("shutdown API called")


def shutdown(sidecar, http_request):
    request(sidecar)
    return NO_CONTENT


ENDPOINTS = (Endpoint(("POST",), "/v1.0/shutdown", "Shutdown", "shutdown", shutdown),)
