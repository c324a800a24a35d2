"""Sidecar health: ``/v1.0/healthz`` (everything ready) and ``/healthz/outbound`` (API up)."""

from __future__ import annotations

from ..errors import DaprError
from ..server.http import NO_CONTENT
from . import Endpoint


def healthz(sidecar, request):
    if request.query:
        for key, value in request.query_params():
            if key == "appid" and value != sidecar.app_id:
                raise DaprError("ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match")
    if not sidecar.ready:
        raise DaprError("ERR_HEALTH_NOT_READY", f"dapr is not ready: [{' '.join(sidecar.not_ready())}]")
    return NO_CONTENT


def healthz_outbound(sidecar, request):
    if not sidecar.outbound_ready:
        raise DaprError("ERR_OUTBOUND_HEALTH_NOT_READY", "dapr outbound is not ready")
    return NO_CONTENT


ENDPOINTS = (
    Endpoint(("GET",), "/v1.0/healthz", "Healthz", "healthz", healthz, public=True),
    Endpoint(("GET",), "/v1.0/healthz/outbound", "HealthzOutbound", "healthz", healthz_outbound, public=True),
)
